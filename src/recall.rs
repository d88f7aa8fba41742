//! Recall@k against a ground truth, tie-aware.
//!
//! A returned id is a hit when it is among the true k nearest, or when its
//! true score equals the k-th true score (a tie at the boundary is not a
//! miss). Ties can only be seen past rank k when the ground truth lists more
//! than k neighbours with scores, as `basalt gt` and big-ann-benchmarks do.

use rustc_hash::FxHashSet;

use crate::vecfile::GroundTruth;

#[derive(Debug, thiserror::Error)]
pub enum RecallError {
    #[error("ground truth lists {gt_k} neighbours per query, fewer than k = {k}")]
    GroundTruthTooNarrow { gt_k: usize, k: usize },
    #[error("ground truth has {gt_n} queries, fewer than the {results_n} results")]
    GroundTruthTooShort { gt_n: usize, results_n: usize },
    #[error("k must be at least 1")]
    ZeroK,
    #[error("no queries to score")]
    NoQueries,
}

/// The set of ids that count as hits for query `q` at `k`.
pub fn hit_set(gt: &GroundTruth, q: usize, k: usize) -> FxHashSet<u32> {
    let ids = gt.ids(q);
    let mut set: FxHashSet<u32> = ids[..k].iter().copied().collect();
    if let Some(scores) = gt.scores(q) {
        let kth = scores[k - 1];
        for j in k..gt.k {
            if scores[j] == kth {
                set.insert(ids[j]);
            } else {
                break;
            }
        }
    }
    set
}

/// The id that pads a result row when fewer than k were found; never a hit.
pub const PADDING_ID: u32 = u32::MAX;

/// Recall@k of one query's returned ids (only the first k count; duplicates
/// count once; [`PADDING_ID`] is never a hit, even if a ground truth lists it).
pub fn query_recall(hits: &FxHashSet<u32>, returned: &[u32], k: usize) -> f64 {
    let mut seen = FxHashSet::default();
    let found = returned
        .iter()
        .take(k)
        .filter(|&&id| id != PADDING_ID && hits.contains(&id) && seen.insert(id))
        .count();
    found.min(k) as f64 / k as f64
}

/// Checks that `gt` can score `n` queries at `k`.
pub fn check_ground_truth(gt: &GroundTruth, n: usize, k: usize) -> Result<(), RecallError> {
    if k == 0 {
        return Err(RecallError::ZeroK);
    }
    if gt.k < k {
        return Err(RecallError::GroundTruthTooNarrow { gt_k: gt.k, k });
    }
    if gt.n < n {
        return Err(RecallError::GroundTruthTooShort { gt_n: gt.n, results_n: n });
    }
    Ok(())
}

/// Mean recall@k of `results` (one id list per query) against `gt`.
pub fn mean_recall(gt: &GroundTruth, results: &[Vec<u32>], k: usize) -> Result<f64, RecallError> {
    check_ground_truth(gt, results.len(), k)?;
    if results.is_empty() {
        return Err(RecallError::NoQueries);
    }
    let total: f64 =
        results.iter().enumerate().map(|(q, r)| query_recall(&hit_set(gt, q, k), r, k)).sum();
    Ok(total / results.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt() -> GroundTruth {
        GroundTruth {
            n: 2,
            k: 4,
            ids: vec![1, 2, 3, 4, 10, 20, 30, 40],
            scores: Some(vec![0.1, 0.2, 0.3, 0.3, 1.0, 2.0, 3.0, 4.0]),
        }
    }

    /// Exact matches, a tie past rank k and a plain miss are scored as the docs say.
    #[test]
    fn tie_aware_recall() {
        let g = gt();
        // k=3: id 4 ties with the 3rd true score, so it is a hit.
        assert_eq!(mean_recall(&g, &[vec![1, 2, 4], vec![10, 20, 30]], 3).unwrap(), 1.0);
        // id 99 is a miss, duplicates count once.
        let r = mean_recall(&g, &[vec![1, 1, 99], vec![10, 20, 40]], 3).unwrap();
        assert!((r - (1.0 / 3.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{r}");
        // Only the first k returned ids count.
        assert_eq!(mean_recall(&g, &[vec![9, 9, 9, 1], vec![9, 9, 9, 10]], 3).unwrap(), 0.0);
    }

    /// A ground truth that is too narrow or too short is an error.
    #[test]
    fn insufficient_ground_truth_is_error() {
        let g = gt();
        assert!(mean_recall(&g, &[vec![1]], 5).is_err());
        assert!(mean_recall(&g, &[vec![1], vec![2], vec![3]], 2).is_err());
        assert!(mean_recall(&g, &[vec![1]], 0).is_err());
    }
}
