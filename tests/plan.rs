//! `basalt plan` through the real binary: the disk it predicts for an index
//! is what a build of that shape writes, the partitioned build it plans is
//! the one `basalt build` chooses under the same budget, the text names the
//! resource that runs out first, and bad workloads are refused by name.

#![allow(clippy::unwrap_used, reason = "a test panics to report its failure")]

use std::path::Path;
use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_basalt")).args(args).output().expect("run basalt")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(o.status.success(), "basalt {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
    }
    total
}

#[test]
fn plan_predicts_the_index_a_build_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.fbin");
    let idx = tmp.path().join("idx");
    let b = base.to_str().unwrap();
    ok(&["gen", "--out", b, "--n", "100000", "--dim", "32", "--seed", "3"]);
    // A budget the in-memory build (about 0.075 GiB) does not fit: the
    // build is partitioned.
    let budget = "0.06";
    let summary = ok(&[
        "build",
        "--data",
        b,
        "--metric",
        "l2",
        "--out",
        idx.to_str().unwrap(),
        "--R",
        "32",
        "--pq-bytes",
        "16",
        "--threads",
        "2",
        "--build-memory",
        budget,
        "--json",
    ]);
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let plan = ok(&[
        "plan",
        "--n",
        "100000",
        "--dim",
        "32",
        "--R",
        "32",
        "--pq-bytes",
        "16",
        "--cores",
        "2",
        "--ram",
        "1",
        "--build-memory",
        budget,
        "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    // Disk: the estimate bounds the files from above by at most the
    // manifest's and the hot list's allowance.
    let written = dir_bytes(&idx);
    let predicted = plan["disk"]["index"].as_u64().unwrap();
    assert!(predicted >= written, "predicted {predicted} < written {written}");
    assert!(
        predicted - written <= (1 << 20) + 4 * 100_000,
        "predicted {predicted}, written {written}"
    );
    // The same shard plan as the build's.
    let planned = &plan["build"]["partitioned"];
    // The same shard plan as the build's (which may split a shard the
    // k-means sample finds too full, never merge two).
    assert_eq!(planned["shard_points_max"], summary["partition"]["shard_points_max"]);
    let (p_shards, b_shards) =
        (planned["shards"].as_u64().unwrap(), summary["partition"]["shards"].as_u64().unwrap());
    assert!(p_shards >= 2 && b_shards >= p_shards, "planned {p_shards}, built {b_shards}");
    // RAM: exactly the codes of 100000 points at 16 bytes.
    assert_eq!(plan["ram"]["codes"], 1_600_000);
}

/// The text names the resource that runs out first for its inputs: 1 GiB
/// of RAM holds no point beside two 1 GiB deltas and a merge's 4 GiB; 20 GiB
/// of disk hold two generations of about 16M points, long before 64 GiB of
/// RAM or the build run out; a million queries a second pass what 47K reads
/// a second give.
#[test]
fn plan_names_what_runs_out_first() {
    let base = ["plan", "--n", "100000", "--dim", "32", "--cores", "2"];
    for (extra, expected) in [
        (&["--ram", "1"][..], "one box does NOT serve this workload: RAM runs out first, past 0"),
        (&["--ram", "64", "--disk", "20"][..], "one box serves this workload; disk runs out first"),
        (
            &["--ram", "64", "--qps", "1000000"][..],
            "one box does NOT serve this workload: QPS runs out first",
        ),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let text = ok(&args);
        assert!(text.contains(expected), "{extra:?}: expected {expected:?} in\n{text}");
    }
}

#[test]
fn plan_refuses_bad_workloads_by_name() {
    for (args, needle) in [
        (vec!["--n", "0", "--dim", "8"], "--n"),
        (vec!["--n", "10", "--dim", "8", "--recall", "1.5"], "--recall"),
        (vec!["--n", "10", "--dim", "8", "--pq-bytes", "9"], "--pq-bytes"),
        (vec!["--n", "5000000000", "--dim", "8"], "NODES_MAX"),
        (vec!["--n", "10", "--dim", "8", "--ram=-1"], "--ram"),
        (vec!["--n", "10", "--dim", "8", "--recall", "0.99999"], "past what the calibration"),
        // Sizes that would wrap the plan's sums are refused, not wrapped.
        (vec!["--n", "10", "--dim", "8", "--delta", "1e10"], "OPTION_BYTES_MAX"),
        (vec!["--n", "10", "--dim", "8", "--cache", "1e300"], "--cache"),
    ] {
        let mut full = vec!["plan"];
        full.extend(&args);
        let o = run(&full);
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
