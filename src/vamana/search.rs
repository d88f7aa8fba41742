//! Greedy search over the in-memory graph: the candidate pool, the visited
//! set, and the loop that expands the nearest unexpanded candidate until the
//! best L are all expanded.

use super::Graph;
use crate::distance::DistanceElement;

/// Marks visited node ids with an epoch counter: clearing is O(1), memory is
/// 4 bytes per node, reused by one thread across searches.
pub struct VisitedSet {
    marks: Vec<u32>,
    epoch: u32,
}

impl VisitedSet {
    pub fn new(n: usize) -> VisitedSet {
        VisitedSet { marks: vec![0; n], epoch: 1 }
    }

    pub fn clear(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// Marks `id`; returns true when it was not yet marked.
    #[inline]
    pub fn insert(&mut self, id: u32) -> bool {
        let m = &mut self.marks[id as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}

/// A search candidate: a node, its distance to the query, and whether it
/// has been expanded (in memory) or read (on disk).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate {
    pub distance: f32,
    pub id: u32,
    pub expanded: bool,
}

/// Inserts an unexpanded candidate into `pool`, kept sorted by (distance, id)
/// and at most `l` long: the candidate list of both the in-memory greedy
/// search and the disk beam search. Returns whether it entered.
#[inline]
pub(crate) fn insert_candidate(
    pool: &mut Vec<Candidate>,
    l: usize,
    id: u32,
    distance: f32,
) -> bool {
    if pool.len() == l {
        let worst = pool[l - 1];
        if (distance, id) >= (worst.distance, worst.id) {
            return false;
        }
    }
    let pos = pool.partition_point(|c| (c.distance, c.id) < (distance, id));
    pool.insert(pos, Candidate { distance, id, expanded: false });
    pool.truncate(l);
    true
}

/// A sorted candidate list of bounded size plus the expanded nodes.
pub struct GreedySearch {
    l: usize,
    pub(crate) pool: Vec<Candidate>,
    /// Every expanded node with its distance, in expansion order.
    pub expanded: Vec<(u32, f32)>,
    /// Distance evaluations of the last run.
    pub distance_count: usize,
}

impl GreedySearch {
    pub fn new(l: usize) -> GreedySearch {
        assert!(l >= 1, "search list size must be at least 1");
        GreedySearch { l, pool: Vec::with_capacity(l + 1), expanded: Vec::new(), distance_count: 0 }
    }

    #[inline]
    pub(crate) fn insert(&mut self, id: u32, distance: f32) -> bool {
        insert_candidate(&mut self.pool, self.l, id, distance)
    }

    /// Runs the search from the graph's medoid; `dist(id)` is the distance
    /// from the query to node `id`.
    pub fn run<T: DistanceElement>(
        &mut self,
        g: &Graph<'_, T>,
        dist: impl Fn(u32) -> f32,
        visited: &mut VisitedSet,
    ) {
        self.pool.clear();
        self.expanded.clear();
        self.distance_count = 0;
        visited.clear();
        let start = g.medoid;
        visited.insert(start);
        let d = dist(start);
        self.distance_count += 1;
        self.insert(start, d);
        let mut nbrs: Vec<u32> = Vec::with_capacity(g.degree_max * 2);
        while let Some(i) = self.pool.iter().position(|c| !c.expanded) {
            self.pool[i].expanded = true;
            let Candidate { id, distance, .. } = self.pool[i];
            self.expanded.push((id, distance));
            nbrs.clear();
            g.with_neighbors(id, |n| nbrs.extend_from_slice(n));
            for &n in &nbrs {
                if visited.insert(n) {
                    let d = dist(n);
                    self.distance_count += 1;
                    self.insert(n, d);
                }
            }
        }
    }

    /// The best k of the pool as (id, distance).
    pub fn best(&self, k: usize) -> Vec<(u32, f32)> {
        self.pool.iter().take(k).map(|c| (c.id, c.distance)).collect()
    }
}
