//! The in-memory Vamana build: parameters, medoid, the insertion passes and
//! the final degree cleanup.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::prune::{PruneRule, PruneScratch, robust_prune};
use super::search::{GreedySearch, VisitedSet};
use super::{DEGREE_MAX, DEGREE_MIN, Graph, SEARCH_LIST_MAX, SLACK};
use crate::distance::{Distance, DistanceElement, Metric};

/// Parameters of a Vamana build.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct BuildParams {
    /// Out-degree bound R.
    pub degree_max: usize,
    /// Build search list size L.
    pub list_size: usize,
    /// RobustPrune alpha of the last pass (the first pass uses 1.0).
    pub alpha: f32,
    /// Insertion passes (2 in the paper).
    pub passes: usize,
    /// Fill lists below R with the nearest pruned candidates in the alpha
    /// pass (free on disk: records have R slots).
    pub saturate: bool,
    pub seed: u64,
}

impl Default for BuildParams {
    fn default() -> Self {
        BuildParams {
            degree_max: 64,
            list_size: 100,
            alpha: 1.2,
            passes: 2,
            seed: 1,
            saturate: false,
        }
    }
}

impl BuildParams {
    pub fn validate(&self) -> Result<(), String> {
        if self.degree_max < DEGREE_MIN || self.degree_max > DEGREE_MAX {
            return Err(format!(
                "R = {} is outside {DEGREE_MIN}..={DEGREE_MAX} (DEGREE_MIN, DEGREE_MAX): sparser \
                 graphs strand nodes the search can never reach",
                self.degree_max
            ));
        }
        if self.list_size == 0 || self.list_size > SEARCH_LIST_MAX {
            return Err(format!(
                "L = {} is outside 1..={SEARCH_LIST_MAX} (SEARCH_LIST_MAX)",
                self.list_size
            ));
        }
        if !(self.alpha.is_finite() && (1.0..=4.0).contains(&self.alpha)) {
            return Err(format!("alpha = {} is outside 1.0..=4.0", self.alpha));
        }
        if self.passes == 0 || self.passes > 4 {
            return Err(format!("passes = {} is outside 1..=4", self.passes));
        }
        Ok(())
    }
}

/// Progress callbacks of a build.
pub trait BuildProgress: Sync {
    /// A pass over all points starts.
    fn pass(&self, _pass: usize, _passes: usize) {}
    /// `done` points of the current pass are inserted.
    fn inserted(&self, _done: u64) {}
}

impl BuildProgress for () {}

/// How often (in points) progress is reported.
const PROGRESS_EVERY: u64 = 1024;

/// Builds a Vamana graph over `data` (row-major, `dim` wide) with the
/// current rayon pool. `metric` must be the index metric; cosine data must
/// already be normalised by the caller. For inner product the MIPS
/// augmentation uses M = the largest norm of `data`.
pub fn build<'a, T: DistanceElement>(
    data: &'a [T],
    dim: usize,
    metric: Metric,
    params: &BuildParams,
    progress: &dyn BuildProgress,
) -> Result<Graph<'a, T>, String> {
    build_with_norm(data, dim, metric, None, params, progress)
}

/// [`build`] with the inner-product M given (the index's persisted one);
/// rows longer than M get an extra coordinate of 0 (see `pqspace::Fit`).
pub fn build_with_norm<'a, T: DistanceElement>(
    data: &'a [T],
    dim: usize,
    metric: Metric,
    ip_norm_max: Option<f32>,
    params: &BuildParams,
    progress: &dyn BuildProgress,
) -> Result<Graph<'a, T>, String> {
    params.validate()?;
    if dim == 0 || data.is_empty() || !data.len().is_multiple_of(dim) {
        return Err(format!("no points to build from (len {} dim {dim})", data.len()));
    }
    let n = data.len() / dim;
    if n as u64 > crate::format::NODES_MAX {
        return Err(format!("{n} points exceed the u32 node id space"));
    }
    let aug = if metric == Metric::InnerProduct {
        mips_augmentation(data, dim, ip_norm_max)
    } else {
        Vec::new()
    };
    let mut g = Graph {
        data,
        dim,
        query_dist: Distance::new(metric),
        l2: Distance::new(Metric::L2),
        aug,
        adj: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        medoid: 0,
        degree_max: params.degree_max,
    };
    g.medoid = medoid(data, dim);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(params.seed));
    for pass in 0..params.passes {
        progress.pass(pass, params.passes);
        let last = pass + 1 == params.passes;
        let alpha = if last { params.alpha } else { 1.0 };
        run_pass(&g, &order, alpha, last && params.saturate, params, progress);
    }
    cleanup(&g, params.alpha, params.saturate);
    g.connect_unreachable(params.list_size);
    // An index whose search cannot reach every node is never published.
    let stranded = g.unreachable_from_medoid();
    if stranded > 0 {
        return Err(format!(
            "{stranded} nodes stay unreachable from the medoid after reconnection; \
             rebuild with a larger R (now {})",
            params.degree_max
        ));
    }
    Ok(g)
}

