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
    let out = ok(&[
        "search",
        "--index",
        p(&idx),
        "--queries",
        p(&q),
        "--gt",
        p(&gt),
        "--k",
        "10",
        "--L",
        "16,64",
        "--json",
        "--results",
        p(&res),
        "--reader",
        "pread",
    ]);
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
    ] {
        assert!(rows[0].get(key).is_some(), "missing {key}");
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
