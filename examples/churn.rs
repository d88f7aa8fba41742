//! Bench: recall under churn. A collection starts from the first `start`
//! rows of a vector file (imported), then runs `cycles` cycles of: delete
//! `frac` of the live points (seeded random), upsert as many unused rows,
//! merge. After every cycle (or every `--every` cycles) it compares the
//! collection with a fresh build of exactly the live points (same R, L,
//! alpha, PQ bytes): recall@10 at a fixed L against exact ground truth,
//! and sectors read per query; and the merge's time beside the build's.
//! One JSON line per cycle on stdout.
//!
//! `PLACEMENT` is `row` (the default: records in row order) or `packed`
//! (neighbours share sectors, as `basalt build` and `basalt import` write by
//! default); the collection and the fresh builds use the same.
//!
//!     cargo run --release --example churn -- DATA QUERIES WORKDIR START CYCLES FRAC L [EVERY] [R] [PQ] [PLACEMENT]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use basalt::collection::ids::ExternalId;
use basalt::collection::{Collection, CollectionOptions, PointIn};
use basalt::distance::Metric;
use basalt::format::graph::Placement;
use basalt::index::build::{BuildOptions, build_index};
use basalt::search::{Index, OpenOptions, SearchParams};
use basalt::vecfile::{VectorFile, VectorWriter};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn write_rows(path: &Path, rows: &[&[f32]], dim: usize) -> Result<()> {
    let mut w = VectorWriter::<f32>::create(path, dim)?;
    for r in rows {
        w.append(r)?;
    }
    w.finish()?;
    Ok(())
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 7 {
        bail!(
            "usage: churn DATA QUERIES WORKDIR START CYCLES FRAC L [EVERY] [R] [PQ] [row|packed]"
        );
    }
    let (data, queries, work) = (PathBuf::from(&a[0]), PathBuf::from(&a[1]), PathBuf::from(&a[2]));
    let start: usize = a[3].parse()?;
    let cycles: usize = a[4].parse()?;
    let frac: f64 = a[5].parse()?;
    let l: usize = a[6].parse()?;
    let every: usize = a.get(7).map_or(Ok(1), |s| s.parse())?;
    let r: usize = a.get(8).map_or(Ok(64), |s| s.parse())?;
    let pq: usize = a.get(9).map_or(Ok(32), |s| s.parse())?;
    let placement = match a.get(10).map(String::as_str) {
        None | Some("row") => Placement::RowOrder,
        Some("packed") => Placement::Packed,
        Some(other) => bail!("placement {other:?}: row or packed"),
    };
    let file = VectorFile::open(&data)?;
    let dim = file.dim();
    let n = file.len() as usize;
    let mut base = Vec::new();
    file.read_rows_f32(0, n, &mut base)?;
    let row = |i: usize| &base[i * dim..(i + 1) * dim];
    let qfile = VectorFile::open(&queries)?;
    let mut qs = Vec::new();
    qfile.read_rows_f32(0, qfile.len() as usize, &mut qs)?;
    let nq = qfile.len() as usize;
    let per_cycle = (start as f64 * frac) as usize;
    if start + cycles * per_cycle > n {
        bail!("{n} rows: not enough for {start} + {cycles} x {per_cycle}");
    }
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let opts = BuildOptions {
        metric: Metric::L2,
        graph: basalt::vamana::BuildParams { degree_max: r, list_size: 100, ..Default::default() },
        pq_chunks: pq,
        placement,
        ..Default::default()
    };
    let coll = work.join("coll");
    let first = work.join("first.fbin");
    write_rows(&first, &(0..start).map(row).collect::<Vec<_>>(), dim)?;
    let t = Instant::now();
    basalt::collection::import::import(&first, None, None, &coll, &opts)?;
    eprintln!("imported {start} in {:.1}s", t.elapsed().as_secs_f64());
    let c =
        Collection::open(&coll, CollectionOptions { no_auto_merge: true, ..Default::default() })?;
    let mut live: Vec<usize> = (0..start).collect();
    let mut next = start;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let params = SearchParams { k: 10, list_size: l, beam_width: 4 };
    for cycle in 1..=cycles {
        live.shuffle(&mut rng);
        let del: Vec<usize> = live.split_off(live.len() - per_cycle);
        let ids: Vec<ExternalId> = del.iter().map(|&i| ExternalId::Num(i as u64)).collect();
        for chunk in ids.chunks(10_000) {
            c.delete(chunk)?;
        }
        let new: Vec<usize> = (next..next + per_cycle).collect();
        next += per_cycle;
        for chunk in new.chunks(1000) {
            let pts: Vec<PointIn> = chunk
                .iter()
                .map(|&i| PointIn {
                    id: ExternalId::Num(i as u64),
                    vector: row(i).to_vec(),
                    payload: None,
                })
                .collect();
            c.upsert(&pts)?;
        }
        live.extend(new);
        let t = Instant::now();
        let rep = c.merge_now(&basalt::collection::merge::NoProgress)?;
        let merge_s = t.elapsed().as_secs_f64();
        if cycle % every != 0 && cycle != cycles {
            eprintln!("cycle {cycle}: merge {merge_s:.1}s");
            continue;
        }
        // Exact ground truth of the live points.
        live.sort_unstable();
        let lf = work.join("live.fbin");
        write_rows(&lf, &live.iter().map(|&i| row(i)).collect::<Vec<_>>(), dim)?;
        let lvf = VectorFile::open(&lf)?;
        let gt = basalt::groundtruth::exact_knn(&lvf, &qfile, 10, Metric::L2, &|_| {})?;
        let truth = |q: usize| -> Vec<u64> {
            gt.ids[q * 10..q * 10 + 10].iter().map(|&i| live[i as usize] as u64).collect()
        };
        // The collection.
        let (mut hit, mut reads) = (0usize, 0u64);
        for q in 0..nq {
            let (hits, st) = c.search_stats(&qs[q * dim..(q + 1) * dim], &params, false, None)?;
            let want = truth(q);
            hit += hits
                .iter()
                .filter(|h| matches!(h.id, ExternalId::Num(n) if want.contains(&n)))
                .count();
            reads += st.sector_reads;
        }
        // A fresh build of the same points.
        let fresh = work.join("fresh");
        let _ = std::fs::remove_dir_all(&fresh);
        let t = Instant::now();
        build_index(&lf, &fresh, &opts, &())?;
        let build_s = t.elapsed().as_secs_f64();
        let idx = Index::open(&fresh, &OpenOptions::default())?;
        let mut s = idx.searcher()?;
        // A packed build numbers its nodes apart from its rows.
        let rows = idx.rows()?;
        let row_of = |node: u32| rows.as_ref().map_or(node, |r| r[node as usize]) as usize;
        let (mut fhit, mut freads) = (0usize, 0u64);
        for q in 0..nq {
            let res = idx.search(&mut s, &qs[q * dim..(q + 1) * dim], &params)?;
            let want = truth(q);
            fhit += res.ids.iter().filter(|&&i| want.contains(&(live[row_of(i)] as u64))).count();
            freads += res.stats.sector_reads;
        }
        let st = c.stats();
        println!(
            "{}",
            serde_json::json!({
                "cycle": cycle, "live": live.len(), "slots": st.disk_slots, "free_slots": st.disk_free_slots,
                "L": l, "recall": hit as f64 / (10 * nq) as f64, "fresh_recall": fhit as f64 / (10 * nq) as f64,
                "reads": reads as f64 / nq as f64, "fresh_reads": freads as f64 / nq as f64,
                "merge_s": merge_s, "fresh_build_s": build_s, "retrained": rep.retrained, "relocated": rep.relocated,
                "merge_phases": rep.phases,
            })
        );
        let _ = rng.random::<u8>();
    }
    Ok(())
}
