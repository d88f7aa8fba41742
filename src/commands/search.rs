//! `basalt search`: run a query file against an index at several L and
//! report recall, QPS and latency per L.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use basalt::cli::SearchArgs;
use basalt::recall::{check_ground_truth, hit_set, query_recall};
use basalt::search::{Index, OpenOptions, QueryStats, SearchParams};
use basalt::vecfile::{GroundTruth, VectorFile, read_ground_truth, write_ground_truth};

/// One row of the report.
#[derive(serde::Serialize)]
struct Row {
    #[serde(rename = "L")]
    l: usize,
    beam: usize,
    mode: String,
    threads: usize,
    /// Queries in flight on each thread (pipelined disk search).
    interleave: usize,
    k: usize,
    recall: Option<f64>,
    qps: f64,
    latency_us_mean: f64,
    latency_us_p50: f64,
    latency_us_p99: f64,
    reads_mean: f64,
    hops_mean: f64,
    cache_hits_mean: f64,
    io_us_mean: f64,
    cpu_us_mean: f64,
    /// Of the CPU time: the PQ table, PQ scoring and pool, records and
    /// exact distances (the rest is the loop's own upkeep).
    pq_table_us_mean: f64,
    pq_us_mean: f64,
    exact_us_mean: f64,
    /// Records read but not expanded (the pipelined search's speculation).
    wasted_reads_mean: f64,
    sector_hits_mean: f64,
    /// Distances a query computed: compressed (PQ on disk, 8-bit rows in
    /// memory) and exact (the rerank, or every one with exact steering).
    compressed_distances_mean: f64,
    exact_distances_mean: f64,
    /// The process's peak resident memory so far (VmHWM), when known.
    peak_rss_bytes: Option<u64>,
}

pub fn run(a: SearchArgs) -> Result<()> {
    let threads = super::resolve_threads(a.threads)?;
    // Every parameter is checked before the index is opened or anything is
    // printed: each L of the sweep, k, the beam width, the results path.
    if a.l.is_empty() {
        bail!("--L needs at least one list size");
    }
    for &l in &a.l {
        SearchParams { k: a.k, list_size: l, beam_width: a.beam }
            .validate()
            .with_context(|| format!("--L {l}"))?;
    }
    if a.interleave == 0 || a.interleave > basalt::search::INTERLEAVE_MAX {
        bail!(
            "--interleave {} is outside 1..={} (INTERLEAVE_MAX)",
            a.interleave,
            basalt::search::INTERLEAVE_MAX
        );
    }
    if let Some(p) = &a.results {
        basalt::vecfile::check_output_path(p).context("--results")?;
    }
    let t = Instant::now();
    let opts = OpenOptions {
        reader: a.reader,
        cache_nodes: a.cache_nodes,
        cache_bytes: a.cache_bytes,
        cache_policy: a.cache_policy,
        in_memory: a.in_memory,
        in_memory_bytes_max: a.in_memory_bytes,
        in_memory_steer: a.in_memory_steer,
        search_mode: a.mode,
        spin_wait_us: a.spin_us,
    };
    let index = Index::open(&a.index, &opts)?;
    let how = if let Some(steer) = index.in_memory_steer() {
        let rows = if steer == basalt::search::MemSteer::Sq8 { "8-bit rows and " } else { "" };
        format!(
            "in memory, steered by {steer} distances ({:.1} MiB of vectors, {rows}lists)",
            index.in_memory_bytes() as f64 / (1u64 << 20) as f64,
        )
    } else {
        format!(
            "{} search, reader {}, O_DIRECT {}, cache {} nodes ({})",
            index.search_mode(),
            index.reader_kind(),
            if index.direct_io() { "on" } else { "off (filesystem refused it)" },
            index.cache_len(),
            a.cache_policy
        )
    };
    eprintln!(
        "opened {} ({} x {} {}, {}) in {:.3}s: {how}",
        a.index.display(),
        index.len(),
        index.dim(),
        index.element_type(),
        index.metric(),
        t.elapsed().as_secs_f64()
    );
    if let Some(why) = index.fallback_reason() {
        eprintln!("note: io_uring unavailable, using pread: {why}");
    }
    let qf = VectorFile::open(&a.queries)?;
    if qf.dim() != index.dim() {
        bail!("queries have dimension {}, the index {}", qf.dim(), index.dim());
    }
    if qf.element_type() != index.element_type() {
        bail!("queries hold {}, the index {}", qf.element_type(), index.element_type());
    }
    if a.k as u64 > index.len() {
        bail!("k = {} exceeds the {} vectors of the index", a.k, index.len());
    }
    let nq = qf.len() as usize;
    if nq == 0 {
        bail!("{} holds no queries", a.queries.display());
    }
    let mut queries = Vec::new();
    qf.read_rows_f32_checked(0, nq, &mut queries)?;
    // A packed index numbers its nodes apart from the input rows; answers
    // are reported (and scored against the ground truth) as rows.
    let rows = index.rows()?;
    let gt: Option<GroundTruth> = match &a.gt {
        Some(p) => {
            let g = read_ground_truth(p)?;
            check_ground_truth(&g, nq, a.k)
                .with_context(|| format!("ground truth {}", p.display()))?;
            Some(g)
        }
        None => None,
    };
    if !a.json {
        println!(
            "{:>6} {:>5} {:>8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>7} {:>7}",
            "L", "beam", "recall", "QPS", "mean_us", "p50_us", "p99_us", "reads", "hops", "cache"
        );
    }
    let mut last_ids = Vec::new();
    for &l in &a.l {
        let params = SearchParams { k: a.k, list_size: l, beam_width: a.beam };
        let (row, ids) = run_level(
            &index,
            &queries,
            nq,
            &params,
            threads,
            a.interleave,
            gt.as_ref(),
            rows.as_deref(),
        )?;
        if a.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "{:>6} {:>5} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>8.1} {:>7.1} {:>7.1}",
                row.l,
                row.beam,
                row.recall.map_or("-".to_string(), |r| format!("{r:.4}")),
                row.qps,
                row.latency_us_mean,
                row.latency_us_p50,
                row.latency_us_p99,
                row.reads_mean,
                row.hops_mean,
                row.cache_hits_mean
            );
        }
        last_ids = ids;
    }
    if let Some(p) = &a.results {
        let k = a.k;
        let mut flat = Vec::with_capacity(nq * k);
        for (q, ids) in last_ids.iter().enumerate() {
            // k <= N and every node is reachable (verify checks it), so a
            // search always fills k; anything less is reported, never padded.
            if ids.len() != k {
                bail!("query {q} returned {} results, not k = {k}", ids.len());
            }
            flat.extend_from_slice(ids);
        }
        write_ground_truth(p, &GroundTruth { n: nq, k, ids: flat, scores: None })?;
        eprintln!("wrote the ids of the last L to {}", p.display());
    }
    Ok(())
}

