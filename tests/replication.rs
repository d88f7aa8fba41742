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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Waits (up to 10 s) until the daemon's log holds `needle`.
fn wait_log(s: &Server, needle: &str) {
    let t = Instant::now();
    while !s.log().contains(needle) {
        assert!(t.elapsed() < Duration::from_secs(10), "no {needle:?} in the log: {}", s.log());
        std::thread::sleep(Duration::from_millis(20));
    }
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
    wait_log(&s, "base copy installed");
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
    // A payload index made on the primary is made on the standby (a WAL
    // record), and filtered reads agree.
    let (st, v) = p.req(
        "PUT",
        "/collections/c/index?wait=true",
        Some(&json!({"field_name": "i", "field_schema": "integer"}).to_string()),
    );
    assert_eq!(st, 200, "{v}");
    wait_caught_up(&p, &s, Duration::from_secs(60));
    assert_eq!(count(&s, "c"), count(&p, "c"));
    let (_, info) = s.req("GET", "/collections/c", None);
    assert_eq!(info["result"]["payload_schema"]["i"]["data_type"], "integer", "{info}");
    let filtered =
        json!({"filter": {"must": [{"key": "i", "range": {"gte": 120, "lt": 400}}]}}).to_string();
    let (_, a) = p.req("POST", "/collections/c/points/count", Some(&filtered));
    let (_, b) = s.req("POST", "/collections/c/points/count", Some(&filtered));
    assert!(a["result"]["count"].as_u64().unwrap_or(0) > 0, "{a}");
    assert_eq!(a["result"]["count"], b["result"]["count"], "{a} {b}");
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
    wait_log(&p, "refuses writes from now on");
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
    wait_log(&old, "rejoin:");
    assert_eq!(status(&old)["role"], "standby");
    assert_eq!(status(&old)["epoch"], 2);
    assert_eq!(answers(&old, "c"), answers(&s, "c"));
    assert_eq!(old.req("GET", "/collections/c/points/6050", None).0, 200);
}

/// Writers upserting batches of 20 new points until the primary dies;
/// returns the acknowledged batches' first ids.
fn burst(p: &Server, stop: &AtomicBool, acked: &std::sync::Mutex<Vec<u64>>, writer: u64) {
    let mut b = 0u64;
    let t = Instant::now();
    while !stop.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(30) {
        let first = writer * 1_000_000 + b * 20;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(first);
        let points: Vec<Value> = (first..first + 20)
            .map(|i| json!({"id": i, "vector": vector(&mut rng), "payload": {"w": writer}}))
            .collect();
        match common::try_request(
            &p.addr,
            "PUT",
            "/collections/c/points?wait=true",
            Some(json!({"points": points}).to_string().as_bytes()),
            &[],
        ) {
            Ok((200, _)) => acked.lock().expect("acked").push(first),
            Ok(_) => {}
            Err(_) => return,
        }
        b += 1;
    }
}

/// Acknowledged batches missing on `s` (every point of a batch checked),
/// and whether the present ones are found by a search for their vector.
fn missing_batches(s: &Server, acked: &[u64]) -> usize {
    let mut missing = 0;
    for chunk in acked.chunks(200) {
        let ids: Vec<u64> = chunk.iter().flat_map(|&f| f..f + 20).collect();
        let (st, v) =
            s.req("POST", "/collections/c/points", Some(&json!({"ids": ids}).to_string()));
        assert_eq!(st, 200, "{v}");
        let got: BTreeSet<u64> = v["result"]
            .as_array()
            .expect("points")
            .iter()
            .filter_map(|p| p["id"].as_u64())
            .collect();
        for &f in chunk {
            let n = (f..f + 20).filter(|i| got.contains(i)).count();
            assert!(n == 0 || n == 20, "batch {f} is half there ({n} of 20 points)");
            if n == 0 {
                missing += 1;
            }
        }
    }
    // The last acknowledged points are searchable (their own vector finds them).
    for &f in acked.iter().rev().take(10) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(f);
        let v = vector(&mut rng);
        let q = json!({"query": v, "limit": 1, "params": {"hnsw_ef": 200}});
        let (st, r) = s.req("POST", "/collections/c/points/query", Some(&q.to_string()));
        assert_eq!(st, 200, "{r}");
        if !r["result"]["points"][0]["id"].is_null() && missing == 0 {
            assert_eq!(r["result"]["points"][0]["id"], f, "point {f} found by its vector");
        }
    }
    missing
}

