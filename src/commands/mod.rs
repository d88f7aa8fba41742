//! Subcommand bodies: thin glue between the CLI and the library, with
//! progress output and summaries. `anyhow` lives here, at the edge.

pub mod build;
pub mod collection;
pub mod plan;
pub mod replication;
pub mod search;

use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use basalt::cli::{DemoArgs, GenArgs, GtArgs, RecallArgs};
use basalt::element::ElementType;
use basalt::synth::{self, Mixture};
use basalt::vecfile::{VectorFile, kind_from_extension, read_ground_truth, write_ground_truth};

/// A progress bar on stderr for a phase with a known total (hidden when stderr
/// is not a terminal, so logs stay clean).
pub fn progress_bar(total: u64, phase: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} ({percent}%) {elapsed_precise} eta {eta}",
        )
        .expect("static template is valid")
        .progress_chars("=> "),
    );
    pb.set_prefix(phase.to_string());
    pb
}

/// `--threads`, defaulting to every core, checked against THREADS_MAX.
pub fn resolve_threads(threads: Option<usize>) -> Result<usize> {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if n == 0 || n > basalt::THREADS_MAX {
        bail!("--threads {n} is outside 1..={} (THREADS_MAX)", basalt::THREADS_MAX);
    }
    Ok(n)
}

pub fn thread_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new().num_threads(resolve_threads(threads)?).build()?)
}

pub fn generate(a: GenArgs) -> Result<()> {
    let (_, element) = kind_from_extension(&a.out)?;
    if element != a.dtype {
        bail!(
            "--dtype {} does not match the extension of {} (which holds {element})",
            a.dtype,
            a.out.display()
        );
    }
    if let Some(q) = &a.queries {
        let (_, qe) = kind_from_extension(q)?;
        if qe != a.dtype {
            bail!("--queries {} must hold {} like the base", q.display(), a.dtype);
        }
    }
    let t = Instant::now();
    let mixture = Mixture::new(a.dim, a.clusters, a.seed)?;
    let write = |path: &std::path::Path, n: u64, stream: u64, phase: &str| -> Result<()> {
        let pb = progress_bar(n, phase);
        basalt::with_element!(a.dtype, T => {
            synth::write_stream::<T>(&mixture, path, n, a.seed, stream, &|done| pb.set_position(done))?
        });
        pb.finish_and_clear();
        Ok(())
    };
    write(&a.out, a.n, synth::STREAM_BASE, "base")?;
    eprintln!("wrote {} x {} {} to {}", a.n, a.dim, a.dtype, a.out.display());
    if let Some(q) = &a.queries {
        write(q, a.nq, synth::STREAM_QUERIES, "queries")?;
        eprintln!("wrote {} queries to {}", a.nq, q.display());
    }
    eprintln!("gen took {:.2}s", t.elapsed().as_secs_f64());
    Ok(())
}

pub fn ground_truth(a: GtArgs) -> Result<()> {
    let pool = thread_pool(a.threads)?;
    basalt::vecfile::check_output_path(&a.out).context("--out")?;
    let base = VectorFile::open(&a.base)?;
    let queries = VectorFile::open(&a.queries)?;
    if queries.is_empty() {
        bail!("{} holds no queries", a.queries.display());
    }
    let t = Instant::now();
    let pb = progress_bar(base.len(), "gt");
    let gt = pool.install(|| {
        basalt::groundtruth::exact_knn(&base, &queries, a.k, a.metric, &|done| {
            pb.set_position(done)
        })
    })?;
    pb.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    write_ground_truth(&a.out, &gt)?;
    eprintln!(
        "exact {}-NN ({}) of {} queries over {} x {} {} in {secs:.2}s with {} threads -> {}",
        a.k,
        a.metric,
        queries.len(),
        base.len(),
        base.dim(),
        base.element_type(),
        pool.current_num_threads(),
        a.out.display()
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"command": "gt", "seconds": secs,
                "threads": pool.current_num_threads(), "n": base.len(), "nq": queries.len(),
                "dim": base.dim(), "k": a.k})
        );
    }
    Ok(())
}

pub fn recall(a: RecallArgs) -> Result<()> {
    let gt = read_ground_truth(&a.gt)?;
    let res = read_ground_truth(&a.results)?;
    if res.n == 0 {
        bail!("{} holds no queries", a.results.display());
    }
    if res.n != gt.n {
        bail!(
            "{} holds {} queries but the ground truth {} holds {}: they must be the same queries",
            a.results.display(),
            res.n,
            a.gt.display(),
            gt.n
        );
    }
    let rows: Vec<Vec<u32>> = (0..res.n).map(|q| res.ids(q).to_vec()).collect();
    if res.k < a.k {
        bail!("{} holds {} results per query, fewer than k = {}", a.results.display(), res.k, a.k);
    }
    let r = basalt::recall::mean_recall(&gt, &rows, a.k)
        .with_context(|| format!("scoring {} against {}", a.results.display(), a.gt.display()))?;
    println!("recall@{} = {r:.4} over {} queries", a.k, rows.len());
    Ok(())
}

pub fn demo(a: DemoArgs) -> Result<()> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempdir()?;
            tmp.0.clone()
        }
    };
    let base = dir.join("base.fbin");
    let queries = dir.join("queries.fbin");
    let gt = dir.join("gt.ibin");
    eprintln!("== basalt demo in {} ==", dir.display());
    generate(GenArgs {
        out: base.clone(),
        n: a.n,
        dim: a.dim,
        dtype: ElementType::F32,
        clusters: 32,
        seed: 42,
        queries: Some(queries.clone()),
        nq: 200,
    })?;
    ground_truth(GtArgs {
        base: base.clone(),
        queries: queries.clone(),
        k: 100,
        metric: basalt::distance::Metric::L2,
        out: gt.clone(),
        threads: None,
        json: false,
    })?;
    let index = dir.join("index");
    build::run(basalt::cli::BuildArgs {
        data: base.clone(),
        metric: basalt::distance::Metric::L2,
        out: index.clone(),
        r: 32,
        l: 64,
        alpha: 1.2,
        passes: 2,
        pq_bytes: (a.dim / 4).clamp(1, 32),
        pq_sample: 256_000,
        threads: None,
        seed: 42,
        build_memory: None,
        shards: None,
        force: true,
        saturate: false,
        placement: basalt::cli::PlacementArg::Packed,
        json: false,
    })?;
    build::verify(basalt::cli::InspectArgs { dir: index.clone() })?;
    let results = dir.join("results.ibin");
    search::run(basalt::cli::SearchArgs {
        index: index.clone(),
        queries: queries.clone(),
        gt: Some(gt.clone()),
        k: 10,
        l: vec![10, 20, 40, 80],
        beam: 4,
        mode: basalt::search::SearchMode::default(),
        threads: None,
        interleave: 1,
        spin_us: basalt::search::SPIN_WAIT_US_DEFAULT,
        cache_nodes: 256,
        cache_bytes: None,
        cache_policy: basalt::search::CachePolicy::Hot,
        reader: basalt::io::ReaderKind::Uring,
        in_memory: false,
        in_memory_bytes: None,
        in_memory_steer: Default::default(),
        json: false,
        results: Some(results.clone()),
    })?;
    recall(RecallArgs { gt: gt.clone(), results, k: 10 })?;
    eprintln!("== demo done: files in {} ==", dir.display());
    Ok(())
}

/// A directory removed on drop (the demo's default working space).
struct TempDir(std::path::PathBuf);

fn tempdir() -> Result<TempDir> {
    let p = std::env::temp_dir().join(format!("basalt-demo-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(TempDir(p))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
