//! `basalt build`: vectors file -> index directory.
//!
//! Phases: load and validate the input (finite values, sizes), train PQ on a
//! seeded sample, encode every vector (streamed to the codes file), build
//! the Vamana graph in memory, write the graph file sequentially, then the
//! manifest; all inside a temporary sibling directory renamed into place at
//! the end. The in-memory build refuses inputs whose estimated footprint
//! exceeds the memory budget instead of thrashing.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::partition::{self, PartitionPlan, PartitionSummary};
use super::pqspace::{self, PqSpace};
use super::{
    BuildInfo, CODES_FILE, FileEntry, GRAPH_FILE, IndexError, MANIFEST_FILE, MANIFEST_VERSION,
    Manifest, PQ_FILE, available_memory_bytes, peak_rss_bytes, publish,
};
use crate::distance::{DistanceElement, Metric, normalize};
use crate::element::{Element, ElementType};
use crate::format::FileIdent;
use crate::format::codes::CodesWriter;
use crate::format::graph::{GraphHeader, GraphWriter, Placement};
/// Creates `path`, writes `bytes` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    let mut f = fs::File::create(path).map_err(|e| IndexError::io(path, "create", e))?;
    std::io::Write::write_all(&mut f, bytes).map_err(|e| IndexError::io(path, "write", e))?;
    f.sync_all().map_err(|e| IndexError::io(path, "fsync", e))
}
use crate::fsutil::{parent_dir, sync_dir};
use crate::pq::{Codebook, PQ_ITERS_DEFAULT, PQ_SAMPLE_DEFAULT, PqParams};
use crate::vamana::{self, BuildParams};
use crate::vecfile::VectorFile;

/// Most rows a streamed pass (PQ encode, load, write) reads at once.
pub(crate) const ENCODE_BATCH_ROWS: usize = 65_536;
/// Bytes a streamed pass's batch may take (rows, their PQ-space copies and
/// codes): bounds the batch for wide vectors (1024-d f32: 2,048 rows).
pub(crate) const BATCH_BYTES_MAX: u64 = 16 << 20;

/// Rows a streamed pass reads at once for rows of `row_bytes` (with their
/// PQ-space copies and codes).
pub(crate) fn batch_rows(row_bytes: u64) -> usize {
    (BATCH_BYTES_MAX / row_bytes.max(1)).clamp(256, ENCODE_BATCH_ROWS as u64) as usize
}

/// Everything `basalt build` takes besides the paths.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub metric: Metric,
    pub graph: BuildParams,
    pub pq_chunks: usize,
    pub pq_sample_max: usize,
    pub pq_iters_max: usize,
    /// Replace an existing index at the output path.
    pub force: bool,
    /// Memory the build may use; `None` = 90% of MemAvailable.
    pub memory_budget_bytes: Option<u64>,
    /// Inner product only: the M of the MIPS reduction to place the vectors
    /// in, instead of their largest norm (a merge writing a new generation in
    /// an existing space does this). Rows longer than it get an extra
    /// coordinate of 0 and are counted in [`BuildSummary::over_norm_rows`].
    pub ip_norm_max: Option<f32>,
    /// Build in this many shards even when the in-memory build fits
    /// (`None`: only when it does not, with the count the budget gives).
    pub shards: Option<usize>,
    /// How nodes are numbered: `Packed` puts graph neighbours in one sector
    /// (`placement`; builds, in memory or partitioned, of records that
    /// share sectors; the generation then has an ids file mapping nodes to
    /// rows). The library default keeps node = row; `basalt build` and
    /// collections pack.
    pub placement: Placement,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            metric: Metric::L2,
            graph: BuildParams::default(),
            pq_chunks: 32,
            pq_sample_max: PQ_SAMPLE_DEFAULT,
            pq_iters_max: PQ_ITERS_DEFAULT,
            force: false,
            memory_budget_bytes: None,
            ip_norm_max: None,
            shards: None,
            placement: Placement::RowOrder,
        }
    }
}

/// Progress reporting of a build, phase by phase.
pub trait Progress: Sync {
    fn phase(&self, _name: &str, _total: u64) {}
    fn advance(&self, _done: u64) {}
    fn phase_done(&self) {}
}

impl Progress for () {}

struct GraphProgress<'a>(&'a dyn Progress, u64);

impl vamana::BuildProgress for GraphProgress<'_> {
    fn pass(&self, pass: usize, passes: usize) {
        if pass > 0 {
            self.0.phase_done();
        }
        self.0.phase(&format!("graph {}/{}", pass + 1, passes), self.1);
    }
    fn inserted(&self, done: u64) {
        self.0.advance(done);
    }
}

/// What a build did: time per phase, peak memory, files.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BuildSummary {
    pub count: u64,
    pub dim: usize,
    pub phases: Vec<(String, f64)>,
    pub total_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub files: Vec<FileEntry>,
    pub degree_min: usize,
    pub degree_mean: f64,
    pub degree_max: usize,
    pub medoid: u32,
    /// Build id of the new index (16 hex digits).
    pub build_id: String,
    /// Nodes the search cannot reach from the medoid (0 in a good graph).
    pub unreachable: u64,
    /// Inner product with a given M: rows longer than M (placed with an
    /// extra coordinate of 0). Always 0 when M is the input's own maximum.
    pub over_norm_rows: u64,
    /// M of the inner-product reduction (0 for other metrics).
    pub ip_norm_max: f32,
    /// Temporary directories of killed builds that were removed.
    pub stale_removed: Vec<String>,
    /// Temporary directories of killed builds left in place, and why.
    pub stale_left: Vec<String>,
    /// The replaced index, when it could not be removed whole.
    pub replaced_leftover: Option<String>,
    /// What the partitioned build did (`None`: built in memory at once).
    pub partition: Option<PartitionSummary>,
    /// Trouble after the new index was in place (it is), e.g. a failed
    /// fsync of the parent directory.
    pub publish_warning: Option<String>,
}

