//! Bench: replication on one box, primary and standby as two real
//! `basalt serve` processes on loopback (sharing this machine's cores and
//! disk: quote it so).
//!
//! 1. Upsert throughput: `clients` connections upserting batches of 100
//!    vectors of BASE for `secs` seconds into a primary with no standby,
//!    with an async standby, and with a sync one; repetitions interleaved
//!    (none, async, sync, none, ...), medians.
//! 2. Lag at a sustained rate: one client upserting `rate` points/s (paced
//!    batches of 100) for `secs` seconds; `GET /replication` on the primary
//!    sampled every 50 ms (flush and replay lag in seconds, the age of the
//!    oldest record the standby has not flushed / applied), and each
//!    batch's last point polled on the standby from its acknowledgement
//!    until it is visible there; p50 / p99 per mode and repetition.
//! 3. Base copy: `copy_points` points ingested into a primary (their WAL,
//!    and a generation when the merge threshold passes), then a fresh
//!    standby; bytes and MB/s from the standby's log.
//!
//! Run it as
//!
//! ```text
//! cargo run --release --example repl_bench -- BASE WORKDIR \
//!     [REPS=3] [SECS=10] [CLIENTS=2] [RATE=1000] [COPY_POINTS=50000]
//! ```
//!
//! JSON lines on stdout, one per measurement; medians on stderr.

#[path = "support/http.rs"]
mod http;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use basalt::vecfile::VectorFile;
use http::{Conn, Daemon};
use serde_json::{Value, json};

const SECRET: &str = "bench-secret-0123456789";
const BATCH: usize = 100;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn pct(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[((v.len() - 1) * p) / 100] }
}

/// Upsert bodies of BATCH points each, ids from `first`, encoded up front.
fn bodies(base: &[f32], dim: usize, first: u64, n: usize) -> Vec<Vec<u8>> {
    let rows = base.len() / dim;
    (0..n)
        .map(|b| {
            let points: Vec<Value> = (0..BATCH)
                .map(|i| {
                    let id = first + (b * BATCH + i) as u64;
                    let r = (id as usize) % rows;
                    json!({"id": id, "vector": &base[r * dim..(r + 1) * dim], "payload": {"n": id}})
                })
                .collect();
            json!({"points": points}).to_string().into_bytes()
        })
        .collect()
}

struct Pair {
    primary: Daemon,
    standby: Option<Daemon>,
}

/// A standby daemon in `dir` following the primary's replication address `repl`.
fn start_standby(dir: &Path, repl: &str) -> Result<Daemon> {
    Daemon::start(
        dir,
        &[
            ("BASALT_REPLICATION_ROLE", "standby"),
            ("BASALT_REPLICATION_PRIMARY", repl),
            ("BASALT_REPLICATION_SECRET", SECRET),
            ("RUST_LOG", "info,fjall=warn,lsm_tree=warn"),
        ],
    )
}

