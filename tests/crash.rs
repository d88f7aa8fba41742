//! Crash tests of the real binary: `basalt build --force` killed with
//! SIGKILL at seeded random moments while it replaces an index. After every
//! kill the path holds a whole index (the old one or the new one) that
//! passes `verify`; the next build removes what the killed ones left.

#![allow(clippy::unwrap_used, reason = "a test panics to report its failure")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

fn basalt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_basalt"))
}

fn build_args<'a>(base: &'a str, out: &'a str, seed: &'a str) -> Vec<&'a str> {
    vec![
        "build",
        "--data",
        base,
        "--metric",
        "l2",
        "--out",
        out,
        "--R",
        "16",
        "--L",
        "32",
        "--pq-bytes",
        "8",
        "--seed",
        seed,
        "--force",
        "--threads",
        "1",
    ]
}

fn verify_ok(out: &str) -> String {
    let o = basalt().args(["verify", out]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "verify failed: {}{}", text, String::from_utf8_lossy(&o.stderr));
    text
}

fn build_id(out: &str) -> String {
    let m = std::fs::read_to_string(format!("{out}/manifest")).unwrap();
    let at = m.find("\"build_id\": \"").unwrap() + 13;
    m[at..at + 16].to_string()
}

// Eight builds killed at random moments (seeded): the index path always
// holds an index that verifies; a final build cleans up their leftovers.
#[test]
fn build_killed_at_random_moments_leaves_a_whole_index() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("b.fbin");
    let out = dir.path().join("idx");
    let (base_s, out_s) = (base.to_str().unwrap(), out.to_str().unwrap());
    let g = basalt()
        .args(["gen", "--out", base_s, "--n", "8000", "--dim", "32", "--seed", "9"])
        .output()
        .unwrap();
    assert!(g.status.success());
    let t = Instant::now();
    let first = basalt().args(build_args(base_s, out_s, "1")).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let full = t.elapsed();
    verify_ok(out_s);
    let mut ids = vec![build_id(out_s)];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let mut killed = 0;
    for round in 0..8u64 {
        let seed = (round + 2).to_string();
        let mut child = basalt()
            .args(build_args(base_s, out_s, &seed))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let at = full.mul_f64(rng.random_range(0.0..1.1));
        std::thread::sleep(at.min(Duration::from_secs(20)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            killed += 1;
        }
        child.wait().unwrap();
        let text = verify_ok(out_s);
        assert!(text.starts_with("ok: 8000 nodes"), "{text}");
        let id = build_id(out_s);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    assert!(killed >= 4, "only {killed} of 8 builds were killed mid-way");
    // The next build finds and removes the killed builds' temporary directories.
    let last = basalt().args(build_args(base_s, out_s, "99")).output().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    verify_ok(out_s);
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".idx."))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
