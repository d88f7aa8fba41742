//! The beam's bookkeeping, shared by both disk searches (round-based and
//! pipelined) and the build-time warm-up that ranks hot nodes: a candidate
//! pool of at most L ordered by PQ distance (ties by id), the set of nodes
//! already scored, and the choice of the next W unexpanded candidates (or,
//! pipelined, of the next one). Whoever drives it decides how a batch is
//! expanded (records from the SSD, or an in-memory adjacency); the order of
//! expansion is the same either way, which is what makes the warm-up's counts
//! the disk search's.

use rustc_hash::FxHashSet;

use crate::format::codes::Codes;
use crate::pq::LookupTable;
use crate::vamana::{Candidate, insert_candidate};

/// One query's beam: reused across queries by one thread.
#[derive(Default)]
pub(crate) struct Beam {
    pool: Vec<Candidate>,
    seen: FxHashSet<u32>,
    list_size: usize,
    width: usize,
    /// The unseen neighbours of the record being expanded.
    fresh: Vec<u32>,
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

    /// Marks the best unexpanded candidate expanded (the pipelined search:
    /// picked for a read) and returns its pool position, id and distance.
    pub(crate) fn pick(&mut self) -> Option<(usize, u32, f32)> {
        let pos = self.pool.iter().position(|c| !c.expanded)?;
        let c = &mut self.pool[pos];
        c.expanded = true;
        Some((pos, c.id, c.distance))
    }

    /// Whether `(distance, id)` is still among the best L.
    pub(crate) fn holds(&self, distance: f32, id: u32) -> bool {
        let pos = self.pool.partition_point(|c| (c.distance, c.id) < (distance, id));
        self.pool.get(pos).is_some_and(|c| c.id == id)
    }

    /// The L-th best distance, or infinity while fewer than L are held.
    pub(crate) fn worst(&self) -> f32 {
        if self.pool.len() == self.list_size {
            self.pool[self.list_size - 1].distance
        } else {
            f32::INFINITY
        }
    }

    /// Scores every unseen node of `neighbors` by PQ into the pool; returns
    /// how many were scored. Every unseen neighbour's code is prefetched
    /// before the first is scored: the codes are scattered (debian-384 at
    /// L 60: PQ scoring about 390 -> 180 us a query).
    pub(crate) fn score_neighbors(
        &mut self,
        neighbors: impl Iterator<Item = u32>,
        table: &LookupTable,
        codes: &Codes,
    ) -> u64 {
        self.fresh.clear();
        for n in neighbors {
            if self.seen.insert(n) {
                crate::distance::prefetch(codes.row(n), 1);
                self.fresh.push(n);
            }
        }
        for &n in &self.fresh {
            insert_candidate(&mut self.pool, self.list_size, n, table.distance(codes.row(n)));
        }
        self.fresh.len() as u64
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