fn pair(work: &Path, mode: &str, dim: usize, extra: &[(&str, &str)]) -> Result<Pair> {
    let (dp, ds) = (work.join("primary"), work.join("standby"));
    let _ = std::fs::remove_dir_all(&dp);
    let _ = std::fs::remove_dir_all(&ds);
    let m = if mode == "none" { "async" } else { mode };
    let mut env = vec![
        ("BASALT_REPLICATION_LISTEN", "127.0.0.1:0"),
        ("BASALT_REPLICATION_SECRET", SECRET),
        ("BASALT_REPLICATION_MODE", m),
        ("BASALT_COLLECTIONS_DELTA_POINTS_MERGE", "10000000"),
        ("RUST_LOG", "info,fjall=warn,lsm_tree=warn"),
    ];
    env.extend_from_slice(extra);
    let primary = Daemon::start(&dp, &env)?;
    let mut c = Conn::new(&primary.addr)?;
    let body = json!({"vectors": {"size": dim, "distance": "Cosine"}}).to_string();
    let (st, b) = c.call("PUT", "/collections/c", body.as_bytes())?;
    if st != 200 {
        bail!("create: {st} {}", String::from_utf8_lossy(&b));
    }
    let standby = if mode == "none" {
        None
    } else {
        let repl =
            primary.log_line("basalt: replication listening on ", Duration::from_secs(30))?;
        let s = start_standby(&ds, &repl)?;
        let t = Instant::now();
        loop {
            let (_, b) = c.call("GET", "/replication", b"")?;
            let v: Value = serde_json::from_slice(&b)?;
            if v["result"]["standby"]["state"] == "streaming" {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("the standby did not start streaming: {v}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(s)
    };
    Ok(Pair { primary, standby })
}

fn stop(p: Pair) -> Result<()> {
    if let Some(s) = p.standby {
        s.stop()?;
    }
    p.primary.stop()
}

/// Points/s acknowledged by `clients` connections in `secs` seconds.
fn throughput(addr: &str, base: &[f32], dim: usize, clients: usize, secs: u64) -> Result<f64> {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    // 200 batches per client, sent round and round (later rounds replace
    // the points: the same work in every mode).
    let per = 200;
    let all: Vec<Vec<Vec<u8>>> =
        (0..clients).map(|c| bodies(base, dim, (c as u64) << 32, per)).collect();
    let t = Instant::now();
    std::thread::scope(|sc| -> Result<()> {
        let hs: Vec<_> = all
            .iter()
            .map(|bs| {
                let (stop, done) = (&stop, &done);
                sc.spawn(move || -> Result<()> {
                    let mut c = Conn::new(addr)?;
                    for b in bs.iter().cycle() {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let (st, r) = c.call("PUT", "/collections/c/points?wait=true", b)?;
                        if st != 200 {
                            bail!("upsert: {st} {}", String::from_utf8_lossy(&r));
                        }
                        done.fetch_add(BATCH as u64, Ordering::AcqRel);
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Release);
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        }
        Ok(())
    })?;
    Ok(done.load(Ordering::Acquire) as f64 / t.elapsed().as_secs_f64())
}

/// Paced ingest at `rate` points/s; flush and replay lag samples (s).
fn lag(
    addr: &str,
    standby: &str,
    base: &[f32],
    dim: usize,
    rate: usize,
    secs: u64,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let n = rate * secs as usize / BATCH;
    let bs = bodies(base, dim, 1 << 40, n);
    let stop = AtomicBool::new(false);
    let (mut fl, mut rp) = (Vec::new(), Vec::new());
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, u64)>();
    let mut visible = Vec::new();
    std::thread::scope(|sc| -> Result<()> {
        // Each acknowledged batch's last point, polled on the standby until
        // it is there: acknowledgement to visible on the standby.
        let probe = sc.spawn(|| -> Result<Vec<f64>> {
            let mut c = Conn::new(standby)?;
            let mut out = Vec::new();
            for (acked, id) in rx {
                loop {
                    let (st, _) = c.call("GET", &format!("/collections/c/points/{id}"), b"")?;
                    if st == 200 {
                        break;
                    }
                    if acked.elapsed() > Duration::from_secs(60) {
                        bail!("point {id} not on the standby after 60 s");
                    }
                }
                out.push(acked.elapsed().as_secs_f64());
            }
            Ok(out)
        });
        let h = sc.spawn(move || -> Result<()> {
            let mut c = Conn::new(addr)?;
            let t = Instant::now();
            for (i, b) in bs.iter().enumerate() {
                let due = t + Duration::from_secs_f64((i * BATCH) as f64 / rate as f64);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
                let (st, r) = c.call("PUT", "/collections/c/points?wait=true", b)?;
                if st != 200 {
                    bail!("upsert: {st} {}", String::from_utf8_lossy(&r));
                }
                let _ = tx.send((Instant::now(), (1u64 << 40) + ((i + 1) * BATCH - 1) as u64));
            }
            Ok(())
        });
        let mut c = Conn::new(addr)?;
        while !h.is_finished() && !stop.load(Ordering::Acquire) {
            let (_, b) = c.call("GET", "/replication", b"")?;
            let v: Value = serde_json::from_slice(&b)?;
            let x = &v["result"]["collections"]["c"];
            fl.push(x["flush_lag_s"].as_f64().context("flush_lag_s")?);
            rp.push(x["replay_lag_s"].as_f64().context("replay_lag_s")?);
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Release);
        h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??;
        visible = probe.join().map_err(|_| anyhow::anyhow!("probe panicked"))??;
        Ok(())
    })?;
    Ok((fl, rp, visible))
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        bail!("usage: repl_bench BASE WORKDIR [REPS] [SECS] [CLIENTS] [RATE] [COPY_POINTS]");
    }
    let work = Path::new(&a[2]).to_path_buf();
    let arg = |i: usize, d: u64| -> Result<u64> { a.get(i).map_or(Ok(d), |s| Ok(s.parse()?)) };
    let (reps, secs, clients, rate, copy_points) = (
        arg(3, 3)?,
        arg(4, 10)?,
        arg(5, 2)? as usize,
        arg(6, 1000)? as usize,
        arg(7, 50_000)? as usize,
    );
    let bf = VectorFile::open(Path::new(&a[1]))?;
    let dim = bf.dim();
    let n = (bf.len() as usize).min(100_000);
    let mut base = Vec::new();
    bf.read_rows_f32(0, n, &mut base)?;
    std::fs::create_dir_all(&work)?;

    let mut tput: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut lags: std::collections::BTreeMap<&str, Vec<(f64, f64, f64, f64)>> = Default::default();
    for rep in 0..reps {
        for mode in ["none", "async", "sync"] {
            let p = pair(&work, mode, dim, &[])?;
            let pts = throughput(&p.primary.addr, &base, dim, clients, secs)?;
            println!(
                "{}",
                json!({"bench": "upsert", "mode": mode, "rep": rep, "clients": clients, "batch": BATCH, "points_per_s": pts})
            );
            tput.entry(mode).or_default().push(pts);
            stop(p)?;
        }
        for mode in ["async", "sync"] {
            let p = pair(&work, mode, dim, &[])?;
            let sb = &p.standby.as_ref().context("a standby")?.addr;
            let (mut fl, mut rp, mut vis) = lag(&p.primary.addr, sb, &base, dim, rate, secs)?;
            let row = (pct(&mut fl, 50), pct(&mut fl, 99), pct(&mut vis, 50), pct(&mut vis, 99));
            println!(
                "{}",
                json!({"bench": "lag", "mode": mode, "rep": rep, "rate": rate, "samples": fl.len(),
                "flush_lag_p50_s": row.0, "flush_lag_p99_s": row.1, "replay_lag_p50_s": pct(&mut rp, 50),
                "replay_lag_p99_s": pct(&mut rp, 99), "writes": vis.len(),
                "ack_to_visible_p50_s": row.2, "ack_to_visible_p99_s": row.3})
            );
            lags.entry(mode).or_default().push(row);
            stop(p)?;
        }
    }
    for (mode, v) in &tput {
        eprintln!(
            "upsert {mode:>5}: median {:.0} points/s over {} reps",
            median(v.clone()),
            v.len()
        );
    }
    for (mode, v) in &lags {
        let m = |f: fn(&(f64, f64, f64, f64)) -> f64| median(v.iter().map(f).collect());
        eprintln!(
            "lag {mode:>5} at {rate} points/s: sampled flush lag p50 {:.4} s p99 {:.4} s; ack to visible on the standby p50 {:.4} s p99 {:.4} s (medians of {} reps)",
            m(|r| r.0),
            m(|r| r.1),
            m(|r| r.2),
            m(|r| r.3),
            v.len()
        );
    }

    // Base copy: ingest into a lone primary, then a fresh standby copies it.
    let p = pair(
        &work,
        "none",
        dim,
        &[("BASALT_COLLECTIONS_DELTA_POINTS_MERGE", &copy_points.div_ceil(2).to_string())],
    )?;
    let mut c = Conn::new(&p.primary.addr)?;
    for b in bodies(&base, dim, 0, copy_points / BATCH) {
        let (st, r) = c.call("PUT", "/collections/c/points?wait=true", &b)?;
        if st != 200 {
            bail!("upsert: {st} {}", String::from_utf8_lossy(&r));
        }
    }
    // Let the merge the threshold started finish (a generation to copy).
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    loop {
        let (_, b) = c.call("GET", "/collections/c", b"")?;
        let v: Value = serde_json::from_slice(&b)?;
        if v["result"]["status"] == "green" || t.elapsed() > Duration::from_secs(600) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let repl = p.primary.log_line("basalt: replication listening on ", Duration::from_secs(10))?;
    let ds = work.join("copy");
    let _ = std::fs::remove_dir_all(&ds);
    let t = Instant::now();
    let s = start_standby(&ds, &repl)?;
    let installed = loop {
        if let Ok(g) = s.log.lock()
            && let Some(l) = g.lines().find(|l| l.contains("base copy installed"))
        {
            break l.to_string();
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("no base copy within 600 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs_total = t.elapsed().as_secs_f64();
    let field = |k: &str| -> Option<f64> {
        installed
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
    };
    let (bytes, mbps, secs_copy) = (
        field("bytes").unwrap_or(0.0),
        field("mb_per_s").unwrap_or(0.0),
        field("seconds").unwrap_or(0.0),
    );
    println!(
        "{}",
        json!({"bench": "base_copy", "points": copy_points, "bytes": bytes, "copy_seconds": secs_copy,
        "mb_per_s": mbps, "standby_start_to_installed_s": secs_total})
    );
    eprintln!(
        "base copy: {copy_points} points, {:.1} MB in {secs_copy:.2} s = {mbps:.0} MB/s (standby start to installed: {secs_total:.2} s, including the primary's snapshot)",
        bytes / 1e6
    );
    s.stop()?;
    p.primary.stop()
}
