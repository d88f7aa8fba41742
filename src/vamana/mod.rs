//! Vamana: the graph every query walks, built in memory.
//!
//! `build` inserts every point in a seeded random order, twice (alpha = 1,
//! then the configured alpha, as in the DiskANN paper): a greedy search from
//! the medoid collects the visited nodes, RobustPrune picks at most R
//! out-neighbours among them, and back edges are added to each chosen
//! neighbour, re-pruned when its list passes `R * SLACK`. A final sweep
//! prunes every list to at most R, the invariant the disk layout relies on.
//!
//! Concurrency: rayon over points, one `parking_lot::Mutex` per adjacency
//! list, locks held only to copy or replace a list (never across distance
//! computations). With one thread and a seed the graph is identical run to
//! run; with more threads the insertion interleaving varies, so graphs differ
//! in detail (quality does not).

mod build;
mod prune;
mod search;

pub use build::{BuildParams, BuildProgress, build, build_with_norm};
pub use prune::{PruneRule, PruneScratch, robust_prune_by};
pub(crate) use search::{Candidate, insert_candidate};
pub use search::{GreedySearch, VisitedSet};

use parking_lot::Mutex;

use crate::distance::{Distance, DistanceElement};

/// Largest out-degree R.
pub const DEGREE_MAX: usize = 512;
/// Smallest out-degree R a build accepts: sparser graphs strand nodes and
/// recall collapses (measured on 5,000 x 32 synthetic vectors: R = 4 left 117
/// nodes unreachable from the medoid, R = 2 left 4,971; on 20,000 x 96 in 8
/// clusters even R = 8 left 31 before the build's reconnection pass).
pub const DEGREE_MIN: usize = 8;
/// Largest search list size L (build or query).
pub const SEARCH_LIST_MAX: usize = 4096;
/// Lists may grow to `R * SLACK` through back edges before they are re-pruned.
pub const SLACK: f32 = 1.3;
/// Most candidates RobustPrune considers (the nearest ones are kept).
pub const PRUNE_CANDIDATES_MAX: usize = 750;

/// An in-memory Vamana graph over borrowed vectors.
pub struct Graph<'a, T: DistanceElement> {
    pub(crate) data: &'a [T],
    pub(crate) dim: usize,
    /// The metric queries use (smaller is nearer).
    pub(crate) query_dist: Distance<T>,
    /// Squared L2, the metric the graph is built with.
    pub(crate) l2: Distance<T>,
    /// For inner product only: the extra coordinate `sqrt(M^2 - |x|^2)` of
    /// the MIPS-to-L2 reduction (Bachrach et al. 2014), so that L2 between
    /// augmented points orders neighbours as inner product does for a query
    /// `[q, 0]`. Empty for l2 and cosine (cosine data is normalised).
    pub(crate) aug: Vec<f32>,
    pub(crate) adj: Vec<Mutex<Vec<u32>>>,
    pub(crate) medoid: u32,
    pub(crate) degree_max: usize,
}

impl<'a, T: DistanceElement> Graph<'a, T> {
    pub fn len(&self) -> usize {
        self.adj.len()
    }
    pub fn is_empty(&self) -> bool {
        self.adj.is_empty()
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn medoid(&self) -> u32 {
        self.medoid
    }
    pub fn degree_max(&self) -> usize {
        self.degree_max
    }
    #[inline]
    pub fn vector(&self, id: u32) -> &'a [T] {
        let i = id as usize * self.dim;
        &self.data[i..i + self.dim]
    }
    /// The build distance between two nodes: squared L2, on augmented
    /// vectors for inner product.
    #[inline]
    pub fn node_distance(&self, a: u32, b: u32) -> f32 {
        let d = self.l2.eval(self.vector(a), self.vector(b));
        if self.aug.is_empty() {
            d
        } else {
            let e = self.aug[a as usize] - self.aug[b as usize];
            d + e * e
        }
    }

    /// A copy of `id`'s out-neighbours.
    pub fn neighbors(&self, id: u32) -> Vec<u32> {
        self.adj[id as usize].lock().clone()
    }
    /// Calls `f` with `id`'s out-neighbours under its lock.
    pub fn with_neighbors<R>(&self, id: u32, f: impl FnOnce(&[u32]) -> R) -> R {
        f(&self.adj[id as usize].lock())
    }