/// Removes this build's temporary directory (only the files a build
/// writes there) unless disarmed.
struct TempDirGuard(Option<PathBuf>);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = publish::remove_partial(&p);
        }
    }
}

/// Bytes of free space a build wants beyond the files it writes.
pub const FREE_SPACE_MARGIN_BYTES: u64 = 64 << 20;

/// A build whose arguments, input and output have all been checked: what
/// [`prepare`] returns and [`Prepared::run`] carries out.
pub struct Prepared {
    file: VectorFile,
    out: PathBuf,
    target: publish::Target,
    opts: BuildOptions,
    /// Bytes the new index's files will take.
    pub output_bytes: u64,
    /// Estimated peak memory of the build.
    pub memory_bytes: u64,
    /// The partitioned build's plan, when the in-memory build does not fit
    /// the budget.
    pub partition: Option<PartitionPlan>,
}

impl Prepared {
    /// Vectors and dimension of the input.
    pub fn shape(&self) -> (u64, usize) {
        (self.file.len(), self.file.dim())
    }

    /// Runs the build with the current rayon pool.
    pub fn run(self, progress: &dyn Progress) -> Result<BuildSummary, IndexError> {
        let stale = publish::clean_stale(&self.out)?;
        let mut summary = crate::with_element!(self.file.element_type(), T => {
            build_typed::<T>(
                &self.file,
                &self.out,
                &self.target,
                &self.opts,
                self.partition.as_ref(),
                progress,
            )
        })?;
        summary.stale_removed = stale.removed.iter().map(|p| p.display().to_string()).collect();
        summary.stale_left =
            stale.left.iter().map(|(p, why)| format!("{}: {why}", p.display())).collect();
        Ok(summary)
    }
}

/// Checks everything a build of `data` into `out` needs before any work:
/// the graph parameters, the input (a regular vector file of finite size
/// within the limits), the output (absent, an empty directory, or with
/// `force` an index holding nothing but its layout, and not inside an
/// index), the memory budget and the free space.
pub fn prepare(data: &Path, out: &Path, opts: &BuildOptions) -> Result<Prepared, IndexError> {
    opts.graph.validate().map_err(IndexError::Input)?;
    match (opts.metric, opts.ip_norm_max) {
        (_, None) => {}
        (Metric::InnerProduct, Some(m)) if m.is_finite() && m > 0.0 => {}
        (Metric::InnerProduct, Some(m)) => {
            return Err(IndexError::Input(format!("ip norm max {m} must be finite and positive")));
        }
        (metric, Some(_)) => {
            return Err(IndexError::Input(format!("an ip norm max is meaningless for {metric}")));
        }
    }
    let target = publish::check_target(out, opts.force)?;
    let file = VectorFile::open(data)?;
    let (memory_bytes, partition) = check_input(&file, opts)?;
    let pq_dim = pqspace::pq_dim(opts.metric, file.dim());
    let pq = PqParams {
        chunks: opts.pq_chunks,
        sample_max: opts.pq_sample_max,
        iters_max: opts.pq_iters_max,
        seed: opts.graph.seed,
    };
    pq.validate(pq_dim).map_err(|e| {
        let extra = if opts.metric == Metric::InnerProduct {
            " (inner product quantizes dim + 1 values)"
        } else {
            ""
        };
        IndexError::Input(format!("{}: {e}{extra}", file.path().display()))
    })?;
    let parent = parent_dir(out);
    let output_bytes = estimate_output_bytes(file.len(), file.dim(), file.element_type(), opts);
    let scratch = partition.as_ref().map_or(0, |p| p.scratch_bytes);
    let need = output_bytes + scratch + FREE_SPACE_MARGIN_BYTES;
    let free = publish::free_bytes(&parent)?;
    if need > free {
        return Err(IndexError::Input(format!(
            "{}: the index needs about {:.1} MiB ({:.1} MiB of them scratch space of the \
             partitioned build, with a {} MiB margin) but only {:.1} MiB are free",
            parent.display(),
            need as f64 / (1u64 << 20) as f64,
            scratch as f64 / (1u64 << 20) as f64,
            FREE_SPACE_MARGIN_BYTES >> 20,
            free as f64 / (1u64 << 20) as f64
        )));
    }
    Ok(Prepared {
        file,
        out: out.to_path_buf(),
        target,
        opts: opts.clone(),
        output_bytes,
        memory_bytes,
        partition,
    })
}