/// Per-thread scratch of the insertion loop.
struct Scratch {
    visited: VisitedSet,
    search: GreedySearch,
    prune: PruneScratch,
    cands: Vec<(u32, f32)>,
    out: Vec<u32>,
}

fn run_pass<T: DistanceElement>(
    g: &Graph<'_, T>,
    order: &[u32],
    alpha: f32,
    saturate: bool,
    params: &BuildParams,
    progress: &dyn BuildProgress,
) {
    let done = AtomicU64::new(0);
    let new_scratch = || Scratch {
        visited: VisitedSet::new(g.len()),
        search: GreedySearch::new(params.list_size),
        prune: PruneScratch::default(),
        cands: Vec::new(),
        out: Vec::new(),
    };
    let step = |s: &mut Scratch, p: u32| {
        insert(g, p, alpha, params.degree_max, saturate, s);
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        if d.is_multiple_of(PROGRESS_EVERY) {
            progress.inserted(d);
        }
    };
    if rayon::current_num_threads() == 1 {
        // Sequential and in order: the deterministic path.
        let mut s = new_scratch();
        order.iter().for_each(|&p| step(&mut s, p));
    } else {
        order.par_iter().with_min_len(64).for_each_init(new_scratch, |s, &p| step(s, p));
    }
    progress.inserted(order.len() as u64);
}

fn insert<T: DistanceElement>(
    g: &Graph<'_, T>,
    p: u32,
    alpha: f32,
    r: usize,
    saturate: bool,
    s: &mut Scratch,
) {
    let rule = PruneRule { alpha, degree_max: r, saturate };
    s.search.run(g, |id| g.node_distance(p, id), &mut s.visited);
    s.cands.clear();
    s.cands.extend_from_slice(&s.search.expanded);
    g.with_neighbors(p, |nb| s.cands.extend(nb.iter().map(|&n| (n, g.node_distance(p, n)))));
    robust_prune(g, p, s.cands.drain(..), rule, &mut s.prune, &mut s.out);
    let chosen = s.out.clone();
    *g.adj[p as usize].lock() = chosen.clone();
    let cap = ((r as f32) * SLACK) as usize;
    for &j in &chosen {
        let copy = {
            let mut list = g.adj[j as usize].lock();
            if list.contains(&p) {
                continue;
            }
            if list.len() < cap {
                list.push(p);
                continue;
            }
            list.clone()
        };
        // Over the slack: re-prune j's list with p added, outside the lock.
        s.cands.clear();
        s.cands.extend(copy.iter().chain(std::iter::once(&p)).map(|&n| (n, g.node_distance(j, n))));
        robust_prune(g, j, s.cands.drain(..), rule, &mut s.prune, &mut s.out);
        *g.adj[j as usize].lock() = s.out.clone();
    }
}

/// Prunes every list longer than R down to R.
fn cleanup<T: DistanceElement>(g: &Graph<'_, T>, alpha: f32, saturate: bool) {
    let r = g.degree_max;
    let rule = PruneRule { alpha, degree_max: r, saturate };
    (0..g.len() as u32).into_par_iter().for_each_init(
        || (PruneScratch::default(), Vec::new(), Vec::new()),
        |(scratch, cands, out), p| {
            let list = g.neighbors(p);
            if list.len() <= r {
                return;
            }
            cands.clear();
            cands.extend(list.iter().map(|&n| (n, g.node_distance(p, n))));
            robust_prune(g, p, cands.drain(..), rule, scratch, out);
            *g.adj[p as usize].lock() = out.clone();
        },
    );
    debug_assert!(g.adj.iter().all(|a| a.lock().len() <= r), "degree bound after cleanup");
}

/// The point nearest the mean: the entry point of every search.
pub fn medoid<T: DistanceElement>(data: &[T], dim: usize) -> u32 {
    let n = data.len() / dim;
    let mut mean = vec![0f64; dim];
    for row in data.chunks_exact(dim) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x.to_f32() as f64;
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (*m / n as f64) as f32).collect();
    let l2 = Distance::<f32>::new(Metric::L2);
    let (best, _) = data
        .par_chunks(dim)
        .enumerate()
        .map_init(
            || vec![0f32; dim],
            |buf, (i, row)| {
                buf.iter_mut().zip(row).for_each(|(b, x)| *b = x.to_f32());
                (i as u32, l2.eval(buf, &mean))
            },
        )
        .reduce(|| (u32::MAX, f32::INFINITY), |a, b| if (b.1, b.0) < (a.1, a.0) { b } else { a });
    best
}

/// `sqrt(M^2 - |x|^2)` per point (0 past M), M given or the largest norm.
fn mips_augmentation<T: DistanceElement>(
    data: &[T],
    dim: usize,
    ip_norm_max: Option<f32>,
) -> Vec<f32> {
    let norms: Vec<f32> = data
        .par_chunks(dim)
        .map(|r| r.iter().map(|x| x.to_f32() * x.to_f32()).sum::<f32>())
        .collect();
    let max_sq = match ip_norm_max {
        Some(m) => m * m,
        None => norms.iter().copied().fold(0.0f32, f32::max),
    };
    norms.iter().map(|n| (max_sq - n).max(0.0).sqrt()).collect()
}
