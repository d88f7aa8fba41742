//! Crash tests of live collections with the real binary: `basalt insert`
//! (with background merges) and `basalt merge` killed with SIGKILL at
//! seeded random moments. After every kill: every acknowledged id is
//! present (listed, and found by a query for its own vector), no deleted id
//! comes back, and the generation passes `basalt verify`.

#![allow(clippy::unwrap_used, reason = "a test panics to report its failure")]

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const DIM: usize = 16;

fn basalt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_basalt"))
}

fn run(args: &[&str]) -> String {
    let o = basalt().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "basalt {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn generate(path: &Path, n: u64, seed: u64) {
    run(&[
        "gen",
        "--out",
        path.to_str().unwrap(),
        "--n",
        &n.to_string(),
        "--dim",
        &DIM.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
}

/// Rows of an .fbin file.
fn rows(path: &Path) -> Vec<Vec<f32>> {
    let b = std::fs::read(path).unwrap();
    let n = u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize;
    let d = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| {
            (0..d)
                .map(|j| {
                    let at = 8 + (i * d + j) * 4;
                    f32::from_le_bytes(b[at..at + 4].try_into().unwrap())
                })
                .collect()
        })
        .collect()
}

fn write_fbin(path: &Path, vs: &[Vec<f32>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&(vs.len() as u32).to_le_bytes());
    b.extend_from_slice(&(DIM as u32).to_le_bytes());
    for v in vs {
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    std::fs::write(path, b).unwrap();
}

fn listed(coll: &str) -> BTreeSet<u64> {
    run(&["list", coll, "--all", "--limit", "10000"]).lines().map(|l| l.parse().unwrap()).collect()
}

/// Checks the collection against what was acknowledged and deleted: ids
/// listed, a sample found by their own vectors, verify passing.
fn check(
    coll: &str,
    acked: &BTreeSet<u64>,
    deleted: &BTreeSet<u64>,
    vec_of: &dyn Fn(u64) -> Vec<f32>,
    work: &Path,
) {
    let have = listed(coll);
    let missing: Vec<_> = acked.difference(&have).take(5).collect();
    assert!(missing.is_empty(), "acknowledged ids missing: {missing:?} ({} acked)", acked.len());
    let back: Vec<_> = deleted.intersection(&have).take(5).collect();
    assert!(back.is_empty(), "deleted ids came back: {back:?}");
    let sample: Vec<u64> = acked.iter().step_by((acked.len() / 25).max(1)).copied().collect();
    let qf = work.join("q.fbin");
    write_fbin(&qf, &sample.iter().map(|&id| vec_of(id)).collect::<Vec<_>>());
    let out = run(&["query", coll, "--queries", qf.to_str().unwrap(), "--k", "5", "--L", "100"]);
    let mut found = 0;
    for (line, id) in out.lines().zip(&sample) {
        let hits: serde_json::Value = serde_json::from_str(line).unwrap();
        let hits = hits.as_array().unwrap();
        if hits.iter().any(|h| h["id"].as_u64() == Some(*id) && h["distance"].as_f64() == Some(0.0))
        {
            found += 1;
        }
    }
    // The search is approximate: a rare miss is the graph's, not lost data
    // (presence is checked exactly above).
    assert!(
        found * 10 >= sample.len() * 9,
        "only {found} of {} acknowledged points found by their own vector",
        sample.len()
    );
    if Path::new(coll).join("manifest").exists() {
        run(&["verify", coll]);
    }
}

/// Spawns `basalt args`, kills it after `after`, returns its stdout.
fn kill_after(args: &[&str], after: Duration) -> (String, bool) {
    let mut child =
        basalt().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    let mut finished = false;
    while start.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            finished = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if !finished {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (out, finished)
}

// Six ingests of 4,000 points (batches of 50, background merges every
// 1,500) killed at random moments, with deletes between them.
#[test]
fn insert_killed_at_random_moments_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let coll = dir.path().join("c");
    let cs = coll.to_str().unwrap();
    run(&[
        "create",
        cs,
        "--dim",
        "16",
        "--metric",
        "l2",
        "--R",
        "16",
        "--L",
        "40",
        "--pq-bytes",
        "8",
        "--delta-points-merge",
        "1500",
    ]);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(88);
    let mut acked = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut data: Vec<Vec<Vec<f32>>> = Vec::new();
    let rounds = 6u64;
    for round in 0..rounds {
        let f = dir.path().join(format!("b{round}.fbin"));
        generate(&f, 4000, 100 + round);
        data.push(rows(&f));
        let first = round * 100_000;
        let wait = Duration::from_millis(rng.random_range(30..1500));
        let (out, finished) = kill_after(
            &[
                "insert",
                cs,
                "--data",
                f.to_str().unwrap(),
                "--first-id",
                &first.to_string(),
                "--batch",
                "50",
            ],
            wait,
        );
        // Every "acked X" line: ids first..=X are durable.
        if let Some(last) = out.lines().filter_map(|l| l.strip_prefix("acked ")).next_back() {
            let hi: u64 = last.split(' ').next().unwrap().parse().unwrap();
            acked.extend(first..=hi);
        }
        eprintln!(
            "round {round}: killed after {wait:?} (finished: {finished}), {} acked",
            acked.len()
        );
        let data_ref = &data;
        let vec_of = |id: u64| data_ref[(id / 100_000) as usize][(id % 100_000) as usize].clone();
        check(cs, &acked, &deleted, &vec_of, dir.path());
        // Delete a few acknowledged ids (to completion).
        let del: Vec<u64> =
            acked.iter().copied().filter(|_| rng.random_bool(0.03)).take(100).collect();
        if !del.is_empty() {
            let args: Vec<String> = del.iter().map(|d| d.to_string()).collect();
            let mut a = vec!["delete", cs];
            a.extend(args.iter().map(|s| s.as_str()));
            run(&a);
            for d in del {
                acked.remove(&d);
                deleted.insert(d);
            }
        }
    }
    run(&["merge", cs]);
    let data_ref = &data;
    let vec_of = |id: u64| data_ref[(id / 100_000) as usize][(id % 100_000) as usize].clone();
    check(cs, &acked, &deleted, &vec_of, dir.path());
    let stats: serde_json::Value = serde_json::from_str(&run(&["stats", cs])).unwrap();
    assert!(stats["points"].as_u64().unwrap() >= acked.len() as u64);
}

// A merge of 1,500 new points and 300 deletes killed at random moments:
// the collection always opens with exactly its points, and verifies.
#[test]
fn merge_killed_at_random_moments_leaves_the_collection_whole() {
    let dir = tempfile::tempdir().unwrap();
    let coll = dir.path().join("c");
    let cs = coll.to_str().unwrap();
    let f = dir.path().join("b.fbin");
    generate(&f, 5500, 7);
    let vs = rows(&f);
    let (a, b) = (dir.path().join("a.fbin"), dir.path().join("bb.fbin"));
    write_fbin(&a, &vs[..4000]);
    write_fbin(&b, &vs[4000..]);
    run(&[
        "create",
        cs,
        "--dim",
        "16",
        "--metric",
        "l2",
        "--R",
        "16",
        "--L",
        "40",
        "--pq-bytes",
        "8",
        "--no-auto-merge",
    ]);
    run(&["insert", cs, "--data", a.to_str().unwrap(), "--batch", "1000"]);
    run(&["merge", cs]);
    run(&["insert", cs, "--data", b.to_str().unwrap(), "--batch", "500", "--first-id", "4000"]);
    let del: Vec<String> = (0..300).map(|i| (i * 13).to_string()).collect();
    let mut args = vec!["delete", cs];
    args.extend(del.iter().map(|s| s.as_str()));
    run(&args);
    let deleted: BTreeSet<u64> = (0..300).map(|i| i * 13).collect();
    let acked: BTreeSet<u64> = (0..5500).filter(|i| !deleted.contains(i)).collect();
    let vec_of = |id: u64| vs[id as usize].clone();
    // How long a whole merge takes, on a copy.
    let copy = dir.path().join("copy");
    let st = Command::new("cp").args(["-a", cs, copy.to_str().unwrap()]).status().unwrap();
    assert!(st.success());
    let _ = std::fs::remove_file(copy.join("lock"));
    let t = Instant::now();
    run(&["merge", copy.to_str().unwrap()]);
    let full = t.elapsed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let mut killed = 0;
    for round in 0..6 {
        let wait = full.mul_f64(rng.random_range(0.05..1.0));
        let (_, finished) = kill_after(&["merge", cs], wait);
        killed += usize::from(!finished);
        eprintln!("merge round {round}: killed after {wait:?} of {full:?} (finished: {finished})");
        assert_eq!(listed(cs), acked, "round {round}: the set of points changed");
        check(cs, &acked, &deleted, &vec_of, dir.path());
        if finished {
            // Start again from the same pending work for the next rounds.
            break;
        }
    }
    assert!(killed >= 1, "no merge was killed mid-way");
    run(&["merge", cs]);
    assert_eq!(listed(cs), acked);
    check(cs, &acked, &deleted, &vec_of, dir.path());
}
