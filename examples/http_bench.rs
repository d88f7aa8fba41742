//! Bench: the daemon's HTTP overhead, against the same collection searched
//! in-process in the same run. For each repetition (interleaved): open the
//! collection in this process and search every query at each L, one at a
//! time (latency) and from `clients` threads (throughput); then start the
//! real `basalt serve` on it and send the same queries as
//! `points/query` over keep-alive loopback connections, one at a time and
//! from `clients` connections. Then upserts: the first `upsert_points` base
//! vectors into a fresh collection in batches of 100 and of 1,000, in-process
//! and over HTTP (bodies encoded before the clock starts). JSON lines on
//! stdout, one per measurement; medians on stderr.
//!
//!     cargo run --release --example http_bench -- BASE QUERIES GT WORKDIR \
//!         [REPS=3] [LS=40,60,80,100] [CLIENTS=4] [UPSERT_POINTS=10000]
//!
//! The daemon binary is `BASALT_BIN` or target/release/basalt. Client and
//! server share the machine's cores: say so when quoting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use basalt::collection::config::CollectionConfig;
use basalt::collection::ids::ExternalId;
use basalt::collection::{Collection, CollectionOptions, PointIn};
use basalt::distance::Metric;
use basalt::element::ElementType;
use basalt::search::SearchParams;
use basalt::vecfile::VectorFile;
use serde_json::{Value, json};

#[path = "support/http.rs"]
mod http;
use http::{Conn, Daemon};

const K: usize = 10;
const BEAM: usize = 4;

fn read_gt(path: &Path) -> Result<Vec<Vec<u32>>> {
    let b = std::fs::read(path).with_context(|| path.display().to_string())?;
    if b.len() < 8 {
        bail!("{}: too short", path.display());
    }
    let n = u32::from_le_bytes(b[0..4].try_into()?) as usize;
    let k = u32::from_le_bytes(b[4..8].try_into()?) as usize;
    if b.len() < 8 + n * k * 4 {
        bail!("{}: truncated", path.display());
    }
    Ok((0..n)
        .map(|q| {
            (0..K.min(k))
                .map(|j| {
                    let o = 8 + (q * k + j) * 4;
                    u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or([0; 4]))
                })
                .collect()
        })
        .collect())
}

fn recall(gt: &[Vec<u32>], got: &[Vec<u64>]) -> f64 {
    let mut hits = 0usize;
    for (g, r) in gt.iter().zip(got) {
        hits += r.iter().filter(|id| g.contains(&(**id as u32))).count();
    }
    hits as f64 / (gt.len() * K) as f64
}