fn kill_mid_burst(mode: &str) -> (usize, usize, u64, usize) {
    let (dp, ds) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let mut p = primary(dp.path(), &[("BASALT_REPLICATION_MODE", mode)]);
    create(&p, "c");
    // Through a proxy, so the link can stall while writes go on.
    let proxy = Proxy::start(&p.repl_addr());
    let s = standby(ds.path(), &proxy.addr, &[]);
    let (st, v) = upsert(&p, "c", 0..100, 1);
    assert_eq!(st, 200, "{v}");
    wait_caught_up(&p, &s, Duration::from_secs(60));
    let stop = AtomicBool::new(false);
    let acked = std::sync::Mutex::new(Vec::new());
    let (mut lag, mut acked_at_reading) = (0u64, 0usize);
    std::thread::scope(|sc| {
        for w in 1..=2 {
            let (p, stop, acked) = (&p, &stop, &acked);
            sc.spawn(move || burst(p, stop, acked, w));
        }
        // Let the burst run, stall the link (sync: writes wait; async: they
        // are acknowledged and pile up), read the lag, kill -9 at once.
        std::thread::sleep(Duration::from_millis(800));
        proxy.stalled.store(true, Ordering::Release);
        std::thread::sleep(Duration::from_millis(700));
        let st = status(&p);
        acked_at_reading = acked.lock().expect("acked").len();
        lag = st["collections"]["c"]["lag_records"].as_u64().expect("lag_records");
        p.signal(9);
        stop.store(true, Ordering::Release);
    });
    let _ = p.wait_exit(Duration::from_secs(10));
    drop(proxy);
    let acked = acked.into_inner().expect("acked");
    assert!(acked.len() > 10, "the burst wrote ({} batches acknowledged)", acked.len());
    let (r, took) = promote(&s);
    assert!(took < Duration::from_secs(5), "promotion took {took:?}");
    assert_eq!(r["epoch"], 2);
    let lost = missing_batches(&s, &acked);
    eprintln!(
        "{mode}: {} batches acknowledged, {lost} missing after promotion; lag read before the kill: \
         {lag} records with {acked_at_reading} acknowledged",
        acked.len()
    );
    (acked.len(), lost, lag, acked.len() - acked_at_reading)
}

#[test]
fn sync_mode_kill_9_of_the_primary_loses_no_acknowledged_write() {
    let (acked, lost, _, _) = kill_mid_burst("sync");
    assert!(acked > 0);
    assert_eq!(lost, 0, "sync mode: every acknowledged batch is on the promoted standby");
}

#[test]
fn async_mode_loses_at_most_what_the_lag_said() {
    let (_, lost, lag, after) = kill_mid_burst("async");
    assert!(
        lost as u64 <= lag + after as u64,
        "async: lost {lost} batches; the lag was {lag} records and {after} batches were acknowledged after reading it"
    );
}

