//! Filtered search bench (issue 11): a collection of DATA with generated
//! payloads (a Zipf-distributed keyword, a uniform integer, a uniform
//! date-time) and payload indexes on all three; for each selectivity (50%,
//! 10%, 1%, 0.1%, 0.01%) and each kind of filter (keyword `any`, integer
//! range, date range), queries run with the planner and with plain
//! post-filtering at the same L: recall@10 against exact filtered ground
//! truth (brute force over the matching points), the fewest results any
//! query got against min(k, matches), QPS (one thread) and sector reads
//! per query. Passes are interleaved; QPS is the median of the passes.
//! One JSON line per (case, mode) on stdout (kept in bench/results/).
//!
//! cargo run --release --example filter_bench -- DATA QUERIES WORK [NQ] [REPS] [L]
//! (FILTER_BENCH_NO_INDEX=1: without the payload indexes.)

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use basalt::collection::filter::Filter;
use basalt::collection::filtered::FilterMode;
use basalt::collection::ids::ExternalId;
use basalt::collection::pindex::Schema;
use basalt::collection::{Collection, CollectionOptions};
use basalt::distance::{Distance, Metric};
use basalt::index::build::BuildOptions;
use basalt::search::SearchParams;
use basalt::vecfile::VectorFile;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const KEYWORDS: usize = 2000;
const N_MAX: i64 = 1_000_000;
/// 2020-01-01 .. 2025-01-01 in seconds.
const T0: i64 = 1_577_836_800;
const SPAN: i64 = 157_852_800;

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).expect("in range").to_rfc3339()
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        bail!("usage: filter_bench DATA QUERIES WORK [NQ] [REPS] [L]");
    }
    let (data, queries, work) = (PathBuf::from(&a[1]), PathBuf::from(&a[2]), PathBuf::from(&a[3]));
    let nq: usize = a.get(4).map_or(Ok(200), |s| s.parse())?;
    let reps: usize = a.get(5).map_or(Ok(3), |s| s.parse())?;
    let l: usize = a.get(6).map_or(Ok(100), |s| s.parse())?;
    let base = VectorFile::open(&data)?;
    let (n, dim) = (base.len() as usize, base.dim());
    let mut vs = Vec::new();
    base.read_rows_f32(0, n, &mut vs)?;
    let qf = VectorFile::open(&queries)?;
    let mut qs = Vec::new();
    qf.read_rows_f32(0, (qf.len() as usize).min(nq), &mut qs)?;
    let nq = qs.len() / dim;

    // Payloads: Zipf(1.1) keyword over KEYWORDS values, uniform integer,
    // uniform date-time (seeded).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2026);
    let weights: Vec<f64> = (1..=KEYWORDS).map(|r| 1.0 / (r as f64).powf(1.1)).collect();
    let total: f64 = weights.iter().sum();
    let cdf: Vec<f64> = weights
        .iter()
        .scan(0.0, |s, w| {
            *s += w / total;
            Some(*s)
        })
        .collect();
    let payloads: Vec<Value> = (0..n)
        .map(|_| {
            let u: f64 = rng.random();
            let kw = cdf.partition_point(|&c| c < u).min(KEYWORDS - 1);
            json!({
                "kw": format!("k{kw}"),
                "n": rng.random_range(0..N_MAX),
                "day": rfc3339(T0 + rng.random_range(0..SPAN)),
            })
        })
        .collect();
    let dir = work.join("coll");
    if !dir.join("manifest").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&work)?;
        let t = Instant::now();
        let opts = BuildOptions { metric: Metric::L2, pq_chunks: 32, ..Default::default() };
        basalt::collection::import::import(
            &data,
            None,
            Some(payloads.iter().cloned().map(Some).collect()),
            &dir,
            &opts,
        )?;
        eprintln!("import: {:.1} s", t.elapsed().as_secs_f64());
    }
    let c =
        Collection::open(&dir, CollectionOptions { no_auto_merge: true, ..Default::default() })?;
    let t = Instant::now();
    // FILTER_BENCH_NO_INDEX=1: the same filters answered from payloads alone.
    let no_index = std::env::var("FILTER_BENCH_NO_INDEX").is_ok_and(|v| v == "1");
    for (f, s) in [("kw", Schema::Keyword), ("n", Schema::Integer), ("day", Schema::Datetime)] {
        if no_index {
            c.drop_payload_index(f)?;
        } else {
            c.create_payload_index(f, s)?;
        }
    }
    eprintln!("indexes: {:.1} s", t.elapsed().as_secs_f64());

    // Keyword sets nearest each target share (greedy over the ranks, from
    // the rarest that fits), measured on the generated payloads.
    let mut freq = vec![0usize; KEYWORDS];
    for p in &payloads {
        let k: usize = p["kw"].as_str().expect("kw")[1..].parse()?;
        freq[k] += 1;
    }
    let mut cases: Vec<(String, f64, Value)> = Vec::new();
    for &target in &[0.5, 0.1, 0.01, 0.001, 0.0001] {
        let want = (target * n as f64).round() as usize;
        let mut pick = Vec::new();
        let mut got = 0usize;
        for (k, &f) in freq.iter().enumerate() {
            if f > 0 && got + f <= want + want / 10 {
                pick.push(format!("k{k}"));
                got += f;
                if got + want / 20 >= want {
                    break;
                }
            }
        }
        cases.push((
            format!("keyword {:.2}%", target * 100.0),
            target,
            json!({"must": [{"key": "kw", "match": {"any": pick}}]}),
        ));
        let hi = (target * N_MAX as f64) as i64;
        cases.push((
            format!("integer {:.2}%", target * 100.0),
            target,
            json!({"must": [{"key": "n", "range": {"gte": 250_000, "lt": 250_000 + hi}}]}),
        ));
        let span = (target * SPAN as f64) as i64;
        cases.push((
            format!("date {:.2}%", target * 100.0),
            target,
            json!({"must": [{"key": "day", "range": {"gte": rfc3339(T0 + SPAN / 4), "lt": rfc3339(T0 + SPAN / 4 + span)}}]}),
        ));
    }

    let l2 = Distance::<f32>::new(Metric::L2);
    let k = 10;
    let params = SearchParams { k, list_size: l, beam_width: 4 };
    for (name, target, fv) in &cases {
        let f = Filter::parse(fv, "filter").map_err(anyhow::Error::msg)?;
        let matching: Vec<usize> =
            (0..n).filter(|&i| f.matches(&ExternalId::Num(i as u64), &payloads[i])).collect();
        // Exact filtered ground truth.
        let truth: Vec<Vec<u64>> = (0..nq)
            .map(|qi| {
                let q = &qs[qi * dim..(qi + 1) * dim];
                let mut d: Vec<(f32, u64)> = matching
                    .iter()
                    .map(|&i| (l2.eval(q, &vs[i * dim..(i + 1) * dim]), i as u64))
                    .collect();
                d.sort_by(|a, b| a.0.total_cmp(&b.0));
                d.into_iter().take(k).map(|x| x.1).collect()
            })
            .collect();
        let modes = [FilterMode::Auto, FilterMode::Postfilter];
        let mut qps: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
        let mut rows: Vec<Value> = vec![Value::Null; modes.len()];
        for _ in 0..reps {
            for (mi, &mode) in modes.iter().enumerate() {
                let t = Instant::now();
                let (mut hit, mut want, mut reads, mut fewest, mut short) =
                    (0, 0, 0u64, usize::MAX, 0);
                let mut plans: std::collections::BTreeMap<&'static str, usize> = Default::default();
                let mut checks = 0u64;
                for qi in 0..nq {
                    let q = &qs[qi * dim..(qi + 1) * dim];
                    let (hits, st, fs) = c.search_filtered(q, &params, false, Some(&f), mode)?;
                    reads += st.sector_reads;
                    *plans.entry(fs.plan).or_default() += 1;
                    checks += fs.payload_checks;
                    fewest = fewest.min(hits.len());
                    if hits.len() < k.min(matching.len()) {
                        short += 1;
                    }
                    for h in &hits {
                        if let ExternalId::Num(id) = h.id
                            && truth[qi].contains(&id)
                        {
                            hit += 1;
                        }
                    }
                    want += truth[qi].len();
                }
                let secs = t.elapsed().as_secs_f64();
                qps[mi].push(nq as f64 / secs);
                rows[mi] = json!({
                    "indexed": !no_index,
                    "case": name, "target": target, "matches": matching.len(),
                    "mode": mode, "L": l, "k": k, "queries": nq,
                    "recall_at_10": if want == 0 { 1.0 } else { hit as f64 / want as f64 },
                    "fewest_results": fewest, "min_k_matches": k.min(matching.len()),
                    "short_queries": short,
                    "reads_per_query": reads as f64 / nq as f64,
                    "payload_checks_per_query": checks as f64 / nq as f64,
                    "plans": plans,
                });
            }
        }
        for (mi, mut r) in rows.into_iter().enumerate() {
            let mut v = qps[mi].clone();
            v.sort_by(f64::total_cmp);
            r["qps_median"] = json!(v[v.len() / 2]);
            r["qps_passes"] = json!(qps[mi]);
            println!("{r}");
        }
    }
    Ok(())
}
