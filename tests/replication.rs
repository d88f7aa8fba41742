//! Replication with real daemons on loopback: a standby follows, serves the
//! same answers and refuses writes; promotion fences the old primary, which
//! rejoins; sync mode loses no acknowledged write to a kill -9 of the
//! primary; async loses at most what the lag said; a link that stalls and
//! resets heals; a standby past the retention cap takes a new base copy;
//! wrong secrets, bad checksums and lower epochs are refused and logged.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use basalt::server::repl::frame::{self, Kind};
use common::Server;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-0123456789";
const DIM: usize = 8;

fn primary(data: &Path, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("BASALT_REPLICATION_LISTEN", "127.0.0.1:0"),
        ("BASALT_REPLICATION_SECRET", SECRET),
        ("BASALT_REPLICATION_NODE_NAME", "p"),
    ];
    env.extend_from_slice(extra);
    Server::start(data, &env)
}

fn standby(data: &Path, upstream: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("BASALT_REPLICATION_ROLE", "standby"),
        ("BASALT_REPLICATION_PRIMARY", upstream),
        ("BASALT_REPLICATION_LISTEN", "127.0.0.1:0"),
        ("BASALT_REPLICATION_SECRET", SECRET),
        ("BASALT_REPLICATION_NODE_NAME", "s"),
    ];
    env.extend_from_slice(extra);
    Server::start(data, &env)
}

fn create(s: &Server, name: &str) {
    let (st, v) = s.req(
        "PUT",
        &format!("/collections/{name}"),
        Some(&json!({"vectors": {"size": DIM, "distance": "Euclid"}}).to_string()),
    );
    assert_eq!(st, 200, "{v}");
}

