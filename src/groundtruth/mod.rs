//! `basalt gt`: exact k nearest neighbours by brute force.
//!
//! The base is streamed in blocks of at most [`BASE_BLOCK_BYTES`] (so a base
//! larger than RAM works); each block meets the queries in a GEMM
//! (`matrixmultiply::sgemm`: inner products of a chunk of queries with the
//! block), which is how exact search reaches BLAS speed. L2 uses
//! `|x|^2 - 2 q.x` (the `|q|^2` term does not change the order). Each query
//! keeps `k + RECHECK_EXTRA` candidates; at the end those are re-scored with
//! the exact distance kernel and sorted by (distance, id), so GEMM rounding
//! never decides a rank and ties go to the smaller id.

use rayon::prelude::*;

use crate::distance::{Distance, DistanceElement, Metric, normalize};
use crate::element::Element;
use crate::topk::TopK;
use crate::vecfile::{GroundTruth, VecFileError, VectorFile};

/// Bytes of one base block converted to f32.
pub const BASE_BLOCK_BYTES: usize = 64 << 20;
/// Queries per GEMM task.
const QUERY_CHUNK: usize = 64;
/// Extra candidates kept per query to absorb GEMM rounding before the exact re-check.
const RECHECK_EXTRA: usize = 16;
/// Largest k.
pub const K_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum GtError {
    #[error(transparent)]
    File(#[from] VecFileError),
    #[error("{0}")]
    Params(String),
}

/// Exact k-NN of every query in `queries` among `base`. `progress` gets the
/// number of base rows processed so far.
pub fn exact_knn(
    base: &VectorFile,
    queries: &VectorFile,
    k: usize,
    metric: Metric,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GroundTruth, GtError> {
    let block_rows = (BASE_BLOCK_BYTES / (base.dim().max(1) * 4)).max(1);
    exact_knn_blocked(base, queries, k, metric, block_rows, progress)
}

/// [`exact_knn`] with an explicit base block size in rows.
pub fn exact_knn_blocked(
    base: &VectorFile,
    queries: &VectorFile,
    k: usize,
    metric: Metric,
    block_rows: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GroundTruth, GtError> {
    if base.dim() != queries.dim() {
        return Err(GtError::Params(format!(
            "base {} has dimension {} but queries {} have {}",
            base.path().display(),
            base.dim(),
            queries.path().display(),
            queries.dim()
        )));
    }
    if base.element_type() != queries.element_type() {
        return Err(GtError::Params(format!(
            "base holds {} but queries hold {}",
            base.element_type(),
            queries.element_type()
        )));
    }
    if k == 0 || k > K_MAX {
        return Err(GtError::Params(format!("k = {k} is outside 1..={K_MAX} (K_MAX)")));
    }
    if (k as u64) > base.len() {
        return Err(GtError::Params(format!(
            "k = {k} exceeds the {} rows of the base",
            base.len()
        )));
    }
    let block_rows = block_rows.max(1);
    crate::with_element!(base.element_type(), T => {
        exact_knn_typed::<T>(base, queries, k, metric, block_rows, progress)
    })
}

fn exact_knn_typed<T: DistanceElement>(
    base: &VectorFile,
    queries: &VectorFile,
    k: usize,
    metric: Metric,
    block_rows: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<GroundTruth, GtError> {
    let dim = base.dim();
    let nq = queries.len() as usize;
    let mut q = Vec::new();
    // Non-finite values or norms that would overflow a distance are refused
    // (named by file, row and column) before any work.
    queries.read_rows_f32_checked(0, nq, &mut q)?;
    if metric == Metric::Cosine {
        q.chunks_exact_mut(dim).for_each(normalize);
    }
    let keep = k + RECHECK_EXTRA;
    let mut tops: Vec<TopK> = (0..nq).map(|_| TopK::new(keep)).collect();
    let mut x = Vec::new();
    let mut start = 0u64;
    while start < base.len() {
        let rows = ((base.len() - start) as usize).min(block_rows);
        base.read_rows_f32_checked(start, rows, &mut x)?;
        if metric == Metric::Cosine {
            x.par_chunks_mut(dim).for_each(normalize);
        }
        let norms: Vec<f32> = match metric {
            Metric::L2 => x.par_chunks(dim).map(|r| r.iter().map(|v| v * v).sum()).collect(),
            _ => Vec::new(),
        };
        let first = start as u32;
        q.par_chunks(QUERY_CHUNK * dim)
            .zip(tops.par_chunks_mut(QUERY_CHUNK))
            .for_each(|(qc, tc)| score_block(qc, &x, &norms, dim, metric, first, tc));
        start += rows as u64;
        progress(start);
    }
    // Exact re-check of the candidates with the distance kernel on the
    // original element type.
    let dist = Distance::<T>::new(metric);
    let mut qt: Vec<T> = Vec::new();
    queries.read_rows::<T>(0, nq, &mut qt)?;
    let rows: Vec<Result<Vec<(u32, f32)>, VecFileError>> = tops
        .into_par_iter()
        .enumerate()
        .map(|(i, top)| {
            let qv = &qt[i * dim..(i + 1) * dim];
            let mut best = TopK::new(k);
            let mut row: Vec<T> = Vec::with_capacity(dim);
            for cand in top.into_sorted() {
                base.read_rows::<T>(cand.id as u64, 1, &mut row)?;
                best.push(dist.eval(qv, &row), cand.id);
            }
            Ok(best
                .into_sorted()
                .into_iter()
                .map(|n| (n.id, metric.score_from_distance(n.distance)))
                .collect())
        })
        .collect();
    let mut ids = Vec::with_capacity(nq * k);
    let mut scores = Vec::with_capacity(nq * k);
    for r in rows {
        for (id, s) in r? {
            ids.push(id);
            scores.push(s);
        }
    }
    Ok(GroundTruth { n: nq, k, ids, scores: Some(scores) })
}

/// Scores one chunk of queries against one base block and updates their top-k.
fn score_block(
    qc: &[f32],
    x: &[f32],
    norms: &[f32],
    dim: usize,
    metric: Metric,
    first: u32,
    tops: &mut [TopK],
) {
    thread_local! {
        // Reused across blocks: a fresh multi-megabyte buffer per task costs
        // more in page faults than the GEMM saves.
        static DOTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    DOTS.with_borrow_mut(|dots| score_block_with(qc, x, norms, dim, metric, first, tops, dots));
}

#[allow(clippy::too_many_arguments)]
fn score_block_with(
    qc: &[f32],
    x: &[f32],
    norms: &[f32],
    dim: usize,
    metric: Metric,
    first: u32,
    tops: &mut [TopK],
    dots: &mut Vec<f32>,
) {
    let m = qc.len() / dim;
    let n = x.len() / dim;
    dots.resize(m * n, 0.0);
    gemm_abt(qc, x, m, n, dim, dots);
    for (i, top) in tops.iter_mut().enumerate() {
        let row = &dots[i * n..(i + 1) * n];
        let mut threshold = top.threshold();
        for (j, &dot) in row.iter().enumerate() {
            let d = match metric {
                Metric::L2 => norms[j] - 2.0 * dot,
                _ => -dot,
            };
            if d <= threshold {
                top.push(d, first + j as u32);
                threshold = top.threshold();
            }
        }
    }
}

/// `c (m x n) = a (m x k) * b (n x k)^T`, all row-major.
#[allow(unsafe_code, reason = "matrixmultiply::sgemm takes raw pointers and strides")]
fn gemm_abt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    assert!(a.len() == m * k && b.len() == n * k && c.len() == m * n, "gemm shapes");
    // SAFETY: the assert above proves every index the strides reach is in
    // bounds: a is m x k (row stride k), b^T is k x n read from row-major b
    // (row stride 1, column stride k), c is m x n (row stride n); c does not
    // alias a or b (it is a distinct &mut).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// The ground truth computed the slow, obvious way: every query against every
/// base row with the scalar reference kernels. The test oracle for
/// [`exact_knn`].
pub fn brute_force_scalar<T: Element + DistanceElement>(
    base: &[T],
    queries: &[T],
    dim: usize,
    k: usize,
    metric: Metric,
) -> Vec<Vec<(u32, f32)>> {
    let dist = Distance::<T>::at_level(metric, crate::distance::SimdLevel::Scalar);
    queries
        .chunks_exact(dim)
        .map(|q| {
            let mut all: Vec<(f32, u32)> = base
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, x)| (dist.eval(q, x), i as u32))
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            all.truncate(k);
            all.into_iter().map(|(d, i)| (i, d)).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests;
