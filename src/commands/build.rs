//! `basalt build`, `inspect` and `verify`.

use anyhow::{Result, bail};
use indicatif::ProgressBar;
use parking_lot::Mutex;

use basalt::cli::{BuildArgs, InspectArgs};
use basalt::index::build::{BuildOptions, Progress, prepare};
use basalt::vamana::BuildParams;

use super::{progress_bar, thread_pool};

/// Progress bars on stderr, one per phase.
struct Bars(Mutex<Option<ProgressBar>>);

impl Progress for Bars {
    fn phase(&self, name: &str, total: u64) {
        *self.0.lock() = Some(progress_bar(total, name));
    }
    fn advance(&self, done: u64) {
        if let Some(b) = &*self.0.lock() {
            b.set_position(done);
        }
    }
    fn phase_done(&self) {
        if let Some(b) = self.0.lock().take() {
            b.finish_and_clear();
            eprintln!("  {:<12} done in {:.1}s", b.prefix(), b.elapsed().as_secs_f64());
        }
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

pub fn run(a: BuildArgs) -> Result<()> {
    let pool = thread_pool(a.threads)?;
    if let Some(m) = a.build_memory
        && !(m.is_finite() && m > 0.0)
    {
        bail!("--build-memory {m} must be a positive number of GiB");
    }
    let opts = BuildOptions {
        metric: a.metric,
        graph: BuildParams {
            degree_max: a.r,
            list_size: a.l,
            alpha: a.alpha,
            passes: a.passes,
            seed: a.seed,
            saturate: a.saturate,
        },
        pq_chunks: a.pq_bytes,
        pq_sample_max: a.pq_sample,
        force: a.force,
        memory_budget_bytes: a.build_memory.map(|g| (g * (1u64 << 30) as f64) as u64),
        shards: a.shards,
        placement: a.placement.into(),
        ..Default::default()
    };
    // Every argument, the input and the output are checked before anything
    // is printed or built.
    let prepared = pool.install(|| prepare(&a.data, &a.out, &opts))?;
    let (n, dim) = prepared.shape();
    eprintln!(
        "building {} ({n} x {dim}) -> {} (metric {}, R {}, L {}, alpha {}, pq-bytes {}, \
         {} threads, seed {}): about {} of index files, {} of memory",
        a.data.display(),
        a.out.display(),
        a.metric,
        a.r,
        a.l,
        a.alpha,
        a.pq_bytes,
        pool.current_num_threads(),
        a.seed,
        mib(prepared.output_bytes),
        mib(prepared.memory_bytes)
    );
    if let Some(p) = &prepared.partition {
        eprintln!(
            "  the in-memory build does not fit the budget: partitioned into {} shards of at \
             most {} points (each point in 2, near boundaries 3), {} of scratch space",
            p.shards,
            p.shard_points_max,
            mib(p.scratch_bytes)
        );
    }
    let bars = Bars(Mutex::new(None));
    let s = pool.install(|| prepared.run(&bars))?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    }
    eprintln!("built {} x {} in {:.2}s (build id {})", s.count, s.dim, s.total_s, s.build_id);
    for p in &s.stale_removed {
        eprintln!("  removed the temporary directory of a killed build: {p}");
    }
    for p in &s.stale_left {
        eprintln!("  warning: left a temporary directory of a killed build: {p}");
    }
    if let Some(w) = &s.publish_warning {
        eprintln!("  warning: the new index is in place, but: {w}");
    }
    if let Some(p) = &s.replaced_leftover {
        eprintln!("  warning: the replaced index could not be removed whole; it is at {p}");
    }
    if s.unreachable > 0 {
        eprintln!(
            "  warning: {} nodes cannot be reached from the medoid; `basalt verify` will fail. \
             Rebuild with a larger --R",
            s.unreachable
        );
    }
    for (name, secs) in &s.phases {
        eprintln!("  {name:<10} {secs:>9.2}s");
    }
    eprintln!(
        "  degree min/mean/max {}/{:.1}/{}, medoid {}",
        s.degree_min, s.degree_mean, s.degree_max, s.medoid
    );
    if let Some(p) = &s.partition {
        let (lo, hi) = (
            p.shard_points.iter().min().copied().unwrap_or(0),
            p.shard_points.iter().max().copied().unwrap_or(0),
        );
        eprintln!(
            "  {} shards of {lo}..{hi} points (capacity {}); {} points in one shard only, {} \
             placed past their 2 nearest, {} in a third (near a three-way boundary); merge \
             read {} vectors outside the home shard; connect added {} edges",
            p.shards,
            p.shard_points_max,
            p.single_placed,
            p.displaced,
            p.third_placed,
            p.merge_extra_reads,
            p.connect_edges
        );
    }
    if let Some(p) = s.peak_rss_bytes {
        eprintln!("  peak memory {}", gib(p));
    }
    for f in &s.files {
        eprintln!("  gen-0/{:<8} {:>12}  xxh3 {:#018x}", f.name, mib(f.bytes), f.xxh3);
    }
    Ok(())
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let (files, h, d) = basalt::index::verify::degree_stats(&a.dir)?;
    let m = &files.manifest;
    let l = h.layout();
    println!("index        {}", a.dir.display());
    println!("format       version {}", m.format_version);
    println!("build id     {}", m.build_id);
    println!("generation   {} (lsn {})", m.generation, m.lsn);
    println!("vectors      {} x {} {}, metric {}", m.count, m.dim, m.element, m.metric);
    if m.metric == basalt::distance::Metric::InnerProduct {
        println!("ip norm max  {} (M of the MIPS reduction)", m.ip_norm_max);
    }
    println!(
        "graph        R {}, medoid {}, built with L {}, alpha {}, {} passes, seed {}",
        h.degree_max, h.medoid, h.list_size, h.alpha, h.passes, h.seed
    );
    let placement = if l.records_per_sector > 0 {
        format!("{} per sector", l.records_per_sector)
    } else {
        format!("{} sectors per record", l.sectors_per_record)
    };
    println!(
        "layout       record {} B, {placement}, {} data sectors, nodes in {}",
        l.record_bytes,
        l.data_sectors,
        h.placement.name()
    );
    println!(
        "pq           {} bytes per vector, trained on <= {} vectors",
        h.pq_chunks, m.build.pq_sample_max
    );
    println!("degree       min {} mean {:.2} max {}", d.min, d.mean, d.max);
    let hist: Vec<String> = d.histogram.iter().map(|c| c.to_string()).collect();
    println!("degree hist  by tenths of R: [{}]", hist.join(", "));
    println!(
        "built        from {} with {} threads, basalt {}",
        m.build.source, m.build.threads, m.build.basalt_version
    );
    let mut total = 0;
    for f in &m.files {
        total += f.bytes;
        println!(
            "file         {}/{:<10} {:>12}  xxh3 {:#018x}",
            m.generation_dir(),
            f.name,
            mib(f.bytes),
            f.xxh3
        );
    }
    println!("total        {}", mib(total));
    Ok(())
}

pub fn verify(a: InspectArgs) -> Result<()> {
    let t = std::time::Instant::now();
    let r = basalt::index::verify::verify_index(&a.dir)?;
    println!(
        "ok: {} nodes, {} edges, {} sectors, all reachable from the medoid ({} levels), \
         {} files checked, build {} generation {}, in {:.2}s",
        r.nodes,
        r.edges,
        r.sectors,
        r.reachability_passes,
        r.files_checked,
        r.build_id,
        r.generation,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