    /// The exact k nearest found by a greedy search with list size `l`
    /// (the in-memory reference search, used by tests and the builder).
    pub fn search(
        &self,
        query: &[T],
        l: usize,
        k: usize,
        visited: &mut VisitedSet,
    ) -> Vec<(u32, f32)> {
        let mut s = GreedySearch::new(l);
        s.run(self, |id| self.query_dist.eval(query, self.vector(id)), visited);
        s.best(k)
    }

    /// Marks in `seen` every node reachable from `from` through unmarked
    /// nodes; returns how many it marked.
    fn mark_reachable(&self, from: u32, seen: &mut [bool]) -> u64 {
        if seen[from as usize] {
            return 0;
        }
        seen[from as usize] = true;
        let mut stack = vec![from];
        let mut marked = 1u64;
        while let Some(id) = stack.pop() {
            self.with_neighbors(id, |nb| {
                for &n in nb {
                    if !seen[n as usize] {
                        seen[n as usize] = true;
                        marked += 1;
                        stack.push(n);
                    }
                }
            });
        }
        marked
    }

    /// Nodes no path from the medoid reaches (a search can never return them).
    pub fn unreachable_from_medoid(&self) -> u64 {
        let mut seen = vec![false; self.len()];
        self.len() as u64 - self.mark_reachable(self.medoid, &mut seen)
    }

    /// Gives every node the medoid cannot reach an in-edge from its nearest
    /// reachable node (found by a greedy search from the medoid, which only
    /// ever visits reachable nodes), taking a free slot when that node or one
    /// of the next nearest has one, else replacing the nearest's farthest
    /// neighbour. Rounds repeat (bounded) in case a replaced edge was some
    /// node's only way in. Returns the edges added.
    pub(crate) fn connect_unreachable(&self, list_size: usize) -> u64 {
        const ROUNDS_MAX: usize = 8;
        let n = self.len();
        let mut added = 0u64;
        let mut visited = VisitedSet::new(n);
        let mut search = GreedySearch::new(list_size.max(1));
        for _ in 0..ROUNDS_MAX {
            let mut seen = vec![false; n];
            let reached = self.mark_reachable(self.medoid, &mut seen);
            if reached == n as u64 {
                break;
            }
            for u in 0..n as u32 {
                if seen[u as usize] {
                    continue;
                }
                search.run(self, |id| self.node_distance(u, id), &mut visited);
                let mut near = search.expanded.clone();
                near.retain(|&(id, _)| id != u && seen[id as usize]);
                near.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                let Some(&(nearest, _)) = near.first() else { continue };
                let with_room = near
                    .iter()
                    .find(|&&(id, _)| self.adj[id as usize].lock().len() < self.degree_max);
                match with_room {
                    Some(&(v, _)) => self.adj[v as usize].lock().push(u),
                    None => {
                        let list = self.neighbors(nearest);
                        let far = list
                            .iter()
                            .enumerate()
                            .max_by(|a, b| {
                                self.node_distance(nearest, *a.1)
                                    .total_cmp(&self.node_distance(nearest, *b.1))
                            })
                            .map(|(i, _)| i);
                        let mut adj = self.adj[nearest as usize].lock();
                        match far {
                            Some(i) => adj[i] = u,
                            None => adj.push(u),
                        }
                    }
                }
                added += 1;
                self.mark_reachable(u, &mut seen);
            }
        }
        added
    }

    /// Degree statistics: (min, mean, max).
    pub fn degree_stats(&self) -> (usize, f64, usize) {
        let degs: Vec<usize> = self.adj.iter().map(|a| a.lock().len()).collect();
        let min = degs.iter().copied().min().unwrap_or(0);
        let max = degs.iter().copied().max().unwrap_or(0);
        let mean = degs.iter().sum::<usize>() as f64 / degs.len().max(1) as f64;
        (min, mean, max)
    }
}

#[cfg(test)]
mod tests;