fn pct(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A keep-alive HTTP/1.1 connection.
fn ids_of(body: &[u8]) -> Result<Vec<u64>> {
    let v: Value = serde_json::from_slice(body)?;
    Ok(v["result"]["points"]
        .as_array()
        .context("points")?
        .iter()
        .filter_map(|p| p["id"].as_u64())
        .collect())
}

struct Args {
    base: PathBuf,
    queries: PathBuf,
    gt: PathBuf,
    work: PathBuf,
    reps: usize,
    ls: Vec<usize>,
    clients: usize,
    upsert_points: usize,
}

fn emit(v: Value) {
    println!("{v}");
}

/// One pass over every query, one at a time: (QPS, p50 ms, p99 ms, recall).
fn sequential(
    gt: &[Vec<u32>],
    n: usize,
    mut one: impl FnMut(usize) -> Result<Vec<u64>>,
) -> Result<(f64, f64, f64, f64)> {
    let mut lat = Vec::with_capacity(n);
    let mut got = Vec::with_capacity(n);
    let t = Instant::now();
    for q in 0..n {
        let s = Instant::now();
        got.push(one(q)?);
        lat.push(s.elapsed().as_secs_f64() * 1e3);
    }
    let qps = n as f64 / t.elapsed().as_secs_f64();
    Ok((qps, pct(&mut lat, 50), pct(&mut lat, 99), recall(gt, &got)))
}

/// Every query from `clients` threads (query i to thread i % clients): QPS.
fn concurrent<S: Send>(
    n: usize,
    clients: usize,
    make: impl Fn() -> Result<S> + Sync,
    one: impl Fn(&mut S, usize) -> Result<Vec<u64>> + Sync,
) -> Result<f64> {
    let t = Instant::now();
    std::thread::scope(|sc| -> Result<()> {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let (make, one) = (&make, &one);
                sc.spawn(move || -> Result<()> {
                    let mut s = make()?;
                    for q in (c..n).step_by(clients) {
                        one(&mut s, q)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
        }
        Ok(())
    })?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        bail!("usage: http_bench BASE QUERIES GT WORKDIR [REPS] [LS] [CLIENTS] [UPSERT_POINTS]");
    }
    let args = Args {
        base: a[1].clone().into(),
        queries: a[2].clone().into(),
        gt: a[3].clone().into(),
        work: a[4].clone().into(),
        reps: a.get(5).map_or(Ok(3), |s| s.parse())?,
        ls: a
            .get(6)
            .map_or("40,60,80,100", |s| s.as_str())
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?,
        clients: a.get(7).map_or(Ok(4), |s| s.parse())?,
        upsert_points: a.get(8).map_or(Ok(10_000), |s| s.parse())?,
    };
    let data = args.work.join("data");
    let coll_dir = data.join("bench");
    if !coll_dir.join("manifest").exists() {
        let _ = std::fs::remove_dir_all(&coll_dir);
        std::fs::create_dir_all(&data)?;
        eprintln!("importing {} (cosine, R 64, L 100, PQ 32 B) ...", args.base.display());
        let opts = basalt::index::build::BuildOptions {
            metric: Metric::Cosine,
            graph: basalt::vamana::BuildParams {
                degree_max: 64,
                list_size: 100,
                seed: 1,
                ..Default::default()
            },
            pq_chunks: 32,
            ..Default::default()
        };
        basalt::collection::import::import(&args.base, None, None, &coll_dir, &opts)?;
    }
    let qf = VectorFile::open(&args.queries)?;
    let dim = qf.dim();
    let nq = qf.len() as usize;
    let mut qs = Vec::new();
    qf.read_rows_f32(0, nq, &mut qs)?;
    let gt = read_gt(&args.gt)?;
    let gt = &gt[..nq.min(gt.len())];
    let nq = gt.len();

    let mut rows: Vec<Value> = Vec::new();
    for rep in 0..args.reps {
        // In-process.
        {
            let c = Collection::open(&coll_dir, CollectionOptions::default())?;
            for &l in &args.ls {
                let p = SearchParams { k: K, list_size: l, beam_width: BEAM };
                let search = |q: usize| -> Result<Vec<u64>> {
                    let h = c.search(&qs[q * dim..(q + 1) * dim], &p, false, None)?;
                    Ok(h.iter()
                        .filter_map(|h| if let ExternalId::Num(n) = h.id { Some(n) } else { None })
                        .collect())
                };
                let (qps1, p50, p99, rec) = sequential(gt, nq, search)?;
                let qpsc = concurrent(nq, args.clients, || Ok(()), |_, q| search(q))?;
                let v = json!({"kind": "search", "mode": "in-process", "rep": rep, "L": l, "recall": rec,
                    "qps_1": qps1, "p50_ms_1": p50, "p99_ms_1": p99, "qps_concurrent": qpsc, "clients": args.clients});
                eprintln!("{v}");
                emit(v.clone());
                rows.push(v);
            }
            c.close();
        }
        // HTTP.
        {
            let d = Daemon::start(&data, &[])?;
            for &l in &args.ls {
                let bodies: Vec<Vec<u8>> = (0..nq)
                    .map(|q| {
                        json!({"query": &qs[q * dim..(q + 1) * dim], "limit": K, "with_payload": false,
                               "params": {"hnsw_ef": l, "beam_width": BEAM}})
                        .to_string()
                        .into_bytes()
                    })
                    .collect();
                let bodies = Arc::new(bodies);
                let mut conn = Conn::new(&d.addr)?;
                let (qps1, p50, p99, rec) = sequential(gt, nq, |q| {
                    let (st, b) =
                        conn.call("POST", "/collections/bench/points/query", &bodies[q])?;
                    if st != 200 {
                        bail!("status {st}: {}", String::from_utf8_lossy(&b));
                    }
                    ids_of(&b)
                })?;
                let qpsc = concurrent(
                    nq,
                    args.clients,
                    || Conn::new(&d.addr),
                    |c, q| {
                        let (st, b) =
                            c.call("POST", "/collections/bench/points/query", &bodies[q])?;
                        if st != 200 {
                            bail!("status {st}");
                        }
                        ids_of(&b)
                    },
                )?;
                let v = json!({"kind": "search", "mode": "http", "rep": rep, "L": l, "recall": rec,
                    "qps_1": qps1, "p50_ms_1": p50, "p99_ms_1": p99, "qps_concurrent": qpsc, "clients": args.clients});
                eprintln!("{v}");
                emit(v.clone());
                rows.push(v);
            }
            d.stop()?;
        }
        // Upserts.
        let bf = VectorFile::open(&args.base)?;
        let n = args.upsert_points.min(bf.len() as usize);
        let mut base = Vec::new();
        bf.read_rows_f32(0, n, &mut base)?;
        for batch in [100usize, 1000] {
            let dir = data.join("ingest");
            let _ = std::fs::remove_dir_all(&dir);
            let mut cfg = CollectionConfig::new(dim as u32, Metric::Cosine, ElementType::F32);
            cfg.auto_merge = false;
            cfg.delta_points_merge = 10_000_000;
            Collection::create(&dir, &cfg)?;
            let c = Collection::open(
                &dir,
                CollectionOptions { no_auto_merge: true, ..Default::default() },
            )?;
            let batches: Vec<Vec<PointIn>> = (0..n)
                .step_by(batch)
                .map(|s| {
                    (s..(s + batch).min(n))
                        .map(|i| PointIn {
                            id: ExternalId::Num(i as u64),
                            vector: base[i * dim..(i + 1) * dim].to_vec(),
                            payload: None,
                        })
                        .collect()
                })
                .collect();
            let t = Instant::now();
            for b in &batches {
                c.upsert(b)?;
            }
            let inproc = n as f64 / t.elapsed().as_secs_f64();
            c.close();
            std::fs::remove_dir_all(&dir)?;
            let d = Daemon::start(&data, &[("BASALT_COLLECTIONS_DELTA_POINTS_MERGE", "10000000")])?;
            let mut conn = Conn::new(&d.addr)?;
            let (st, b) = conn.call(
                "PUT",
                "/collections/ingest",
                json!({"vectors": {"size": dim, "distance": "Cosine"}}).to_string().as_bytes(),
            )?;
            if st != 200 {
                bail!("create: {st} {}", String::from_utf8_lossy(&b));
            }
            let bodies: Vec<Vec<u8>> = batches
                .iter()
                .map(|b| {
                    let pts: Vec<Value> = b.iter().map(|p| json!({"id": p.id.to_string().parse::<u64>().unwrap_or(0), "vector": p.vector})).collect();
                    json!({"points": pts}).to_string().into_bytes()
                })
                .collect();
            let bytes: usize = bodies.iter().map(Vec::len).sum();
            let t = Instant::now();
            for b in &bodies {
                let (st, r) = conn.call("PUT", "/collections/ingest/points?wait=true", b)?;
                if st != 200 {
                    bail!("upsert: {st} {}", String::from_utf8_lossy(&r));
                }
            }
            let http = n as f64 / t.elapsed().as_secs_f64();
            conn.call("DELETE", "/collections/ingest", b"")?;
            d.stop()?;
            let v = json!({"kind": "upsert", "rep": rep, "batch": batch, "points": n,
                "in_process_per_s": inproc, "http_per_s": http, "http_body_bytes_per_point": bytes as f64 / n as f64});
            eprintln!("{v}");
            emit(v.clone());
            rows.push(v);
        }
    }
    // Medians.
    for &l in &args.ls {
        let get = |mode: &str, key: &str| -> f64 {
            median(
                rows.iter()
                    .filter(|r| r["kind"] == "search" && r["mode"] == mode && r["L"] == l)
                    .filter_map(|r| r[key].as_f64())
                    .collect(),
            )
        };
        eprintln!(
            "L {l}: recall in-process {:.4} http {:.4} | 1 client QPS {:.0} / {:.0} ({:.3}x), p50 {:.2} / {:.2} ms, p99 {:.2} / {:.2} ms | {} clients QPS {:.0} / {:.0} ({:.3}x)",
            get("in-process", "recall"),
            get("http", "recall"),
            get("in-process", "qps_1"),
            get("http", "qps_1"),
            get("http", "qps_1") / get("in-process", "qps_1"),
            get("in-process", "p50_ms_1"),
            get("http", "p50_ms_1"),
            get("in-process", "p99_ms_1"),
            get("http", "p99_ms_1"),
            args.clients,
            get("in-process", "qps_concurrent"),
            get("http", "qps_concurrent"),
            get("http", "qps_concurrent") / get("in-process", "qps_concurrent"),
        );
    }
    for batch in [100, 1000] {
        let get = |key: &str| -> f64 {
            median(
                rows.iter()
                    .filter(|r| r["kind"] == "upsert" && r["batch"] == batch)
                    .filter_map(|r| r[key].as_f64())
                    .collect(),
            )
        };
        eprintln!(
            "upserts, batches of {batch}: in-process {:.0}/s, HTTP {:.0}/s ({:.3}x)",
            get("in_process_per_s"),
            get("http_per_s"),
            get("http_per_s") / get("in_process_per_s")
        );
    }
    Ok(())
}