/// One query's answer: (query index, ids, stats, latency in us).
type Answer = (usize, Vec<u32>, QueryStats, u64);

#[allow(clippy::too_many_arguments, reason = "one sweep level, all borrowed state")]
fn run_level(
    index: &Index,
    queries: &[f32],
    nq: usize,
    params: &SearchParams,
    threads: usize,
    interleave: usize,
    gt: Option<&GroundTruth>,
    rows: Option<&[u32]>,
) -> Result<(Row, Vec<Vec<u32>>)> {
    let dim = index.dim();
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let per_thread: Vec<Result<Vec<Answer>>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                sc.spawn(|| -> Result<Vec<Answer>> {
                    let mut s = index.searcher()?;
                    let mut out = Vec::new();
                    let mut take = || {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        (i < nq).then(|| (i, &queries[i * dim..(i + 1) * dim]))
                    };
                    // A query's latency is its own, from its start to its
                    // answer (with interleaving, other queries' work on
                    // the thread included).
                    let mut done = |i: usize, r: basalt::search::SearchResult| {
                        let us = r.stats.io_us + r.stats.cpu_us;
                        out.push((i, r.ids, r.stats, us));
                    };
                    index.search_interleaved(&mut s, params, interleave, &mut take, &mut done)?;
                    Ok(out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("search thread panicked")).collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let mut ids = vec![Vec::new(); nq];
    let mut lat = Vec::with_capacity(nq);
    let mut sum = QueryStats::default();
    for part in per_thread {
        for (i, mut found, st, us) in part? {
            if let Some(rows) = rows {
                found.iter_mut().for_each(|id| *id = rows[*id as usize]);
            }
            ids[i] = found;
            lat.push(us);
            sum.add(&st);
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize] as f64;
    let n = nq.max(1) as f64;
    let recall = gt.map(|g| {
        ids.iter()
            .enumerate()
            .map(|(q, r)| query_recall(&hit_set(g, q, params.k), r, params.k))
            .sum::<f64>()
            / n
    });
    Ok((
        Row {
            l: params.list_size,
            beam: params.beam_width,
            mode: if let Some(steer) = index.in_memory_steer() {
                format!("in-memory-{steer}")
            } else {
                index.search_mode().to_string()
            },
            threads,
            interleave,
            k: params.k,
            recall,
            qps: nq as f64 / wall,
            latency_us_mean: lat.iter().sum::<u64>() as f64 / n,
            latency_us_p50: if lat.is_empty() { 0.0 } else { pct(0.5) },
            latency_us_p99: if lat.is_empty() { 0.0 } else { pct(0.99) },
            reads_mean: sum.sector_reads as f64 / n,
            hops_mean: sum.rounds as f64 / n,
            cache_hits_mean: sum.cache_hits as f64 / n,
            io_us_mean: sum.io_us as f64 / n,
            cpu_us_mean: sum.cpu_us as f64 / n,
            pq_table_us_mean: sum.pq_table_us as f64 / n,
            pq_us_mean: sum.pq_us as f64 / n,
            exact_us_mean: sum.exact_us as f64 / n,
            wasted_reads_mean: sum.wasted_reads as f64 / n,
            sector_hits_mean: sum.sector_hits as f64 / n,
            compressed_distances_mean: sum.pq_distances as f64 / n,
            exact_distances_mean: sum.exact_distances as f64 / n,
            peak_rss_bytes: basalt::index::peak_rss_bytes(),
        },
        ids,
    ))
}