/// Builds the index of `data` into `out`, with the current rayon pool
/// ([`prepare`], then [`Prepared::run`]).
pub fn build_index(
    data: &Path,
    out: &Path,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildSummary, IndexError> {
    prepare(data, out, opts)?.run(progress)
}

/// Bytes of the files an index of `n` x `dim` writes.
pub fn estimate_output_bytes(n: u64, dim: usize, element: ElementType, opts: &BuildOptions) -> u64 {
    let layout =
        crate::format::graph::Layout::new(dim as u32, element, opts.graph.degree_max as u32, n, 0);
    let pq = crate::format::pq::pq_file_bytes(pqspace::pq_dim(opts.metric, dim), opts.pq_chunks);
    let codes = (crate::format::codes::CODES_HEADER_BYTES + 4) as u64 + n * opts.pq_chunks as u64;
    let hot = (crate::format::hot::HOT_HEADER_BYTES + 4) as u64 + 4 * n;
    // A packed build's ids file (node -> row).
    let ids = if packs(opts, &layout) {
        use crate::collection::idfile::{IDS_ENTRY_BYTES, IDS_HEADER_BYTES};
        IDS_HEADER_BYTES + IDS_ENTRY_BYTES * n
    } else {
        0
    };
    layout.file_bytes() + pq as u64 + codes + hot + ids + super::MANIFEST_BYTES_MAX
}

/// Whether a build with `opts` packs its placement (records share sectors).
pub(crate) fn packs(opts: &BuildOptions, layout: &crate::format::graph::Layout) -> bool {
    opts.placement == Placement::Packed && layout.records_per_sector >= 2
}

/// Checks the input against the options and the memory budget; returns the
/// build's estimated memory and, when the in-memory build does not fit the
/// budget, the partitioned build's plan.
fn check_input(
    file: &VectorFile,
    opts: &BuildOptions,
) -> Result<(u64, Option<PartitionPlan>), IndexError> {
    let path = file.path().display();
    if file.is_empty() {
        return Err(IndexError::Input(format!("{path}: holds no vectors")));
    }
    if file.len() > crate::format::NODES_MAX {
        return Err(IndexError::Input(format!(
            "{path}: {} vectors exceed the node id space",
            file.len()
        )));
    }
    if opts.pq_chunks == 0 || opts.pq_chunks > file.dim() {
        return Err(IndexError::Input(format!(
            "--pq-bytes {} must be between 1 and the dimension {} of {path}",
            opts.pq_chunks,
            file.dim()
        )));
    }
    if opts.metric == Metric::Cosine && file.element_type() != ElementType::F32 {
        return Err(IndexError::Input(format!(
            "cosine needs f32 vectors (normalised at build); {path} holds {}",
            file.element_type()
        )));
    }
    let n = file.len();
    let need = estimate_memory_bytes(n, file.dim(), file.element_type(), opts);
    let budget = opts
        .memory_budget_bytes
        .or_else(|| available_memory_bytes().map(|a| a / 10 * 9))
        .unwrap_or(u64::MAX);
    if need <= budget && opts.shards.is_none() {
        return Ok((need, None));
    }
    let threads = rayon::current_num_threads();
    let plan = partition::plan(n, file.dim(), file.element_type(), opts, budget, threads).map_err(
        |e| {
            IndexError::Input(format!(
                "an in-memory build of {n} x {} needs about {:.2} GiB, over the budget; {e}",
                file.dim(),
                need as f64 / (1u64 << 30) as f64,
            ))
        },
    )?;
    Ok((plan.memory_bytes, Some(plan)))
}

/// Memory of one node's adjacency list in the in-memory build: a list
/// grows by back edges past R (to `R * SLACK`) and a `Vec` doubles its
/// capacity as it grows, so up to 2R ids; plus the `Vec`, its lock and the
/// allocator's header.
pub(crate) fn adjacency_bytes_per_node(degree_max: usize) -> u64 {
    let ids = (degree_max as f32 * vamana::SLACK) as u64 + 2;
    ids.max(2 * degree_max as u64) * 4 + 48
}

/// The build's memory footprint: vectors, adjacency lists with slack, codes,
/// PQ sample and per-thread visited sets (with the current thread pool).
pub fn estimate_memory_bytes(n: u64, dim: usize, element: ElementType, opts: &BuildOptions) -> u64 {
    estimate_memory_bytes_for(n, dim, element, opts, rayon::current_num_threads())
}

/// [`estimate_memory_bytes`] with `threads` build threads (`basalt plan`
/// sizes a box that is not this one).
pub fn estimate_memory_bytes_for(
    n: u64,
    dim: usize,
    element: ElementType,
    opts: &BuildOptions,
    threads: usize,
) -> u64 {
    let vectors = n * (dim * element.size_bytes()) as u64;
    let adjacency = n * adjacency_bytes_per_node(opts.graph.degree_max);
    let row = (dim * element.size_bytes()) as u64;
    let pq_row = 4 * pqspace::pq_dim(opts.metric, dim) as u64 + opts.pq_chunks as u64;
    let codes = batch_rows(row + pq_row) as u64 * (row + pq_row);
    let sample = (opts.pq_sample_max as u64).min(n) * dim as u64 * 4;
    let visited = n * 4 * threads as u64;
    // The hot-list warm-up reads every code back into RAM and copies its
    // sample queries as f32 while the graph is still there.
    let codes_ram = n * opts.pq_chunks as u64;
    let hot_queries = crate::search::hot::sample_size(n) as u64 * dim as u64 * 4;
    // The packing's order and two maps (`placement::pack`), while the graph
    // is still there; the codes are renumbered in RAM (counted above).
    let layout =
        crate::format::graph::Layout::new(dim as u32, element, opts.graph.degree_max as u32, n, 0);
    let packing = if packs(opts, &layout) { 12 * n } else { 0 };
    vectors + adjacency + codes + sample + visited + codes_ram + hot_queries + packing
}

fn build_typed<T: DistanceElement>(
    file: &VectorFile,
    out: &Path,
    target: &publish::Target,
    opts: &BuildOptions,
    partition: Option<&PartitionPlan>,
    progress: &dyn Progress,
) -> Result<BuildSummary, IndexError> {
    let started = Instant::now();
    let mut phases = Vec::new();
    let n = file.len();
    let dim = file.dim();
    let ident = FileIdent::new_random(0);

    // A fresh name (pid and random nonce); create_dir fails rather than
    // reuse a directory that exists, so no build ever writes into, or
    // removes, another's.
    let tmp = publish::temp_dir_for(out)?;
    fs::create_dir(&tmp).map_err(|e| IndexError::io(&tmp, "mkdir", e))?;
    let mut guard = TempDirGuard(Some(tmp.clone()));
    let gen_dir = tmp.join(format!("gen-{}", ident.generation));
    fs::create_dir(&gen_dir).map_err(|e| IndexError::io(&gen_dir, "mkdir", e))?;

    // PQ first, streamed from the file in batches, so this phase works for
    // inputs of any size (and finds a bad value before the expensive parts).
    let t = Instant::now();
    progress.phase("pq train", 1);
    // Inner product: M is the largest norm of the input, persisted with the
    // index so that points added later are placed in the same space.
    let ip_norm_max = match (opts.metric, opts.ip_norm_max) {
        (Metric::InnerProduct, Some(m)) => m,
        (Metric::InnerProduct, None) => norm_sq_max::<T>(file)?.sqrt(),
        _ => 0.0,
    };
    let space = PqSpace::new(opts.metric, ip_norm_max);
    let pq_dim = space.dim(dim);
    let sample = pq_sample::<T>(file, &space, opts.pq_sample_max, opts.graph.seed)?;
    let params = PqParams {
        chunks: opts.pq_chunks,
        sample_max: opts.pq_sample_max,
        iters_max: opts.pq_iters_max,
        seed: opts.graph.seed,
    };
    let codebook = Codebook::train(&sample, pq_dim, &params)?;
    drop(sample);
    let pq_path = gen_dir.join(PQ_FILE);
    let meta = crate::format::pq::PqFileMeta { ident, metric: opts.metric, ip_norm_max };
    crate::format::pq::write_codebook(&pq_path, &codebook, &meta)?;
    progress.phase_done();
    phases.push(("pq train".to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    progress.phase("pq encode", n);
    let codes_path = gen_dir.join(CODES_FILE);
    let mut codes = CodesWriter::create(&codes_path, opts.pq_chunks, n, ident)?;
    let batch = batch_rows((dim * T::TYPE.size_bytes() + 4 * pq_dim + opts.pq_chunks) as u64);
    let mut buf = vec![0u8; batch * opts.pq_chunks];
    let mut rows: Vec<T> = Vec::new();
    let mut space_rows: Vec<f32> = Vec::new();
    let mut over_norm_rows = 0u64;
    // The partitioned build needs the exact mean (for its k-means and medoid).
    let mut mean = partition.map(|_| vec![0f64; dim]);
    let mut start = 0u64;
    while start < n {
        let m = (n - start).min(batch as u64) as usize;
        read_checked(file, start, m, opts.metric, &mut rows)?;
        space_rows.clear();
        if let Some(mean) = mean.as_mut() {
            for row in rows.chunks_exact(dim) {
                for (m, x) in mean.iter_mut().zip(row) {
                    *m += f64::from(x.to_f32());
                }
            }
        }
        for row in rows.chunks_exact(dim) {
            // Every row fits unless M was given (see BuildOptions::ip_norm_max).
            let fit = space.push_row(row.iter().map(|x| x.to_f32()), &mut space_rows);
            if fit != pqspace::Fit::Inside {
                over_norm_rows += 1;
            }
        }
        codebook.encode_batch(&space_rows, &mut buf[..m * opts.pq_chunks]);
        codes.append(&buf[..m * opts.pq_chunks])?;
        start += m as u64;
        progress.advance(start);
    }
    drop(rows);
    codes.finish()?;
    progress.phase_done();
    phases.push(("pq encode".to_string(), t.elapsed().as_secs_f64()));

    let header = GraphHeader {
        metric: opts.metric,
        element: T::TYPE,
        dim: dim as u32,
        degree_max: opts.graph.degree_max as u32,
        count: n,
        medoid: 0,
        pq_chunks: opts.pq_chunks as u32,
        list_size: opts.graph.list_size as u32,
        alpha: opts.graph.alpha,
        passes: opts.graph.passes as u32,
        seed: opts.graph.seed,
        ident,
        ip_norm_max,
        // Set by the graph phase (packing needs the graph).
        placement: Placement::RowOrder,
    };
    let files = GenFiles { dir: &gen_dir, codes: &codes_path, codebook: &codebook, space };
    let g = match (partition, mean) {
        (Some(plan), Some(mut mean)) => {
            mean.iter_mut().for_each(|m| *m /= n as f64);
            let input = partition::Input { file, opts, ip_norm_max, mean: &mean, plan };
            partitioned_graph::<T>(&input, header, &tmp, &files, progress)?
        }
        _ => in_memory_graph::<T>(file, opts, header, &files, progress)?,
    };
    phases.extend(g.phases);
    let (medoid, unreachable) = (g.medoid, g.unreachable);
    let (degree_min, degree_mean, degree_max) = g.degrees;
    let t = Instant::now();

    // Manifest (sizes and whole-file checksums), fsync, then publish.
    let mut files = Vec::new();
    let ids = gen_dir.join(super::IDS_FILE).exists().then_some(super::IDS_FILE);
    for name in super::LAYOUT_FILES.into_iter().chain(ids) {
        let p = gen_dir.join(name);
        files.push(FileEntry {
            name: name.to_string(),
            bytes: fs::metadata(&p).map_err(|e| IndexError::io(&p, "stat", e))?.len(),
            xxh3: super::verify::file_xxh3(&p)?,
        });
    }
    let manifest = Manifest {
        format_version: MANIFEST_VERSION,
        build_id: ident.build_id_hex(),
        generation: ident.generation,
        lsn: 0,
        metric: opts.metric,
        element: T::TYPE,
        dim: dim as u32,
        count: n,
        ip_norm_max,
        build: BuildInfo {
            degree_max: opts.graph.degree_max,
            list_size: opts.graph.list_size,
            alpha: opts.graph.alpha,
            passes: opts.graph.passes,
            seed: opts.graph.seed,
            saturate: opts.graph.saturate,
            pq_chunks: opts.pq_chunks,
            pq_sample_max: opts.pq_sample_max,
            threads: rayon::current_num_threads(),
            source: file.path().display().to_string(),
            created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            basalt_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        files: files.clone(),
        pq_trained_points: None,
    };
    let mpath = tmp.join(MANIFEST_FILE);
    write_synced(&mpath, &manifest.encode())?;
    sync_dir(&gen_dir).map_err(|e| IndexError::io(&gen_dir, "fsync", e))?;
    sync_dir(&tmp).map_err(|e| IndexError::io(&tmp, "fsync", e))?;
    let published = publish::publish(&tmp, out, target)?;
    guard.0 = None;
    phases.push(("publish".to_string(), t.elapsed().as_secs_f64()));

    Ok(BuildSummary {
        count: n,
        dim,
        phases,
        total_s: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        files,
        degree_min,
        degree_mean,
        degree_max,
        medoid,
        build_id: ident.build_id_hex(),
        unreachable,
        over_norm_rows,
        ip_norm_max,
        stale_removed: Vec::new(),
        stale_left: Vec::new(),
        replaced_leftover: published.leftover.map(|p| p.display().to_string()),
        publish_warning: published.warning,
        partition: g.partition,
    })
}

/// Where a build writes its generation, and the PQ state the hot list needs.
struct GenFiles<'a> {
    dir: &'a Path,
    codes: &'a Path,
    codebook: &'a Codebook,
    space: PqSpace,
}

/// What the graph phases leave (besides the graph and hot files).
struct GraphOut {
    medoid: u32,
    degrees: (usize, f64, usize),
    unreachable: u64,
    phases: Vec<(String, f64)>,
    partition: Option<PartitionSummary>,
}

/// Appends node `id`'s vector (prepared, as f32) to `out`.
type RowFn<'a> = dyn FnMut(u32, &mut Vec<f32>) -> Result<(), IndexError> + 'a;

/// Writes the hot list: which nodes a sample of the data, searched as
/// queries with the disk search's own beam, expands most (it fills the
/// entry cache). `row(id, out)` gives a node's vector as f32 (prepared);
/// `neighbors(id, out)` its list.
fn write_hot(
    files: &GenFiles<'_>,
    header: &GraphHeader,
    dim: usize,
    row: &mut RowFn<'_>,
    neighbors: impl Fn(u32, &mut Vec<u32>) + Sync,
    progress: &dyn Progress,
) -> Result<f64, IndexError> {
    let t = Instant::now();
    progress.phase("hot list", 1);
    let n = header.count;
    let (codes_ram, _) = crate::format::codes::read_codes(files.codes)?;
    let sample = crate::search::hot::sample_ids(n, header.seed);
    let warm = crate::search::hot::WarmUp {
        codebook: files.codebook,
        codes: codes_ram.bytes(),
        chunks: header.pq_chunks as usize,
        space: files.space,
        medoid: header.medoid,
        n,
    };
    // The sample's vectors a block at a time.
    let fill = |start: usize, count: usize, out: &mut Vec<f32>| {
        out.clear();
        sample[start..start + count].iter().try_for_each(|&id| row(id, out))
    };
    let hot = crate::search::hot::rank_blocks(
        &warm,
        sample.len(),
        dim,
        fill,
        crate::search::hot::HOT_SAMPLE_LIST_SIZE,
        crate::search::hot::HOT_SAMPLE_BEAM_WIDTH,
        neighbors,
    )?;
    drop(codes_ram);
    // Written in place: the temporary directory is private, and a
    // temporary name here would be a file a later cleanup does not know.
    let hot_path = files.dir.join(super::HOT_FILE);
    write_synced(&hot_path, &crate::format::hot::encode_hot(&hot, header.ident))?;
    progress.phase_done();
    Ok(t.elapsed().as_secs_f64())
}

/// Rewrites the codes file in node order after a packing renumbered the
/// nodes (`row_of_slot[node]` is the row whose code it takes).
fn renumber_codes(files: &GenFiles<'_>, row_of_slot: &[u32]) -> Result<(), IndexError> {
    let (codes, _) = crate::format::codes::read_codes(files.codes)?;
    let chunks = codes.chunks();
    let mut w = CodesWriter::create(files.codes, chunks, codes.n(), codes.ident())?;
    let mut buf = Vec::with_capacity(chunks * 4096);
    for block in row_of_slot.chunks(4096) {
        buf.clear();
        for &r in block {
            buf.extend_from_slice(codes.row(r));
        }
        w.append(&buf)?;
    }
    w.finish()?;
    Ok(())
}

/// The packed placement of a graph whose lists `neighbors` appends (row
/// ids), when `opts` asks for it and records share sectors (see
/// [`packs`]), timed as the "placement" phase; sets `header.placement`.
/// The first error of `neighbors` fails it.
fn place(
    opts: &BuildOptions,
    header: &mut GraphHeader,
    medoid: u32,
    progress: &dyn Progress,
    phases: &mut Vec<(String, f64)>,
    neighbors: impl Fn(u32, &mut Vec<u32>) -> Result<(), IndexError>,
) -> Result<Option<super::placement::Packing>, IndexError> {
    let layout = header.layout();
    header.placement = Placement::RowOrder;
    if !packs(opts, &layout) {
        return Ok(None);
    }
    let t = Instant::now();
    progress.phase("placement", 1);
    let failed = std::cell::RefCell::new(None);
    let per_sector = layout.records_per_sector as usize;
    let p = super::placement::pack(header.count as u32, per_sector, medoid, |r, out| {
        if let Err(e) = neighbors(r, out) {
            failed.borrow_mut().get_or_insert(e);
        }
    });
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    progress.phase_done();
    phases.push(("placement".to_string(), t.elapsed().as_secs_f64()));
    header.placement = Placement::Packed;
    Ok(Some(p))
}

/// A packed generation's codes in node order and its ids file.
fn write_packing(
    files: &GenFiles<'_>,
    p: &super::placement::Packing,
    ident: FileIdent,
) -> Result<(), IndexError> {
    renumber_codes(files, &p.row_of_slot)?;
    write_row_ids(files.dir, &p.row_of_slot, ident)
}

/// Writes the ids file of a packed generation: node -> input row.
fn write_row_ids(dir: &Path, row_of_slot: &[u32], ident: FileIdent) -> Result<(), IndexError> {
    use crate::collection::ids::ExternalId;
    let path = dir.join(super::IDS_FILE);
    let mut w =
        crate::collection::idfile::IdFileWriter::create(&path, row_of_slot.len() as u64, ident)?;
    for &r in row_of_slot {
        w.append(Some(&ExternalId::Num(u64::from(r))))?;
    }
    w.finish()?;
    Ok(())
}

/// The input row of each node of a packed build (its ids file, written by
/// [`write_row_ids`]), or `None` when the build left nodes in row order.
/// The import and a collection's first build compose their own ids with it.
pub fn read_row_ids(dir: &Path, ident: FileIdent, n: u64) -> Result<Option<Vec<u32>>, IndexError> {
    use crate::collection::ids::ExternalId;
    let path = dir.join(super::IDS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let f = crate::collection::idfile::IdFile::open(&path, ident, n)?;
    let mut rows = Vec::with_capacity(n as usize);
    for (slot, id) in f.scan().enumerate() {
        match id? {
            Some(ExternalId::Num(r)) if r < n => rows.push(r as u32),
            other => {
                return Err(IndexError::Input(format!(
                    "{}: node {slot} maps to {other:?}, not an input row",
                    path.display()
                )));
            }
        }
    }
    Ok(Some(rows))
}

/// The graph built in memory at once: every vector loaded, Vamana, the
/// graph file written in one pass, the hot list.
fn in_memory_graph<T: DistanceElement>(
    file: &VectorFile,
    opts: &BuildOptions,
    mut header: GraphHeader,
    files: &GenFiles<'_>,
    progress: &dyn Progress,
) -> Result<GraphOut, IndexError> {
    let n = header.count;
    let dim = file.dim();
    let mut phases = Vec::new();
    let t = Instant::now();
    let data = load::<T>(file, opts.metric, progress)?;
    phases.push(("load".to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    let norm = (opts.metric == Metric::InnerProduct).then_some(header.ip_norm_max);
    let graph = vamana::build_with_norm(
        &data,
        dim,
        opts.metric,
        norm,
        &opts.graph,
        &GraphProgress(progress, n),
    )
    .map_err(IndexError::Input)?;
    progress.phase_done();
    phases.push(("graph".to_string(), t.elapsed().as_secs_f64()));

    let packing = place(opts, &mut header, graph.medoid(), progress, &mut phases, |r, out| {
        graph.with_neighbors(r, |nb| out.extend_from_slice(nb));
        Ok(())
    })?;
    // Node id -> input row, and row -> node id.
    let row_of = |id: u32| packing.as_ref().map_or(id, |p| p.row_of_slot[id as usize]);
    let slot_of = |row: u32| packing.as_ref().map_or(row, |p| p.slot_of_row[row as usize]);

    let t = Instant::now();
    progress.phase("write", n);
    header.medoid = slot_of(graph.medoid());
    let graph_path = files.dir.join(GRAPH_FILE);
    let mut w = GraphWriter::create(&graph_path, &header)?;
    let mut list = Vec::new();
    for id in 0..n as u32 {
        let r = row_of(id);
        list.clear();
        graph.with_neighbors(r, |nb| list.extend(nb.iter().map(|&u| slot_of(u))));
        w.append(graph.vector(r), &list)?;
        if id % 65_536 == 0 {
            progress.advance(id as u64);
        }
    }
    w.finish()?;
    if let Some(p) = &packing {
        write_packing(files, p, header.ident)?;
    }
    progress.phase_done();
    phases.push(("write".to_string(), t.elapsed().as_secs_f64()));

    let mut row = |id: u32, out: &mut Vec<f32>| {
        out.extend(graph.vector(row_of(id)).iter().map(|x| x.to_f32()));
        Ok(())
    };
    let neighbors = |id: u32, out: &mut Vec<u32>| {
        graph.with_neighbors(row_of(id), |nb| out.extend(nb.iter().map(|&u| slot_of(u))))
    };
    let hot_s = write_hot(files, &header, dim, &mut row, neighbors, progress)?;
    phases.push(("hot list".to_string(), hot_s));
    Ok(GraphOut {
        medoid: header.medoid,
        degrees: graph.degree_stats(),
        unreachable: graph.unreachable_from_medoid(),
        phases,
        partition: None,
    })
}

/// The partitioned build's graph (see [`partition`]): shards, merge and
/// connect in scratch files, then the graph file streamed from the input
/// and the merged lists, and the hot list. The scratch files are removed.
fn partitioned_graph<T: DistanceElement>(
    input: &partition::Input<'_>,
    mut header: GraphHeader,
    tmp: &Path,
    files: &GenFiles<'_>,
    progress: &dyn Progress,
) -> Result<GraphOut, IndexError> {
    let n = header.count;
    let dim = input.file.dim();
    let built = partition::build_graph::<T>(input, tmp, progress)?;
    let mut phases = built.phases;
    let adj = &built.adjacency;

    // The numbering comes from the merged lists in the adjacency file.
    let packing = place(input.opts, &mut header, built.medoid, progress, &mut phases, |r, out| {
        adj.read(r, out)
    })?;
    let row_of = |id: u32| packing.as_ref().map_or(id, |p| p.row_of_slot[id as usize]);
    let slot_of = |row: u32| packing.as_ref().map_or(row, |p| p.slot_of_row[row as usize]);

    let t = Instant::now();
    progress.phase("write", n);
    header.medoid = slot_of(built.medoid);
    let graph_path = files.dir.join(GRAPH_FILE);
    let mut w = GraphWriter::create(&graph_path, &header)?;
    let (mut rows, mut list): (Vec<T>, Vec<u32>) = (Vec::new(), Vec::new());
    let (mut dmin, mut dsum, mut dmax) = (usize::MAX, 0u64, 0usize);
    let mut append = |w: &mut GraphWriter, row: &[T], r: u32, list: &mut Vec<u32>| {
        list.clear();
        adj.read(r, list)?;
        list.iter_mut().for_each(|u| *u = slot_of(*u));
        (dmin, dmax, dsum) = (dmin.min(list.len()), dmax.max(list.len()), dsum + list.len() as u64);
        w.append(row, list)?;
        Ok::<(), IndexError>(())
    };
    let mut start = 0u64;
    let batch = batch_rows((dim * T::TYPE.size_bytes()) as u64);
    while start < n {
        let m = (n - start).min(batch as u64) as usize;
        if packing.is_some() {
            // Node order is the packing's: one row at a time, in no order
            // of the input (a page-cache read each, for an input that fits).
            for id in start..start + m as u64 {
                let r = row_of(id as u32);
                read_checked(input.file, u64::from(r), 1, input.opts.metric, &mut rows)?;
                append(&mut w, &rows, r, &mut list)?;
            }
        } else {
            read_checked(input.file, start, m, input.opts.metric, &mut rows)?;
            for (i, row) in rows.chunks_exact(dim).enumerate() {
                append(&mut w, row, (start + i as u64) as u32, &mut list)?;
            }
        }
        start += m as u64;
        progress.advance(start);
    }
    w.finish()?;
    if let Some(p) = &packing {
        write_packing(files, p, header.ident)?;
    }
    progress.phase_done();
    phases.push(("write".to_string(), t.elapsed().as_secs_f64()));

    // The phases before leave freed blocks in the heap; the plan counts
    // each phase's memory alone.
    super::release_free_memory();
    let mut one: Vec<T> = Vec::new();
    let mut row = |id: u32, out: &mut Vec<f32>| {
        read_checked(input.file, u64::from(row_of(id)), 1, input.opts.metric, &mut one)?;
        out.extend(one.iter().map(|x| x.to_f32()));
        Ok(())
    };
    let neighbors = |id: u32, out: &mut Vec<u32>| {
        // A read error here would have failed the write pass just before.
        let at = out.len();
        adj.read(row_of(id), out).expect("the adjacency scratch file reads back");
        out[at..].iter_mut().for_each(|u| *u = slot_of(*u));
    };
    let hot_s = write_hot(files, &header, dim, &mut row, neighbors, progress)?;
    phases.push(("hot list".to_string(), hot_s));
    let scratch = tmp.join(partition::SCRATCH_DIR);
    drop(built.adjacency);
    fs::remove_dir_all(&scratch).map_err(|e| IndexError::io(&scratch, "remove", e))?;
    Ok(GraphOut {
        medoid: header.medoid,
        degrees: (dmin, dsum as f64 / n as f64, dmax),
        // The connect phase fails the build unless every node is reached.
        unreachable: 0,
        phases,
        partition: Some(built.summary),
    })
}

/// Reads rows `start..start+m` into `out`, rejecting non-finite values
/// (naming row and column); normalised for cosine.
pub(crate) fn read_checked<T: Element>(
    file: &VectorFile,
    start: u64,
    m: usize,
    metric: Metric,
    out: &mut Vec<T>,
) -> Result<(), IndexError> {
    let dim = file.dim();
    file.read_rows_checked::<T>(start, m, out)?;
    if metric == Metric::Cosine {
        normalize_all(out, dim);
    }
    Ok(())
}

/// Reads all vectors into RAM (validated, normalised for cosine).
fn load<T: Element>(
    file: &VectorFile,
    metric: Metric,
    progress: &dyn Progress,
) -> Result<Vec<T>, IndexError> {
    let n = file.len();
    let dim = file.dim();
    progress.phase("load", n);
    let mut data: Vec<T> = Vec::with_capacity(n as usize * dim);
    let mut buf = Vec::new();
    let mut start = 0;
    while start < n {
        let m = (n - start).min(batch_rows((dim * T::TYPE.size_bytes()) as u64) as u64) as usize;
        read_checked(file, start, m, metric, &mut buf)?;
        data.extend_from_slice(&buf);
        start += m as u64;
        progress.advance(start);
    }
    progress.phase_done();
    Ok(data)
}

/// Normalises every row for cosine (only f32 reaches here, checked up front).
fn normalize_all<T: Element>(data: &mut [T], dim: usize) {
    if T::TYPE == ElementType::F32 {
        data.par_chunks_mut(dim).for_each(|row| {
            let mut v: Vec<f32> = row.iter().map(|x| x.to_f32()).collect();
            normalize(&mut v);
            row.iter_mut().zip(&v).for_each(|(r, x)| *r = T::from_f32(*x));
        });
    }
}

/// The largest squared norm of the file's rows (streamed), for the
/// inner-product PQ space.
fn norm_sq_max<T: Element>(file: &VectorFile) -> Result<f32, IndexError> {
    let dim = file.dim();
    let row_bytes = (dim * T::TYPE.size_bytes()) as u64;
    let mut rows: Vec<T> = Vec::new();
    let mut best = 0.0f32;
    let mut start = 0u64;
    while start < file.len() {
        let m = (file.len() - start).min(batch_rows(row_bytes) as u64) as usize;
        read_checked(file, start, m, Metric::InnerProduct, &mut rows)?;
        let b = rows
            .par_chunks(dim)
            .map(|r| r.iter().map(|x| x.to_f32() * x.to_f32()).sum::<f32>())
            .reduce(|| 0.0, f32::max);
        best = best.max(b);
        start += m as u64;
    }
    Ok(best)
}

/// A seeded sample of at most `max` rows read from the file, in PQ space
/// (validated, normalised for cosine, augmented for inner product).
fn pq_sample<T: Element>(
    file: &VectorFile,
    space: &PqSpace,
    max: usize,
    seed: u64,
) -> Result<Vec<f32>, IndexError> {
    let n = file.len() as usize;
    let dim = file.dim();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7071_5f73_616d_706c);
    let mut idx: Vec<usize> = if n <= max {
        (0..n).collect()
    } else {
        rand::seq::index::sample(&mut rng, n, max).into_vec()
    };
    idx.sort_unstable();
    let mut out = Vec::with_capacity(idx.len() * space.dim(dim));
    let mut row: Vec<T> = Vec::with_capacity(dim);
    for i in idx {
        read_checked(file, i as u64, 1, space.metric, &mut row)?;
        space.push_row(row.iter().map(|x| x.to_f32()), &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{Mixture, STREAM_BASE, write_stream};

    fn small_index(dir: &Path, n: u64, dim: usize) -> PathBuf {
        let m = Mixture::new(dim, 4, 1).unwrap();
        let base = dir.join("b.fbin");
        write_stream::<f32>(&m, &base, n, 1, STREAM_BASE, &|_| {}).unwrap();
        let out = dir.join("idx");
        let opts = BuildOptions {
            graph: BuildParams { degree_max: 8, list_size: 12, ..Default::default() },
            pq_chunks: 2,
            ..Default::default()
        };
        build_index(&base, &out, &opts, &()).unwrap();
        out
    }

    /// One flipped byte anywhere in a record (vector, degree, ids, padding
    /// ids, checksum) makes `verify` fail naming that node and its sector.
    #[test]
    fn verify_names_every_flipped_record_byte() {
        let dir = tempfile::tempdir().unwrap();
        let idx = small_index(dir.path(), 60, 4);
        assert_eq!(super::super::verify::verify_index(&idx).unwrap().nodes, 60);
        let m = super::super::read_manifest(&idx).unwrap();
        let gp = m.file(&idx, GRAPH_FILE);
        let h = crate::format::graph::read_graph_header(&gp).unwrap();
        let l = h.layout();
        let original = fs::read(&gp).unwrap();
        let node = 37u32;
        let at = l.record_offset(node) as usize;
        for i in 0..l.record_bytes as usize {
            let mut b = original.clone();
            b[at + i] ^= 0x40;
            fs::write(&gp, &b).unwrap();
            let e = super::super::verify::verify_index(&idx).unwrap_err().to_string();
            assert!(
                e.contains(&format!("node {node} (sector {})", l.sector_of(node))),
                "byte {i}: {e}"
            );
        }
        // A flip in sector padding (outside every record) is caught by the
        // whole-file checksum.
        let mut b = original.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        fs::write(&gp, &b).unwrap();
        let e = super::super::verify::verify_index(&idx).unwrap_err().to_string();
        assert!(e.contains("file checksum"), "{e}");
    }

    /// A build killed before the rename leaves nothing that opens as an index,
    /// and a build that fails part-way leaves no temporary directory.
    #[test]
    fn failed_build_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mixture::new(4, 2, 1).unwrap();
        let base = dir.path().join("b.fbin");
        write_stream::<f32>(&m, &base, 50, 1, STREAM_BASE, &|_| {}).unwrap();
        // Inject a NaN in the last row: PQ training passes, encoding fails.
        let mut bytes = fs::read(&base).unwrap();
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
        fs::write(&base, &bytes).unwrap();
        let out = dir.path().join("idx");
        let opts = BuildOptions { pq_chunks: 2, pq_sample_max: 10, ..Default::default() };
        let e = build_index(&base, &out, &opts, &()).unwrap_err().to_string();
        assert!(e.contains("row 49 dimension 3"), "{e}");
        let left: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("b.fbin")], "only the input remains");
    }
}
