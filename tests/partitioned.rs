//! The partitioned build through the real binary: an input whose in-memory
//! build does not fit `--build-memory` is built in several shards, its peak
//! resident memory (the process's VmHWM) stays under the budget, the index
//! passes `basalt verify`, and it searches within 0.01 of the one-shot
//! build's recall@10 at every L where that is 0.8 or more (0.02 below).

#![allow(clippy::unwrap_used, reason = "a test panics to report its failure")]

use std::path::Path;
use std::process::Command;

fn ok(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_basalt")).args(args).output().expect("run basalt");
    assert!(o.status.success(), "basalt {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const N: &str = "100000";
const DIM: &str = "64";
/// GiB: the in-memory build of 100K x 64 needs about 0.11 GiB.
const BUDGET_GIB: f64 = 0.085;

fn recall_by_l(idx: &Path, q: &Path, gt: &Path) -> Vec<(u64, f64)> {
    let out = ok(&[
        "search",
        "--index",
        p(idx),
        "--queries",
        p(q),
        "--gt",
        p(gt),
        "--k",
        "10",
        "--L",
        "16,32,48,64,96",
        "--threads",
        "2",
        // The round-based search's counts do not depend on when reads land.
        "--mode",
        "rounds",
        "--json",
    ]);
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["L"].as_u64().unwrap(), v["recall"].as_f64().unwrap())
        })
        .collect()
}

/// Both builds of one seeded 100K x 64 set, the partitioned one under a
/// budget that forces several shards: budget kept, verify passes, recall
/// within 0.01 at every L where the one-shot build reaches 0.8.
#[test]
fn a_partitioned_build_keeps_its_budget_and_searches_like_the_one_shot_build() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (base, q, gt) = (d.join("b.fbin"), d.join("q.fbin"), d.join("gt.ibin"));
    ok(&["gen", "--out", p(&base), "--n", N, "--dim", DIM, "--queries", p(&q), "--nq", "500"]);
    ok(&[
        "gt",
        "--base",
        p(&base),
        "--queries",
        p(&q),
        "--k",
        "10",
        "--metric",
        "l2",
        "--out",
        p(&gt),
    ]);
    let build = |out: &Path, budget: Option<f64>| -> serde_json::Value {
        let budget = budget.map(|b| b.to_string());
        let mut args = vec![
            "build",
            "--data",
            p(&base),
            "--metric",
            "l2",
            "--out",
            p(out),
            "--pq-bytes",
            "16",
            "--seed",
            "5",
            // One build thread: the same graphs every run (with two, the
            // insertion order varies and recall at L 16 with it, by up to
            // 0.03 between runs).
            "--threads",
            "1",
            "--json",
        ];
        if let Some(b) = &budget {
            args.extend(["--build-memory", b.as_str()]);
        }
        serde_json::from_str(ok(&args).trim()).unwrap()
    };
    let one = d.join("one");
    let s1 = build(&one, None);
    assert!(s1["partition"].is_null(), "the one-shot build fits: {s1}");
    let part = d.join("part");
    let s2 = build(&part, Some(BUDGET_GIB));
    let info = &s2["partition"];
    assert!(info["shards"].as_u64().unwrap() >= 3, "several shards: {info}");
    let sizes: Vec<u64> =
        info["shard_points"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let cap = info["shard_points_max"].as_u64().unwrap();
    assert!(sizes.iter().all(|&s| s <= cap), "{sizes:?} over {cap}");
    let copies: u64 = sizes.iter().sum();
    let third = info["third_placed"].as_u64().unwrap();
    assert_eq!(copies, 200_000 - info["single_placed"].as_u64().unwrap() + third);
    assert!(third > 0, "points near three-way boundaries take a third copy: {info}");
    let peak = s2["peak_rss_bytes"].as_u64().unwrap();
    let budget = (BUDGET_GIB * (1u64 << 30) as f64) as u64;
    assert!(peak <= budget, "peak RSS {peak} over the budget {budget}");
    // The budget is what binds: the one-shot build planned more than it
    // (it partitions only with the budget), and the partitioned build's
    // measured peak stays under it. The two builds' measured peaks are not
    // compared: at 100K x 64 (25.6 MB of vectors) the process's fixed
    // memory is most of either, and they came out 73.2 MB partitioned vs
    // 70.0 MB one-shot in one CI run and the other way round in others.
    let peak1 = s1["peak_rss_bytes"].as_u64().unwrap();
    eprintln!("peak RSS: one-shot {peak1}, partitioned {peak}, budget {budget}");
    assert!(ok(&["verify", p(&part)]).starts_with("ok: 100000 nodes"));
    // Both builds pack their placement (the ids file maps nodes to rows).
    assert!(one.join("gen-0/ids").is_file() && part.join("gen-0/ids").is_file(), "both packed");
    assert!(!part.join("partition-scratch").exists());

    let r1 = recall_by_l(&one, &q, &gt);
    let r2 = recall_by_l(&part, &q, &gt);
    eprintln!("recall@10 by L, one-shot {r1:?}, partitioned {r2:?}");
    // Both packed (the default). With 2 copies a point's list saw only
    // neighbours sharing one of its shards, and recall trailed by 0.02-0.03
    // at L 16; the third copies of boundary points brought it within 0.005
    // from L 32 on (row order). Packed, the merged lists must be nearest
    // first as the one-shot build's are: in id order the packing filled
    // sectors with less related nodes and the gap was 0.023 at L 16 and
    // 0.020 at L 32; nearest first, 0.009-0.010 (one-thread builds give the
    // same graphs every run). Where the one-shot recall is under 0.8 (one
    // build's shard layout moves low-L recall by 0.01-0.02) the bound is
    // 0.025, not the 0.01.
    let mut operating = 0;
    for ((l, a), (_, b)) in r1.iter().zip(&r2) {
        let slack = if *a >= 0.8 { 0.01 } else { 0.025 };
        // Inclusive: recalls are hit counts over 5,000 (one-thread builds
        // measured exactly 0.0100 below at L 32: 50 hits).
        assert!(*b >= a - slack - 1e-9, "L {l}: partitioned {b} vs one-shot {a}");
        operating += usize::from(*a >= 0.9);
    }
    assert!(operating >= 2, "two L in the operating range: {r1:?}");
    assert!(r1[0].1 < 0.9, "the lowest L must not saturate recall: {r1:?}");
}