#[test]
fn sync_mode_without_a_standby_fails_or_degrades_as_configured() {
    let d = tempfile::tempdir().expect("tmp");
    let p = primary(
        d.path(),
        &[("BASALT_REPLICATION_MODE", "sync"), ("BASALT_REPLICATION_SYNC_TIMEOUT_MS", "300")],
    );
    create(&p, "c");
    let t = Instant::now();
    let (st, v) = upsert(&p, "c", 0..5, 1);
    assert_eq!(st, 503, "fail mode: {v}");
    assert!(t.elapsed() >= Duration::from_millis(300), "it waited the timeout");
    assert!(v["status"]["error"].as_str().unwrap_or_default().contains("did not confirm"), "{v}");
    assert_eq!(count(&p, "c"), 5, "the write stays durable on the primary");
    drop(p);

    let (dp, ds) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let p = primary(
        dp.path(),
        &[
            ("BASALT_REPLICATION_MODE", "sync"),
            ("BASALT_REPLICATION_SYNC_TIMEOUT_MS", "300"),
            ("BASALT_REPLICATION_SYNC_ON_TIMEOUT", "degrade"),
        ],
    );
    create(&p, "c");
    let (st, v) = upsert(&p, "c", 0..5, 1);
    assert_eq!(st, 200, "degrade mode: {v}");
    assert_eq!(status(&p)["sync_state"], "degraded");
    assert!(metrics_text(&p).contains("basalt_replication_sync_degraded 1"));
    wait_log(&p, "degraded to async");
    let t = Instant::now();
    let (st, _) = upsert(&p, "c", 5..10, 2);
    assert_eq!(st, 200);
    assert!(t.elapsed() < Duration::from_millis(300), "degraded writes do not wait");
    // A standby that catches up restores sync mode.
    let s = standby(ds.path(), &p.repl_addr(), &[]);
    wait_caught_up(&p, &s, Duration::from_secs(60));
    let t = Instant::now();
    while status(&p)["sync_state"] != "sync" {
        assert!(t.elapsed() < Duration::from_secs(10), "sync restored: {}", status(&p));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, _) = upsert(&p, "c", 10..15, 3);
    assert_eq!(st, 200);
    wait_log(&p, "synchronous replication restored");
}