fn vector(rng: &mut impl Rng) -> Vec<f32> {
    (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn upsert(s: &Server, name: &str, ids: std::ops::Range<u64>, seed: u64) -> (u16, Value) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let points: Vec<Value> =
        ids.map(|i| json!({"id": i, "vector": vector(&mut rng), "payload": {"i": i}})).collect();
    s.req(
        "PUT",
        &format!("/collections/{name}/points?wait=true"),
        Some(&json!({"points": points}).to_string()),
    )
}

fn status(s: &Server) -> Value {
    let (st, v) = s.req("GET", "/replication", None);
    assert_eq!(st, 200, "{v}");
    v["result"].clone()
}

/// Waits until the standby has applied every record the primary has, in
/// the same set of collections.
fn wait_caught_up(p: &Server, s: &Server, limit: Duration) {
    let t = Instant::now();
    loop {
        let (ps, ss) = (status(p), status(s));
        let want: Vec<(String, u64)> = ps["collections"]
            .as_object()
            .map(|m| {
                m.iter().map(|(k, v)| (k.clone(), v["primary_lsn"].as_u64().unwrap_or(0))).collect()
            })
            .unwrap_or_default();
        let got: Vec<(String, u64)> = ss["collections"]
            .as_object()
            .map(|m| {
                m.iter().map(|(k, v)| (k.clone(), v["applied_lsn"].as_u64().unwrap_or(0))).collect()
            })
            .unwrap_or_default();
        let (_, colls) = s.req("GET", "/collections", None);
        let names: BTreeSet<String> = colls["result"]["collections"]
            .as_array()
            .map(|a| a.iter().filter_map(|c| c["name"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        let want_names: BTreeSet<String> = want.iter().map(|(n, _)| n.clone()).collect();
        if want == got && names == want_names {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "not caught up after {limit:?}: primary {want:?}, standby {got:?} {names:?}\n--- standby log\n{}\n--- primary log\n{}",
            s.log(),
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ids of the 10 nearest points of fixed queries.
fn answers(s: &Server, name: &str) -> Vec<Vec<u64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(999);
    (0..20)
        .map(|_| {
            let q = json!({"query": vector(&mut rng), "limit": 10, "params": {"hnsw_ef": 400}});
            let (st, v) =
                s.req("POST", &format!("/collections/{name}/points/query"), Some(&q.to_string()));
            assert_eq!(st, 200, "{v}");
            v["result"]["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(|p| p["id"].as_u64().expect("id"))
                .collect()
        })
        .collect()
}

fn count(s: &Server, name: &str) -> u64 {
    let (st, v) = s.req("POST", &format!("/collections/{name}/points/count"), Some("{}"));
    assert_eq!(st, 200, "{v}");
    v["result"]["count"].as_u64().expect("count")
}

fn metrics_text(s: &Server) -> String {
    let (st, b) = common::raw_request(&s.addr, "GET", "/metrics", None, &[]).expect("metrics");
    assert_eq!(st, 200);
    String::from_utf8_lossy(&b).into_owned()
}

fn promote(s: &Server) -> (Value, Duration) {
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["promote", "--listen", &s.addr])
        .env("BASALT_REPLICATION_SECRET", SECRET)
        .output()
        .expect("basalt promote");
    let took = t.elapsed();
    assert!(out.status.success(), "promote: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("promote prints JSON");
    (v["result"].clone(), took)
}

#[test]
fn a_standby_follows_serves_reads_is_promoted_and_the_old_primary_rejoins() {
    let (dp, ds) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let mut p = primary(dp.path(), &[]);
    create(&p, "c");
    for b in 0..5 {
        let (st, v) = upsert(&p, "c", b * 200..(b + 1) * 200, b);
        assert_eq!(st, 200, "{v}");
    }
    let s = standby(ds.path(), &p.repl_addr(), &[]);
    wait_caught_up(&p, &s, Duration::from_secs(60));
    assert!(s.log().contains("base copy installed"), "{}", s.log());
    // Writes while it follows: upserts that replace, deletes, a new collection.
    let (st, v) = upsert(&p, "c", 100..300, 77);
    assert_eq!(st, 200, "{v}");
    let ids: Vec<u64> = (0..50).map(|i| i * 7).collect();
    let (st, v) = p.req(
        "POST",
        "/collections/c/points/delete?wait=true",
        Some(&json!({"points": ids}).to_string()),
    );
    assert_eq!(st, 200, "{v}");
    create(&p, "d");
    let (st, v) = upsert(&p, "d", 0..100, 5);
    assert_eq!(st, 200, "{v}");
    wait_caught_up(&p, &s, Duration::from_secs(60));
    assert_eq!(count(&s, "c"), count(&p, "c"));
    assert_eq!(answers(&s, "c"), answers(&p, "c"), "the standby answers as the primary");
    let (_, pt) = s.req("GET", "/collections/c/points/150", None);
    assert_eq!(pt["result"]["payload"]["i"], 150);
    // Deleted on the primary: gone on the standby.
    let (st, _) = p.req("DELETE", "/collections/d", None);
    assert_eq!(st, 200);
    wait_caught_up(&p, &s, Duration::from_secs(30));
    assert_eq!(s.req("GET", "/collections/d", None).0, 404);
    // The standby refuses writes, naming the primary.
    let (st, v) = upsert(&s, "c", 0..1, 1);
    assert_eq!(st, 403, "{v}");
    let msg = v["status"]["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("standby") && msg.contains(&p.addr), "{msg}");
    // The primary's view, shaped like pg_stat_replication.
    let ps = status(&p);
    assert_eq!(ps["standby"]["node"], "s", "{ps}");
    for k in ["write_lsn", "flush_lsn", "replay_lsn", "lag_bytes", "flush_lag_s", "replay_lag_s"] {
        assert!(ps["collections"]["c"].get(k).is_some(), "{k} in {ps}");
    }
    let m = metrics_text(&p);
    assert!(m.contains("basalt_replication_standby_connected 1"), "{m}");

    // Promotion: under 5 s, epoch 2, the old primary fenced at once.
    let (r, took) = promote(&s);
    assert!(took < Duration::from_secs(5), "promotion took {took:?}");
    assert_eq!(r["epoch"], 2, "{r}");
    assert_eq!(r["old_primary_fenced"], true, "{r}");
    let (st, v) = upsert(&p, "c", 5000..5001, 3);
    assert_eq!(st, 403, "the old primary refuses writes before it is stopped: {v}");
    assert!(p.log().contains("refuses writes from now on"), "{}", p.log());
    let (st, v) = upsert(&s, "c", 6000..6100, 4);
    assert_eq!(st, 200, "the new primary takes writes: {v}");

    // The runbook: stop the old primary, rejoin it, start it as a standby.
    p.signal(15);
    assert!(p.wait_exit(Duration::from_secs(30)).success());
    let new_repl = s.repl_addr();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_basalt"))
        .args(["rejoin", "--data-dir"])
        .arg(dp.path())
        .args(["--primary", &new_repl])
        .output()
        .expect("basalt rejoin");
    assert!(out.status.success(), "rejoin: {}", String::from_utf8_lossy(&out.stderr));
    let old = Server::start(
        dp.path(),
        &[("BASALT_REPLICATION_SECRET", SECRET), ("BASALT_REPLICATION_NODE_NAME", "p")],
    );
    wait_caught_up(&s, &old, Duration::from_secs(60));
    assert!(old.log().contains("rejoin:"), "{}", old.log());
    assert_eq!(status(&old)["role"], "standby");
    assert_eq!(status(&old)["epoch"], 2);
    assert_eq!(answers(&old, "c"), answers(&s, "c"));
    assert_eq!(old.req("GET", "/collections/c/points/6050", None).0, 200);
}
