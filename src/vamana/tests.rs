//! The in-memory graph: recall of greedy search, the degree bound, determinism.

use super::*;
use crate::distance::Metric;
use crate::groundtruth::brute_force_scalar;
use crate::synth::{Mixture, STREAM_BASE, STREAM_QUERIES};

fn dataset(n: usize, nq: usize, dim: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let m = Mixture::new(dim, 16, seed).unwrap();
    let mut base = Vec::new();
    let mut b = 0;
    while base.len() < n * dim {
        let take = (n - base.len() / dim).min(crate::synth::BLOCK_ROWS);
        base.extend(m.block::<f32>(seed, STREAM_BASE, b, take));
        b += 1;
    }
    (base, m.block::<f32>(seed, STREAM_QUERIES, 0, nq))
}

fn recall_at(g: &Graph<'_, f32>, queries: &[f32], base: &[f32], metric: Metric, l: usize) -> f64 {
    let dim = g.dim();
    let truth = brute_force_scalar(base, queries, dim, 10, metric);
    let mut visited = VisitedSet::new(g.len());
    let mut hits = 0;
    for (q, t) in queries.chunks_exact(dim).zip(&truth) {
        let got: Vec<u32> = g.search(q, l, 10, &mut visited).iter().map(|x| x.0).collect();
        hits += t.iter().filter(|(id, _)| got.contains(id)).count();
    }
    hits as f64 / (truth.len() * 10) as f64
}

/// Greedy search with exact distances reaches recall@10 >= 0.98 on a seeded
/// 20K-point set, and every list respects the degree bound without self loops.
#[test]
fn in_memory_recall_on_20k() {
    let (base, queries) = dataset(20_000, 100, 32, 11);
    let params = BuildParams { degree_max: 32, list_size: 64, ..Default::default() };
    let g = build(&base, 32, Metric::L2, &params, &()).unwrap();
    for p in 0..g.len() as u32 {
        let nb = g.neighbors(p);
        assert!(nb.len() <= 32 && !nb.contains(&p), "node {p}");
        assert!(nb.iter().all(|&x| (x as usize) < g.len()));
    }
    let r = recall_at(&g, &queries, &base, Metric::L2, 64);
    assert!(r >= 0.98, "recall@10 = {r}");
}

/// Inner product builds through the MIPS reduction and still finds the true top 10.
#[test]
fn inner_product_graph_recall() {
    let (base, queries) = dataset(5_000, 50, 24, 5);
    let params = BuildParams { degree_max: 24, list_size: 64, ..Default::default() };
    let g = build(&base, 24, Metric::InnerProduct, &params, &()).unwrap();
    let r = recall_at(&g, &queries, &base, Metric::InnerProduct, 100);
    assert!(r >= 0.9, "ip recall@10 = {r}");
}

/// One thread and a seed give the identical graph, run to run.
#[test]
fn single_thread_build_is_deterministic() {
    let (base, _) = dataset(3_000, 1, 16, 2);
    let params = BuildParams { degree_max: 16, list_size: 32, ..Default::default() };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let lists = |seed| {
        pool.install(|| {
            let p = BuildParams { seed, ..params.clone() };
            let g = build(&base, 16, Metric::L2, &p, &()).unwrap();
            (0..g.len() as u32).map(|i| g.neighbors(i)).collect::<Vec<_>>()
        })
    };
    assert_eq!(lists(9), lists(9));
    assert_ne!(lists(9), lists(10));
}

/// Bad parameters are refused with the limit named.
#[test]
fn bad_params_are_refused() {
    let (base, _) = dataset(10, 1, 4, 1);
    let bad = BuildParams { degree_max: 0, ..Default::default() };
    assert!(build(&base, 4, Metric::L2, &bad, &()).err().unwrap().contains("DEGREE_MAX"));
    let bad = BuildParams { alpha: f32::NAN, ..Default::default() };
    assert!(build(&base, 4, Metric::L2, &bad, &()).is_err());
    assert!(build::<f32>(&[], 4, Metric::L2, &BuildParams::default(), &()).is_err());
}

/// Saturation fills the free slots below R: degrees rise to about R and no
/// list exceeds R.
#[test]
fn saturation_fills_lists_to_r() {
    let (base, _) = dataset(3_000, 1, 16, 4);
    let plain = BuildParams { degree_max: 16, list_size: 32, ..Default::default() };
    let sat = BuildParams { saturate: true, ..plain.clone() };
    let g0 = build(&base, 16, Metric::L2, &plain, &()).unwrap();
    let g1 = build(&base, 16, Metric::L2, &sat, &()).unwrap();
    let (_, mean0, _) = g0.degree_stats();
    let (_, mean1, max1) = g1.degree_stats();
    assert!(max1 <= 16);
    assert!(mean1 >= 15.0 && mean1 > mean0, "saturated mean {mean1}, plain {mean0}");
}

/// Nodes cut off from the medoid (every in-edge removed, full lists around
/// them) are given an in-edge again by the reconnection pass, without
/// breaking the degree bound, and are then found by search.
#[test]
fn stranded_nodes_are_reconnected() {
    let (base, _) = dataset(2_000, 0, 16, 4);
    let params = BuildParams { degree_max: 8, list_size: 24, ..Default::default() };
    let g = build(&base, 16, Metric::L2, &params, &()).unwrap();
    assert_eq!(g.unreachable_from_medoid(), 0);
    let cut: Vec<u32> = (100..140).filter(|&p| p != g.medoid()).collect();
    for list in &g.adj {
        list.lock().retain(|n| !cut.contains(n));
    }
    // Fill every list to R so the pass must replace edges, not just append.
    for p in 0..g.len() as u32 {
        let mut list = g.adj[p as usize].lock();
        let mut c = 0u32;
        while list.len() < 8 {
            let cand = (p + 1 + c) % 2_000;
            c += 1;
            if cand != p && !cut.contains(&cand) && !list.contains(&cand) {
                list.push(cand);
            }
        }
    }
    let stranded = g.unreachable_from_medoid();
    assert!(stranded >= cut.len() as u64, "{stranded}");
    let added = g.connect_unreachable(24);
    assert!(added >= 1);
    assert_eq!(g.unreachable_from_medoid(), 0);
    assert!(g.adj.iter().all(|a| a.lock().len() <= 8), "degree bound kept");
    let mut visited = VisitedSet::new(g.len());
    for &p in &cut {
        let q = g.vector(p).to_vec();
        let got = g.search(&q, 64, 1, &mut visited);
        assert_eq!(got[0].0, p, "node {p} is found again");
    }
}
