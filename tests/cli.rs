//! Black-box tests of the built `basalt` binary: the commands a user runs,
//! end to end, and the errors a user sees.

#![allow(clippy::unwrap_used, reason = "a test panics to report its failure")]

use std::path::Path;
use std::process::{Command, Output};

fn basalt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_basalt")).args(args).output().expect("run basalt")
}

fn ok(args: &[&str]) -> String {
    let o = basalt(args);
    assert!(o.status.success(), "basalt {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let o = basalt(args);
    assert!(!o.status.success(), "basalt {args:?} should fail");
    String::from_utf8(o.stderr).unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// gen -> gt -> build -> verify -> inspect -> search --json -> recall, on a
/// seeded 5K set: every step succeeds and search reaches recall@10 >= 0.9 at L=64.
#[test]
fn full_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (base, q, gt, idx, res) =
        (d.join("b.fbin"), d.join("q.fbin"), d.join("gt.ibin"), d.join("idx"), d.join("r.ibin"));
    ok(&[
        "gen",
        "--out",
        p(&base),
        "--n",
        "5000",
        "--dim",
        "32",
        "--queries",
        p(&q),
        "--nq",
        "50",
        "--seed",
        "3",
    ]);
    ok(&[
        "gt",
        "--base",
        p(&base),
        "--queries",
        p(&q),
        "--k",
        "20",
        "--metric",
        "l2",
        "--out",
        p(&gt),
    ]);
    ok(&[
        "build",
        "--data",
        p(&base),
        "--metric",
        "l2",
        "--out",
        p(&idx),
        "--R",
        "24",
        "--L",
        "48",
        "--pq-bytes",
        "8",
    ]);
    assert!(ok(&["verify", p(&idx)]).starts_with("ok: 5000 nodes"));
    let inspect = ok(&["inspect", p(&idx)]);
    assert!(inspect.contains("5000 x 32 f32, metric l2"), "{inspect}");
    // Every search below: these queries, their ground truth, k 10, JSON rows.
    let search = |more: &[&str]| {
        let mut args =
            vec!["search", "--index", p(&idx), "--queries", p(&q), "--gt", p(&gt), "--k", "10"];
        args.extend_from_slice(more);
        args.push("--json");
        ok(&args)
    };
    let out = search(&["--L", "16,64", "--results", p(&res), "--reader", "pread"]);
    let rows: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    for key in [
        "L",
        "beam",
        "threads",
        "k",
        "recall",
        "qps",
        "latency_us_mean",
        "latency_us_p50",
        "latency_us_p99",
        "reads_mean",
        "hops_mean",
        "cache_hits_mean",
        "compressed_distances_mean",
        "exact_distances_mean",
    ] {
        assert!(rows[0].get(key).is_some(), "missing {key}");
    }
    let mean = |row: &serde_json::Value, key: &str| row[key].as_f64().unwrap();
    // The disk search steers by PQ and reranks exactly (every record of
    // the sectors it reads, with a packed placement).
    assert!(mean(&rows[1], "compressed_distances_mean") > 0.0);
    assert!(mean(&rows[1], "exact_distances_mean") > 0.0);
    // In memory: 8-bit rows then an exact rescoring of the pool, or exact
    // distances only; the mode names the steering.
    for steer in ["sq8", "exact"] {
        let out = search(&["--L", "64", "--in-memory", "--in-memory-steer", steer]);
        let row: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(row["mode"], format!("in-memory-{steer}"));
        assert_eq!(mean(&row, "reads_mean"), 0.0);
        assert!(mean(&row, "recall") >= 0.9, "{steer}: {row}");
        let (c, e) = (mean(&row, "compressed_distances_mean"), mean(&row, "exact_distances_mean"));
        if steer == "sq8" {
            assert!(c > 0.0 && e >= 64.0 && e < c, "{steer}: {c} compressed, {e} exact");
        } else {
            assert!(c == 0.0 && e > 64.0, "{steer}: {c} compressed, {e} exact");
        }
    }
    let r64 = rows[1]["recall"].as_f64().unwrap();
    assert!(r64 >= 0.9, "recall@10 at L=64: {r64}");
    let rec = ok(&["recall", "--gt", p(&gt), "--results", p(&res), "--k", "10"]);
    assert!(
        rec.contains(&format!("{r64:.4}")),
        "recall command agrees with search: {rec} vs {r64}"
    );
}

/// Users get clear errors: existing output, bad input files, mismatched types.
#[test]
fn clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("b.fbin");
    ok(&["gen", "--out", p(&base), "--n", "300", "--dim", "8"]);
    let idx = d.join("idx");
    ok(&[
        "build",
        "--data",
        p(&base),
        "--metric",
        "l2",
        "--out",
        p(&idx),
        "--R",
        "8",
        "--L",
        "16",
        "--pq-bytes",
        "4",
    ]);
    let e = fails(&[
        "build",
        "--data",
        p(&base),
        "--metric",
        "l2",
        "--out",
        p(&idx),
        "--pq-bytes",
        "4",
    ]);
    assert!(e.contains("already holds an index") && e.contains("--force"), "{e}");
    ok(&[
        "build",
        "--data",
        p(&base),
        "--metric",
        "l2",
        "--out",
        p(&idx),
        "--R",
        "8",
        "--L",
        "16",
        "--pq-bytes",
        "4",
        "--force",
    ]);
    // pq-bytes larger than the dimension.
    let e = fails(&[
        "build",
        "--data",
        p(&base),
        "--metric",
        "l2",
        "--out",
        p(&d.join("x")),
        "--pq-bytes",
        "9",
    ]);
    assert!(e.contains("--pq-bytes 9"), "{e}");
    assert!(!d.join("x").exists(), "a refused build leaves nothing");
    // A non-index directory is never replaced.
    std::fs::create_dir(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/keep"), b"x").unwrap();
    let e = fails(&[
        "build",
        "--data",
        p(&base),
        "--metric",
        "l2",
        "--out",
        p(&d.join("mine")),
        "--pq-bytes",
        "4",
        "--force",
    ]);
    assert!(e.contains("not a basalt index"), "{e}");
    assert!(d.join("mine/keep").exists());
    // NaN in the input.
    let mut bytes = std::fs::read(&base).unwrap();
    bytes[8 + 4 * 17..8 + 4 * 18].copy_from_slice(&f32::NAN.to_le_bytes());
    let nan = d.join("nan.fbin");
    std::fs::write(&nan, &bytes).unwrap();
    let e = fails(&[
        "build",
        "--data",
        p(&nan),
        "--metric",
        "l2",
        "--out",
        p(&d.join("y")),
        "--pq-bytes",
        "4",
    ]);
    assert!(e.contains("row 2 dimension 1") && e.contains("finite"), "{e}");
    // Truncated file.
    std::fs::write(d.join("t.fbin"), &bytes[..bytes.len() - 3]).unwrap();
    let e = fails(&[
        "gt",
        "--base",
        p(&d.join("t.fbin")),
        "--queries",
        p(&base),
        "--k",
        "5",
        "--metric",
        "l2",
        "--out",
        p(&d.join("g.ibin")),
    ]);
    assert!(e.contains("t.fbin") && e.contains("header says"), "{e}");
    // dtype and extension disagree.
    let e =
        fails(&["gen", "--out", p(&d.join("z.fbin")), "--n", "5", "--dim", "4", "--dtype", "u8"]);
    assert!(e.contains("does not match"), "{e}");
    // Not an index.
    let e = fails(&["verify", p(d)]);
    assert!(e.contains("no basalt index"), "{e}");
}

/// Runs basalt and fails the test if it has not finished within `secs`.
fn run_bounded(args: &[&str], cwd: Option<&Path>, secs: u64) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_basalt"));
    cmd.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    if let Some(c) = cwd {
        cmd.current_dir(c);
    }
    let mut child = cmd.spawn().unwrap();
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > std::time::Duration::from_secs(secs) {
            child.kill().unwrap();
            panic!("basalt {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn write_fbin(path: &Path, dim: usize, rows: &[f32]) {
    let mut b = Vec::new();
    b.extend_from_slice(&((rows.len() / dim) as u32).to_le_bytes());
    b.extend_from_slice(&(dim as u32).to_le_bytes());
    for x in rows {
        b.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// What a new user ran into, each now a clear error before any work.
#[test]
fn probe_findings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = d.join("b.fbin");
    let idx = d.join("idx");
    ok(&["gen", "--out", p(&base), "--n", "400", "--dim", "8", "--seed", "2"]);
    let build = |out: &Path, r: &str| {
        basalt(&[
            "build",
            "--data",
            p(&base),
            "--metric",
            "l2",
            "--out",
            p(out),
            "--R",
            r,
            "--pq-bytes",
            "4",
        ])
    };
    assert!(build(&idx, "8").status.success());
    let gt_args = |b: &Path, q: &Path, out: &Path| {
        basalt(&[
            "gt",
            "--base",
            p(b),
            "--queries",
            p(q),
            "--k",
            "5",
            "--metric",
            "l2",
            "--out",
            p(out),
        ])
    };
    // gt: NaN or Inf in a query or a base row is an error naming file, row, column.
    let mut rows = vec![0.5f32; 3 * 8];
    for (bad, what) in [(f32::NAN, "NaN"), (f32::INFINITY, "inf")] {
        rows[8 + 6] = bad;
        let q = d.join("q.fbin");
        write_fbin(&q, 8, &rows);
        let o = gt_args(&base, &q, &d.join("g.ibin"));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what} query accepted");
        assert!(e.contains("q.fbin") && e.contains("row 1 dimension 6"), "{e}");
        assert!(!d.join("g.ibin").exists(), "no ground truth written");
    }
    let nanbase = d.join("nb.fbin");
    let mut bb = std::fs::read(&base).unwrap();
    bb[8 + 4 * (8 * 10 + 2)..8 + 4 * (8 * 10 + 3)].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&nanbase, bb).unwrap();
    let o = gt_args(&nanbase, &base, &d.join("g.ibin"));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("row 10 dimension 2"), "{e}");
    // Squared norms that would overflow f32 are refused at build.
    let huge = d.join("huge.fbin");
    let mut hv = vec![1.0f32; 40 * 8];
    hv[8 * 7] = 3e19;
    write_fbin(&huge, 8, &hv);
    let e = fails(&[
        "build",
        "--data",
        p(&huge),
        "--metric",
        "l2",
        "--out",
        p(&d.join("h")),
        "--pq-bytes",
        "4",
    ]);
    assert!(e.contains("row 7") && e.contains("NORM_SQUARED_MAX"), "{e}");
    // R below the minimum is refused, naming the limit.
    let o = build(&d.join("r4"), "4");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("DEGREE_MIN"), "{e}");
    assert!(!d.join("r4").exists());
    // A FIFO is refused up front instead of hanging.
    let fifo = d.join("pipe.fbin");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let o = run_bounded(
        &["build", "--data", p(&fifo), "--metric", "l2", "--out", p(&d.join("f"))],
        None,
        20,
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("not a regular file"), "{e}");
    // Search parameters and the results path are checked before any searching
    // (nothing on stdout: no table header, no rows).
    let q = d.join("q2.fbin");
    ok(&["gen", "--out", p(&q), "--n", "10", "--dim", "8", "--seed", "5"]);
    let search = |extra: &[&str]| {
        let mut args = vec!["search", "--index", p(&idx), "--queries", p(&q)];
        args.extend_from_slice(extra);
        basalt(&args)
    };
    for (extra, want) in [
        (vec!["--k", "10", "--L", "20,5"], "--L 5"),
        (vec!["--L", "20", "--results", "/nonexistent/dir/r.ibin"], "does not exist"),
        (vec!["--L", "20", "--results", p(d)], ".ibin"),
    ] {
        let o = search(&extra);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(want), "{extra:?}: {e}");
        assert!(o.stdout.is_empty(), "{extra:?} printed before failing");
    }
    // k above the index size is refused rather than padded.
    let o = search(&["--k", "500", "--L", "600"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("exceeds the 400 vectors"));
    // --out . inside an index fails at once, before any build work.
    let o = run_bounded(
        &["build", "--data", p(&base), "--metric", "l2", "--out", ".", "--force"],
        Some(&idx),
        20,
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("directory name"), "{e}");
    assert!(!e.contains("building"), "{e}");
    // recall: result rows must match ground-truth rows; padding is never a hit.
    let gt = d.join("gt.ibin");
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
    let g = basalt::vecfile::read_ground_truth(&gt).unwrap();
    let write_res = |path: &Path, n: usize, pad: bool| {
        let mut ids = g.ids[..n * 10].to_vec();
        if pad {
            ids.iter_mut().for_each(|x| *x = u32::MAX);
        }
        basalt::vecfile::write_ground_truth(
            path,
            &basalt::vecfile::GroundTruth { n, k: 10, ids, scores: None },
        )
        .unwrap();
    };
    let short = d.join("short.ibin");
    write_res(&short, 4, false);
    let e = fails(&["recall", "--gt", p(&gt), "--results", p(&short), "--k", "10"]);
    assert!(e.contains("same queries"), "{e}");
    let empty = d.join("empty.ibin");
    write_res(&empty, 0, false);
    let e = fails(&["recall", "--gt", p(&gt), "--results", p(&empty), "--k", "10"]);
    assert!(e.contains("no queries"), "{e}");
    // A ground truth that itself lists the padding id still scores 0 for it.
    let padded = d.join("pad.ibin");
    write_res(&padded, 10, true);
    let mut gp = g.clone();
    gp.ids[0] = u32::MAX;
    let gtp = d.join("gtp.ibin");
    basalt::vecfile::write_ground_truth(&gtp, &gp).unwrap();
    let out = ok(&["recall", "--gt", p(&gtp), "--results", p(&padded), "--k", "10"]);
    assert!(out.contains("recall@10 = 0.0000"), "{out}");
    // An OS error is printed once.
    let e = fails(&[
        "gt",
        "--base",
        "/nonexistent.fbin",
        "--queries",
        p(&q),
        "--k",
        "5",
        "--metric",
        "l2",
        "--out",
        p(&d.join("x.ibin")),
    ]);
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    // gt prints nothing on stdout unless asked for JSON.
    let o = gt_args(&base, &q, &d.join("g2.ibin"));
    assert!(o.status.success() && o.stdout.is_empty());
    // inspect describes multi-sector records.
    let wide = d.join("w.fbin");
    ok(&["gen", "--out", p(&wide), "--n", "50", "--dim", "1100"]);
    let widx = d.join("widx");
    ok(&[
        "build",
        "--data",
        p(&wide),
        "--metric",
        "l2",
        "--out",
        p(&widx),
        "--R",
        "8",
        "--pq-bytes",
        "8",
    ]);
    let text = ok(&["inspect", p(&widx)]);
    assert!(text.contains("2 sectors per record") && !text.contains("0 per sector"), "{text}");
}
