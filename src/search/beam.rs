//! The beam's bookkeeping, shared by the disk search and the build-time
//! warm-up that ranks hot nodes: a candidate pool of at most L ordered by PQ
//! distance (ties by id), the set of nodes already scored, and the choice of
//! the next W unexpanded candidates. Whoever drives it decides how a batch is
//! expanded (records from the SSD, or an in-memory adjacency); the order of
//! expansion is the same either way, which is what makes the warm-up's counts
//! the disk search's.

use rustc_hash::FxHashSet;

use crate::vamana::{Candidate, insert_candidate};

/// One query's beam: reused across queries by one thread.
#[derive(Default)]
pub(crate) struct Beam {
    pool: Vec<Candidate>,
    seen: FxHashSet<u32>,
    list_size: usize,
    width: usize,
}

impl Beam {
    /// Starts a query from `entry` (already scored at `distance`).
    pub(crate) fn start(&mut self, list_size: usize, width: usize, entry: u32, distance: f32) {
        debug_assert!(list_size >= 1 && width >= 1);
        self.pool.clear();
        self.seen.clear();
        self.list_size = list_size;
        self.width = width;
        self.seen.insert(entry);
        insert_candidate(&mut self.pool, list_size, entry, distance);
    }

    /// Marks the W best unexpanded candidates among the best L expanded and
    /// puts them in `out`; `out` is empty when the best L are all expanded
    /// (the search is over).
    pub(crate) fn next_batch(&mut self, out: &mut Vec<u32>) {
        out.clear();
        for c in self.pool.iter_mut() {
            if !c.expanded {
                c.expanded = true;
                out.push(c.id);
                if out.len() == self.width {
                    break;
                }
            }
        }
    }

    /// Marks `id` seen; returns whether it was new (then the caller scores
    /// it and [`Self::insert`]s it).
    #[inline]
    pub(crate) fn mark_seen(&mut self, id: u32) -> bool {
        self.seen.insert(id)
    }

    /// Puts a node marked seen by [`Self::mark_seen`] into the pool.
    #[inline]
    pub(crate) fn insert(&mut self, id: u32, distance: f32) {
        insert_candidate(&mut self.pool, self.list_size, id, distance);
    }

    /// Offers a neighbour of an expanded node: scored with `distance` and put
    /// in the pool unless it was seen before. Returns whether it was scored.
    #[inline]
    pub(crate) fn offer(&mut self, id: u32, distance: impl FnOnce() -> f32) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        insert_candidate(&mut self.pool, self.list_size, id, distance());
        true
    }
}
