//! Bench: write throughput and search under ingest. On an empty collection
//! (fsync durability, no background merge): upserts per second with one
//! writer in batches of `batch`, then with `writers` concurrent writers
//! (group commit: they share fsyncs); the delta's estimated memory per
//! million points; with batches of one point, one writer against
//! `writers` (the fsync dominates there); then, after a merge, search QPS and p99 read-only and
//! while one writer ingests at half the single-writer rate. JSON on stdout.
//!
//!     cargo run --release --example ingest -- DATA QUERIES WORKDIR N BATCH WRITERS SECONDS

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use basalt::collection::config::CollectionConfig;
use basalt::collection::ids::ExternalId;
use basalt::collection::{Collection, CollectionOptions, PointIn};
use basalt::distance::Metric;
use basalt::element::ElementType;
use basalt::search::SearchParams;
use basalt::vecfile::VectorFile;

/// Resident set size now (VmRSS), in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn points(base: &[f32], dim: usize, rows: std::ops::Range<usize>, id0: u64) -> Vec<PointIn> {
    rows.map(|i| PointIn {
        id: ExternalId::Num(id0 + i as u64),
        vector: base[i * dim..(i + 1) * dim].to_vec(),
        payload: None,
    })
    .collect()
}

/// Searches `queries` round-robin for `secs`; returns (QPS, p99 ms).
fn search_for(c: &Collection, qs: &[f32], dim: usize, secs: f64) -> Result<(f64, f64)> {
    let params = SearchParams { k: 10, list_size: 60, beam_width: 4 };
    let nq = qs.len() / dim;
    let mut lat = Vec::new();
    let t = Instant::now();
    let mut i = 0;
    while t.elapsed().as_secs_f64() < secs {
        let s = Instant::now();
        c.search(&qs[(i % nq) * dim..(i % nq + 1) * dim], &params, false, None)?;
        lat.push(s.elapsed().as_secs_f64() * 1e3);
        i += 1;
    }
    lat.sort_by(f64::total_cmp);
    Ok((lat.len() as f64 / t.elapsed().as_secs_f64(), lat[lat.len() * 99 / 100]))
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 7 {
        bail!("usage: ingest DATA QUERIES WORKDIR N BATCH WRITERS SECONDS");
    }
    let (data, queries, work) = (PathBuf::from(&a[0]), PathBuf::from(&a[1]), PathBuf::from(&a[2]));
    let (n, batch, writers): (usize, usize, usize) = (a[3].parse()?, a[4].parse()?, a[5].parse()?);
    let secs: f64 = a[6].parse()?;
    let f = VectorFile::open(&data)?;
    let dim = f.dim();
    let mut base = Vec::new();
    f.read_rows_f32(0, n.min(f.len() as usize), &mut base)?;
    let n = base.len() / dim;
    let qf = VectorFile::open(&queries)?;
    let mut qs = Vec::new();
    qf.read_rows_f32(0, qf.len() as usize, &mut qs)?;
    let _ = std::fs::remove_dir_all(&work);
    let mut cfg = CollectionConfig::new(dim as u32, Metric::L2, ElementType::F32);
    cfg.auto_merge = false;
    cfg.delta_bytes_max = 8 << 30;
    Collection::create(&work, &cfg)?;
    let c =
        Collection::open(&work, CollectionOptions { no_auto_merge: true, ..Default::default() })?;
    // One writer.
    let rss0 = rss_bytes();
    let t = Instant::now();
    let mut row = 0;
    while row < n {
        let m = batch.min(n - row);
        c.upsert(&points(&base, dim, row..row + m, 0))?;
        row += m;
    }
    let one = n as f64 / t.elapsed().as_secs_f64();
    let delta_bytes = c.stats().delta_bytes;
    let rss_growth = rss_bytes().saturating_sub(rss0);
    // Concurrent writers (other ids).
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = (0..writers)
            .map(|w| {
                let (c, base) = (&c, &base);
                s.spawn(move || -> Result<()> {
                    let mut row = w * batch;
                    while row < n {
                        let m = batch.min(n - row);
                        c.upsert(&points(base, dim, row..row + m, 10_000_000))?;
                        row += writers * batch;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().expect("writer thread")?;
        }
        Ok(())
    })?;
    let many = n as f64 / t.elapsed().as_secs_f64();
    // Batches of one point for `secs`: one writer, then `writers` writers.
    // Here the fsync dominates, so this is where group commit shows.
    let small = |threads: usize, id0: u64| -> Result<f64> {
        let t = Instant::now();
        let total = std::thread::scope(|s| -> Result<usize> {
            let hs: Vec<_> = (0..threads)
                .map(|w| {
                    let (c, base) = (&c, &base);
                    s.spawn(move || -> Result<usize> {
                        let mut k = 0usize;
                        while t.elapsed().as_secs_f64() < secs {
                            let r = (w + k * threads) % n;
                            let mut p = points(base, dim, r..r + 1, 0);
                            p[0].id = ExternalId::Num(id0 + (w + k * threads) as u64);
                            c.upsert(&p)?;
                            k += 1;
                        }
                        Ok(k)
                    })
                })
                .collect();
            let mut sum = 0;
            for h in hs {
                sum += h.join().expect("writer thread")?;
            }
            Ok(sum)
        })?;
        Ok(total as f64 / t.elapsed().as_secs_f64())
    };
    let single_one = small(1, 30_000_000)?;
    let single_many = small(writers, 40_000_000)?;
    let t = Instant::now();
    c.merge_now(&basalt::collection::merge::NoProgress)?;
    let merge_s = t.elapsed().as_secs_f64();
    let (qps_ro, p99_ro) = search_for(&c, &qs, dim, secs)?;
    // Search while one writer ingests at half the single-writer rate.
    let stop = Arc::new(AtomicBool::new(false));
    let rate = one / 2.0;
    let (qps_w, p99_w, written) = std::thread::scope(|s| -> Result<(f64, f64, usize)> {
        let h = {
            let (c, base, stop) = (&c, &base, stop.clone());
            s.spawn(move || -> Result<usize> {
                let t = Instant::now();
                let mut done = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let due = Duration::from_secs_f64(done as f64 / rate);
                    if let Some(w) = due.checked_sub(t.elapsed()) {
                        std::thread::sleep(w);
                    }
                    // Rows wrap around; ids stay new.
                    let r0 = done % (n - batch + 1);
                    let mut pts = points(base, dim, r0..r0 + batch, 0);
                    for (j, p) in pts.iter_mut().enumerate() {
                        p.id = ExternalId::Num(20_000_000 + (done + j) as u64);
                    }
                    c.upsert(&pts)?;
                    done += batch;
                }
                Ok(done)
            })
        };
        let r = search_for(&c, &qs, dim, secs);
        stop.store(true, Ordering::Relaxed);
        let done = h.join().expect("writer thread")?;
        let (q, p) = r?;
        Ok((q, p, done))
    })?;
    println!(
        "{}",
        serde_json::json!({
            "n": n, "dim": dim, "batch": batch, "writers": writers,
            "upserts_per_s_one_writer": one, "upserts_per_s_concurrent": many,
            "delta_bytes_per_million": delta_bytes as f64 / n as f64 * 1e6,
            "rss_growth_per_million": rss_growth as f64 / n as f64 * 1e6,
            "merge_s": merge_s,
            "batch1_upserts_per_s_one_writer": single_one,
            "batch1_upserts_per_s_concurrent": single_many,
            "search_qps_read_only": qps_ro, "search_p99_ms_read_only": p99_ro,
            "search_qps_ingesting": qps_w, "search_p99_ms_ingesting": p99_w,
            "ingest_rate_target": rate, "ingested_during_search": written,
            "ingest_rate_achieved": written as f64 / secs,
            "peak_rss_bytes": basalt::index::peak_rss_bytes(),
        })
    );
    Ok(())
}
