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
pub(crate) use search::{Candidate, insert_candidate};
pub use search::{GreedySearch, VisitedSet};

use parking_lot::Mutex;

use crate::distance::{Distance, DistanceElement};

/// Largest out-degree R.
pub const DEGREE_MAX: usize = 512;
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

    /// Nodes no path from the medoid reaches (a search can never return them).
    pub fn unreachable_from_medoid(&self) -> u64 {
        let mut seen = vec![false; self.len()];
        let mut stack = vec![self.medoid];
        seen[self.medoid as usize] = true;
        let mut reached = 1u64;
        while let Some(id) = stack.pop() {
            self.with_neighbors(id, |nb| {
                for &n in nb {
                    if !seen[n as usize] {
                        seen[n as usize] = true;
                        reached += 1;
                        stack.push(n);
                    }
                }
            });
        }
        self.len() as u64 - reached
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