/// A TCP proxy between standby and primary that can stall (stop
/// forwarding) and reset (close every connection).
struct Proxy {
    addr: String,
    stalled: Arc<AtomicBool>,
    /// Resets every connection once this many more bytes went from the
    /// primary to the standby (u64::MAX: never).
    cut_after: Arc<AtomicU64>,
    conns: Arc<std::sync::Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        let (stalled, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let conns: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
        let cut_after = Arc::new(AtomicU64::new(u64::MAX));
        let (st, sp, cs, up) =
            (Arc::clone(&stalled), Arc::clone(&stop), Arc::clone(&conns), upstream.to_string());
        let cut = Arc::clone(&cut_after);
        std::thread::spawn(move || {
            let t = Instant::now();
            while !sp.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(300) {
                let Ok((a, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Ok(b) = TcpStream::connect(&up) else { continue };
                a.set_nonblocking(false).expect("blocking");
                for (from, to, down) in [(&a, &b, false), (&b, &a, true)] {
                    let (mut from, mut to) =
                        (from.try_clone().expect("clone"), to.try_clone().expect("clone"));
                    let (st, cut, cs) = (Arc::clone(&st), Arc::clone(&cut), Arc::clone(&cs));
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        loop {
                            while st.load(Ordering::Acquire) {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if down {
                                        let left = cut.load(Ordering::Acquire);
                                        if left != u64::MAX {
                                            if (n as u64) >= left {
                                                cut.store(u64::MAX, Ordering::Release);
                                                for c in cs.lock().expect("conns").drain(..) {
                                                    let _ = c.shutdown(std::net::Shutdown::Both);
                                                }
                                                break;
                                            }
                                            cut.store(left - n as u64, Ordering::Release);
                                        }
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                cs.lock().expect("conns").extend([a, b]);
            }
        });
        Proxy { addr, stalled, cut_after, conns, stop }
    }

    fn reset(&self) {
        for c in self.conns.lock().expect("conns").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.stalled.store(false, Ordering::Release);
        self.reset();
    }
}

#[test]
fn a_link_that_stalls_and_resets_heals_and_the_answers_match() {
    let (dp, ds) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let p = primary(dp.path(), &[]);
    create(&p, "c");
    let (st, v) = upsert(&p, "c", 0..500, 1);
    assert_eq!(st, 200, "{v}");
    let proxy = Proxy::start(&p.repl_addr());
    let s = standby(ds.path(), &proxy.addr, &[]);
    wait_caught_up(&p, &s, Duration::from_secs(60));
    let stop = AtomicBool::new(false);
    let batches = AtomicU64::new(0);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut b = 0u64;
            while !stop.load(Ordering::Acquire) && b < 2_000 {
                let first = 10_000 + b * 20;
                let (st, v) = upsert(&p, "c", first..first + 20, first);
                assert_eq!(st, 200, "{v}");
                if b % 5 == 4 {
                    let ids: Vec<u64> = (0..4).map(|i| (b * 13 + i * 101) % 500).collect();
                    let (st, _) = p.req(
                        "POST",
                        "/collections/c/points/delete?wait=true",
                        Some(&json!({"points": ids}).to_string()),
                    );
                    assert_eq!(st, 200);
                }
                b += 1;
                batches.store(b, Ordering::Release);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let steps: [(&str, u64); 7] = [
            ("pass", 400),
            ("stall", 2500),
            ("pass", 400),
            ("reset", 400),
            ("stall", 1200),
            ("reset", 300),
            ("pass", 300),
        ];
        for (what, ms) in steps {
            match what {
                "stall" => proxy.stalled.store(true, Ordering::Release),
                "reset" => {
                    proxy.stalled.store(false, Ordering::Release);
                    proxy.reset();
                }
                _ => proxy.stalled.store(false, Ordering::Release),
            }
            std::thread::sleep(Duration::from_millis(ms));
        }
        stop.store(true, Ordering::Release);
    });
    proxy.stalled.store(false, Ordering::Release);
    assert!(batches.load(Ordering::Acquire) > 20, "writes went on during the faults");
    wait_caught_up(&p, &s, Duration::from_secs(60));
    assert!(s.log().matches("following the primary").count() >= 2, "it reconnected: {}", s.log());
    assert_eq!(count(&s, "c"), count(&p, "c"));
    assert_eq!(answers(&s, "c"), answers(&p, "c"), "the standby answers as the primary");
}

#[test]
fn a_standby_behind_the_retention_cap_takes_a_new_base_copy() {
    let (dp, ds) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let p = primary(
        dp.path(),
        &[
            ("BASALT_REPLICATION_RETENTION_BYTES_MAX", "1048576"),
            ("BASALT_COLLECTIONS_WAL_SEGMENT_BYTES", "65536"),
            ("BASALT_COLLECTIONS_DELTA_POINTS_MERGE", "400"),
        ],
    );
    create(&p, "c");
    let (st, v) = upsert(&p, "c", 0..300, 1);
    assert_eq!(st, 200, "{v}");
    let mut s = standby(ds.path(), &p.repl_addr(), &[]);
    wait_caught_up(&p, &s, Duration::from_secs(60));
    let behind = status(&s)["collections"]["c"]["applied_lsn"].as_u64().expect("lsn");
    s.signal(15);
    assert!(s.wait_exit(Duration::from_secs(30)).success());
    // About 2.5 MB of WAL while it is away (1 KiB payloads), merges on.
    let pad = "x".repeat(1024);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let write = |first: u64, rng: &mut rand_chacha::ChaCha8Rng| {
        let points: Vec<Value> = (first..first + 250)
            .map(|i| json!({"id": i, "vector": vector(rng), "payload": {"pad": pad}}))
            .collect();
        let (st, v) = p.req(
            "PUT",
            "/collections/c/points?wait=true",
            Some(&json!({"points": points}).to_string()),
        );
        assert_eq!(st, 200, "{v}");
    };
    for b in 0..10 {
        write(1000 + b * 250, &mut rng);
    }
    wait_log(&p, "fell behind replication.retention_bytes_max");
    assert!(metrics_text(&p).contains("basalt_replication_standby_lost_total 1"));
    // Merges now remove the WAL the standby would need.
    let t = Instant::now();
    let mut b = 10;
    loop {
        let first_seg = std::fs::read_dir(dp.path().join("c/wal"))
            .expect("wal")
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".seg")?.parse::<u64>().ok())
            .min()
            .unwrap_or(0);
        if first_seg > behind + 1 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the WAL was not trimmed (first segment {first_seg})"
        );
        write(1000 + b * 250, &mut rng);
        b += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = standby(ds.path(), &p.repl_addr(), &[]);
    wait_caught_up(&p, &s, Duration::from_secs(60));
    wait_log(&p, "a new base copy");
    wait_log(&s, "base copy installed");
    assert_eq!(count(&s, "c"), count(&p, "c"));
    assert_eq!(answers(&s, "c"), answers(&p, "c"));
}

#[test]
fn a_base_copy_cut_mid_way_resumes_where_it_stopped() {
    let (dp, ds) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let p = primary(dp.path(), &[("BASALT_COLLECTIONS_DELTA_POINTS_MERGE", "1500")]);
    create(&p, "c");
    for b in 0..4 {
        let (st, v) = upsert(&p, "c", b * 500..(b + 1) * 500, b);
        assert_eq!(st, 200, "{v}");
    }
    let proxy = Proxy::start(&p.repl_addr());
    // The first connection is cut 3 MB into the copy.
    proxy.cut_after.store(3 << 20, Ordering::Release);
    let s = standby(ds.path(), &proxy.addr, &[]);
    wait_caught_up(&p, &s, Duration::from_secs(60));
    wait_log(&p, "resuming a base copy");
    assert_eq!(s.log().matches("base copy installed").count(), 1, "{}", s.log());
    assert_eq!(count(&s, "c"), 2000);
    assert_eq!(answers(&s, "c"), answers(&p, "c"));
}

#[test]
fn a_wrong_secret_and_a_bad_checksum_are_refused_and_logged() {
    let d = tempfile::tempdir().expect("tmp");
    let p = primary(d.path(), &[]);
    let hello = |secret: &str| frame::Hello {
        secret: secret.into(),
        node: "intruder".into(),
        positions: vec![],
        resume: vec![],
    };
    let mut c = TcpStream::connect(p.repl_addr()).expect("connect");
    frame::write_json(&mut c, Kind::Hello, 1, &hello("not-the-secret-at-all")).expect("send");
    let f = frame::read(&mut c).expect("an answer");
    assert_eq!(f.kind, Kind::Refuse);
    assert!(f.json::<frame::Refusal>().expect("refusal").message.contains("authentication failed"));
    wait_log(&p, "a standby with a wrong secret: refused");
    // The right secret in a frame whose checksum does not match.
    let mut bytes =
        frame::encode(Kind::Hello, 1, 0, &serde_json::to_vec(&hello(SECRET)).expect("json"));
    let last = bytes.len() - 3;
    bytes[last] ^= 0x20;
    let mut c = TcpStream::connect(p.repl_addr()).expect("connect");
    c.write_all(&bytes).expect("send");
    let f = frame::read(&mut c).expect("an answer");
    assert_eq!(f.kind, Kind::Refuse);
    assert!(f.json::<frame::Refusal>().expect("refusal").message.contains("checksum"));
    wait_log(&p, "frame checksum");
    let m = metrics_text(&p);
    assert!(m.contains("basalt_replication_refused_total{reason=\"auth\"} 1"), "{m}");
    assert!(m.contains("basalt_replication_refused_total{reason=\"bad_frame\"} 1"), "{m}");
    assert!(status(&p)["standby"].is_null(), "nobody was let in");
}

/// A primary played by the test, for what a real one never sends.
#[test]
fn a_standby_never_follows_nor_applies_a_lower_epoch() {
    use basalt::collection::batch::{UpsertPoint, encode_upsert};
    use basalt::wal::{Record, RecordKind};
    let ds = tempfile::tempdir().expect("tmp");
    let fake = TcpListener::bind("127.0.0.1:0").expect("bind");
    let fake_addr = fake.local_addr().expect("addr").to_string();
    // A standby at epoch 2 holding an empty collection c.
    let cfg = basalt::collection::config::CollectionConfig::new(
        DIM as u32,
        basalt::distance::Metric::L2,
        basalt::element::ElementType::F32,
    );
    basalt::collection::Collection::create(&ds.path().join("c"), &cfg).expect("create");
    let uid = u64::from_str_radix(
        std::fs::read_to_string(ds.path().join("c/uid")).expect("uid").trim(),
        16,
    )
    .expect("hex");
    std::fs::write(
        ds.path().join("replication.state"),
        json!({"epoch": 2, "role": "standby"}).to_string(),
    )
    .expect("state");
    let s = standby(ds.path(), &fake_addr, &[]);
    let body = encode_upsert(
        basalt::element::ElementType::F32,
        DIM,
        &[UpsertPoint {
            id: basalt::collection::ids::ExternalId::Num(7),
            vector: vec![0u8; DIM * 4],
            payload: None,
        }],
    )
    .expect("batch");
    let wal = frame::encode_wal("c", &[Record { lsn: 1, kind: RecordKind::UpsertBatch, body }]);
    let welcome = frame::Welcome {
        http: "127.0.0.1:1".into(),
        history: vec![],
        collections: vec![frame::CollectionId { name: "c".into(), uid }],
    };
    let session = |welcome_epoch: u64, wal_frame: Option<Vec<u8>>| {
        fake.set_nonblocking(false).expect("blocking");
        let (mut c, _) = fake.accept().expect("the standby connects");
        c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let h = frame::read(&mut c).expect("hello");
        assert_eq!((h.kind, h.epoch), (Kind::Hello, 2));
        frame::write_json(&mut c, Kind::Welcome, welcome_epoch, &welcome).expect("welcome");
        if let Some(w) = wal_frame {
            c.write_all(&w).expect("wal");
        }
        // Read until the standby hangs up or reports.
        let mut fed = Vec::new();
        while let Ok(f) = frame::read(&mut c) {
            if f.kind == Kind::Feedback {
                fed.push(
                    f.json::<frame::Feedback>().expect("feedback").positions["c"].lsns.applied,
                );
                if fed.len() >= 2 {
                    break;
                }
            }
        }
        fed
    };
    // 1. A primary of a lower epoch: not followed.
    session(1, None);
    wait_log(&s, "a node never follows a lower epoch");
    // 2. Epoch 2, but a WAL frame stamped epoch 1: refused, not applied.
    session(2, Some(frame::encode(Kind::Wal, 1, 1, &wal)));
    wait_log(&s, "a frame from a lower epoch: refused");
    assert_eq!(count(&s, "c"), 0);
    // 3. A WAL frame whose checksum fails: refused, not applied.
    let mut bad = frame::encode(Kind::Wal, 2, 1, &wal);
    let n = bad.len();
    bad[n - 1] ^= 1;
    session(2, Some(bad));
    wait_log(&s, "a bad frame from the primary");
    assert_eq!(count(&s, "c"), 0);
    // 4. The same record, well formed and of epoch 2: applied.
    let fed = session(2, Some(frame::encode(Kind::Wal, 2, 1, &wal)));
    assert!(fed.contains(&1), "the standby applied lsn 1: {fed:?}");
    assert_eq!(count(&s, "c"), 1);
}

/// A collection deleted and made again under its old name is a new
/// collection to sync mode: the standby's position in the old one does not
/// acknowledge writes to the new one.
#[test]
fn sync_mode_does_not_confuse_a_collection_made_again_under_its_name() {
    let (dp, ds) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
    let p = primary(
        dp.path(),
        &[("BASALT_REPLICATION_MODE", "sync"), ("BASALT_REPLICATION_SYNC_TIMEOUT_MS", "500")],
    );
    create(&p, "c");
    let proxy = Proxy::start(&p.repl_addr());
    let s = standby(ds.path(), &proxy.addr, &[]);
    wait_caught_up(&p, &s, Duration::from_secs(60));
    for b in 0..5 {
        let (st, v) = upsert(&p, "c", b * 10..(b + 1) * 10, b);
        assert_eq!(st, 200, "{v}");
    }
    // The standby stops hearing anything; c is made again and written to.
    proxy.stalled.store(true, Ordering::Release);
    assert_eq!(p.req("DELETE", "/collections/c", None).0, 200);
    create(&p, "c");
    let (st, v) = upsert(&p, "c", 0..1, 9);
    assert_eq!(st, 503, "the new c's write is not confirmed by the standby: {v}");
    proxy.stalled.store(false, Ordering::Release);
    proxy.reset();
    wait_caught_up(&p, &s, Duration::from_secs(60));
    let (st, v) = upsert(&p, "c", 1..2, 10);
    assert_eq!(st, 200, "confirmed once the standby has the new c: {v}");
    assert_eq!(count(&s, "c"), 2);
}
