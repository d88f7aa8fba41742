//! `exact_knn` (blocked GEMM + exact re-check) against a plain scalar brute force.

use super::*;
use crate::synth::{Mixture, STREAM_BASE, STREAM_QUERIES, write_stream};

fn check<T: DistanceElement>(metric: Metric, block_rows: usize) {
    let dir = tempfile::tempdir().unwrap();
    let ext = match T::TYPE {
        crate::element::ElementType::F32 => "fbin",
        crate::element::ElementType::U8 => "u8bin",
        crate::element::ElementType::I8 => "i8bin",
    };
    let (bp, qp) = (dir.path().join(format!("b.{ext}")), dir.path().join(format!("q.{ext}")));
    let dim = 19; // odd, so every kernel tail is exercised
    let m = Mixture::new(dim, 6, 3).unwrap();
    write_stream::<T>(&m, &bp, 2_000, 3, STREAM_BASE, &|_| {}).unwrap();
    write_stream::<T>(&m, &qp, 37, 3, STREAM_QUERIES, &|_| {}).unwrap();
    let (base, queries) = (VectorFile::open(&bp).unwrap(), VectorFile::open(&qp).unwrap());
    let k = 10;
    let got = exact_knn_blocked(&base, &queries, k, metric, block_rows, &|_| {}).unwrap();
    let want = brute_force_scalar(
        &base.read_all::<T>().unwrap(),
        &queries.read_all::<T>().unwrap(),
        dim,
        k,
        metric,
    );
    assert_eq!((got.n, got.k), (37, k));
    for (q, want) in want.iter().enumerate() {
        let ids = got.ids(q);
        let scores = got.scores(q).unwrap();
        for (j, &(wid, wd)) in want.iter().enumerate() {
            let ws = metric.score_from_distance(wd);
            let tol = 1e-4 * ws.abs().max(1.0);
            assert!((scores[j] - ws).abs() <= tol, "{metric} q{q} rank {j}: {} vs {ws}", scores[j]);
            // Ids must agree unless the true distance is tied (within
            // rounding) with a neighbouring rank.
            let tied = want
                .iter()
                .enumerate()
                .any(|(i, &(_, d))| i != j && (metric.score_from_distance(d) - ws).abs() <= tol);
            if !tied {
                assert_eq!(ids[j], wid, "{metric} q{q} rank {j}");
            }
        }
    }
}

/// f32 with every metric, the base in several blocks.
#[test]
fn f32_matches_brute_force_all_metrics() {
    for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
        check::<f32>(metric, 300);
    }
}

/// u8 and i8 match exactly, including ties broken by the smaller id.
#[test]
fn integer_types_match_brute_force() {
    check::<u8>(Metric::L2, 512);
    check::<i8>(Metric::InnerProduct, 2_000);
    check::<u8>(Metric::Cosine, 777);
}

/// Mismatched inputs and bad k are errors, not panics.
#[test]
fn bad_parameters_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = Mixture::new(8, 2, 1).unwrap();
    let m2 = Mixture::new(9, 2, 1).unwrap();
    let (a, b) = (dir.path().join("a.fbin"), dir.path().join("b.fbin"));
    write_stream::<f32>(&m, &a, 50, 1, STREAM_BASE, &|_| {}).unwrap();
    write_stream::<f32>(&m2, &b, 5, 1, STREAM_BASE, &|_| {}).unwrap();
    let (a, b) = (VectorFile::open(&a).unwrap(), VectorFile::open(&b).unwrap());
    assert!(
        exact_knn(&a, &b, 5, Metric::L2, &|_| {}).unwrap_err().to_string().contains("dimension")
    );
    assert!(exact_knn(&a, &a, 0, Metric::L2, &|_| {}).is_err());
    assert!(
        exact_knn(&a, &a, 51, Metric::L2, &|_| {}).unwrap_err().to_string().contains("exceeds")
    );
}
