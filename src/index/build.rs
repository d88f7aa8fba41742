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

use super::{
    BuildInfo, CODES_FILE, FileEntry, GRAPH_FILE, IndexError, MANIFEST_FILE, MANIFEST_VERSION,
    Manifest, PQ_FILE, available_memory_bytes, peak_rss_bytes, pqspace,
};
use crate::distance::{DistanceElement, Metric, normalize};
use crate::element::{Element, ElementType};
use crate::format::codes::CodesWriter;
use crate::format::graph::{GraphHeader, GraphWriter};
use crate::fsutil::{parent_dir, sync_dir};
use crate::pq::{Codebook, PQ_ITERS_DEFAULT, PQ_SAMPLE_DEFAULT, PqParams};
use crate::vamana::{self, BuildParams};
use crate::vecfile::VectorFile;

/// Rows encoded per PQ batch (bounds the codes buffer).
const ENCODE_BATCH_ROWS: usize = 65_536;

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
}

/// Removes a temporary build directory unless disarmed.
struct TempDirGuard(Option<PathBuf>);

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_dir_all(p);
        }
    }
}

/// Builds the index of `data` into `out`, with the current rayon pool.
pub fn build_index(
    data: &Path,
    out: &Path,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildSummary, IndexError> {
    opts.graph.validate().map_err(IndexError::Input)?;
    check_output(out, opts.force)?;
    let file = VectorFile::open(data)?;
    check_input(&file, opts)?;
    crate::with_element!(file.element_type(), T => build_typed::<T>(&file, out, opts, progress))
}

fn check_output(out: &Path, force: bool) -> Result<(), IndexError> {
    if !out.exists() {
        return Ok(());
    }
    if !force {
        return Err(IndexError::Exists {
            path: out.to_path_buf(),
            what: "already exists; pass --force to replace it".into(),
        });
    }
    // Only ever delete what is recognisably an index (or an empty directory).
    let is_index = out.join(MANIFEST_FILE).is_file();
    let is_empty_dir = out.is_dir()
        && fs::read_dir(out).map_err(|e| IndexError::io(out, "read_dir", e))?.next().is_none();
    if !(is_index || is_empty_dir) {
        return Err(IndexError::Exists {
            path: out.to_path_buf(),
            what: "exists and is not a basalt index; refusing to replace it even with --force"
                .into(),
        });
    }
    Ok(())
}

fn check_input(file: &VectorFile, opts: &BuildOptions) -> Result<(), IndexError> {
    let path = file.path().display();
    if file.is_empty() {
        return Err(IndexError::Input(format!("{path}: holds no vectors")));
    }
    if file.len() >= u32::MAX as u64 {
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
    if need > budget {
        return Err(IndexError::Input(format!(
            "an in-memory build of {n} x {} needs about {:.1} GiB but the budget is {:.1} GiB; \
             the partitioned build for larger inputs is not implemented yet",
            file.dim(),
            need as f64 / (1u64 << 30) as f64,
            budget as f64 / (1u64 << 30) as f64
        )));
    }
    Ok(())
}

/// The build's memory footprint: vectors, adjacency lists with slack, codes,
/// PQ sample and per-thread visited sets.
pub fn estimate_memory_bytes(n: u64, dim: usize, element: ElementType, opts: &BuildOptions) -> u64 {
    let vectors = n * (dim * element.size_bytes()) as u64;
    let adjacency = n * (((opts.graph.degree_max as f32 * vamana::SLACK) as u64 + 2) * 4 + 48);
    let codes = (ENCODE_BATCH_ROWS * opts.pq_chunks) as u64;
    let sample = (opts.pq_sample_max as u64).min(n) * dim as u64 * 4;
    let visited = n * 4 * rayon::current_num_threads() as u64;
    vectors + adjacency + codes + sample + visited
}

fn build_typed<T: DistanceElement>(
    file: &VectorFile,
    out: &Path,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildSummary, IndexError> {
    let started = Instant::now();
    let mut phases = Vec::new();
    let n = file.len();
    let dim = file.dim();

    let parent = parent_dir(out);
    let name = out.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.building-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| IndexError::io(&tmp, "remove stale", e))?;
    }
    let mut guard = TempDirGuard(Some(tmp.clone()));
    let gen_dir = tmp.join("gen-0");
    fs::create_dir_all(&gen_dir).map_err(|e| IndexError::io(&gen_dir, "mkdir", e))?;

    // PQ first, streamed from the file in batches, so this phase works for
    // inputs of any size (and finds a bad value before the expensive parts).
    let t = Instant::now();
    progress.phase("pq train", 1);
    let norm_sq_max = match opts.metric {
        Metric::InnerProduct => norm_sq_max::<T>(file)?,
        _ => 0.0,
    };
    let pq_dim = pqspace::pq_dim(opts.metric, dim);
    let sample =
        pq_sample::<T>(file, opts.metric, norm_sq_max, opts.pq_sample_max, opts.graph.seed)?;
    let params = PqParams {
        chunks: opts.pq_chunks,
        sample_max: opts.pq_sample_max,
        iters_max: opts.pq_iters_max,
        seed: opts.graph.seed,
    };
    let codebook = Codebook::train(&sample, pq_dim, &params)?;
    drop(sample);
    let pq_path = gen_dir.join(PQ_FILE);
    crate::format::pq::write_codebook(&pq_path, &codebook)?;
    progress.phase_done();
    phases.push(("pq train".to_string(), t.elapsed().as_secs_f64()));

    let t = Instant::now();
    progress.phase("pq encode", n);
    let codes_path = gen_dir.join(CODES_FILE);
    let mut codes = CodesWriter::create(&codes_path, opts.pq_chunks, n)?;
    let mut buf = vec![0u8; ENCODE_BATCH_ROWS * opts.pq_chunks];
    let mut rows: Vec<T> = Vec::new();
    let mut space: Vec<f32> = Vec::new();
    let mut start = 0u64;
    while start < n {
        let m = (n - start).min(ENCODE_BATCH_ROWS as u64) as usize;
        read_checked(file, start, m, opts.metric, &mut rows)?;
        space.clear();
        for row in rows.chunks_exact(dim) {
            pqspace::push_row(row.iter().map(|x| x.to_f32()), opts.metric, norm_sq_max, &mut space);
        }
        codebook.encode_batch(&space, &mut buf[..m * opts.pq_chunks]);
        codes.append(&buf[..m * opts.pq_chunks])?;
        start += m as u64;
        progress.advance(start);
    }
    drop(rows);
    codes.finish()?;
    progress.phase_done();
    phases.push(("pq encode".to_string(), t.elapsed().as_secs_f64()));

    // The in-memory graph build needs every vector in RAM.
    let t = Instant::now();
    let data = load::<T>(file, opts.metric, progress)?;
    phases.push(("load".to_string(), t.elapsed().as_secs_f64()));

    // Graph.
    let t = Instant::now();
    let graph = vamana::build(&data, dim, opts.metric, &opts.graph, &GraphProgress(progress, n))
        .map_err(IndexError::Input)?;
    progress.phase_done();
    phases.push(("graph".to_string(), t.elapsed().as_secs_f64()));
    let (degree_min, degree_mean, degree_max) = graph.degree_stats();

    // Write the graph file.
    let t = Instant::now();
    progress.phase("write", n);
    let header = GraphHeader {
        metric: opts.metric,
        element: T::TYPE,
        dim: dim as u32,
        degree_max: opts.graph.degree_max as u32,
        count: n,
        medoid: graph.medoid(),
        pq_chunks: opts.pq_chunks as u32,
        list_size: opts.graph.list_size as u32,
        alpha: opts.graph.alpha,
        passes: opts.graph.passes as u32,
        seed: opts.graph.seed,
    };
    let graph_path = gen_dir.join(GRAPH_FILE);
    let mut w = GraphWriter::create(&graph_path, &header)?;
    for id in 0..n as u32 {
        graph.with_neighbors(id, |nb| w.append(graph.vector(id), nb))?;
        if id % 65_536 == 0 {
            progress.advance(id as u64);
        }
    }
    w.finish()?;
    let medoid = graph.medoid();
    drop(graph);
    drop(data);
    progress.phase_done();

    // Manifest (sizes and whole-file checksums), fsync, rename into place.
    let mut files = Vec::new();
    for name in [GRAPH_FILE, PQ_FILE, CODES_FILE] {
        let p = gen_dir.join(name);
        files.push(FileEntry {
            name: format!("gen-0/{name}"),
            bytes: fs::metadata(&p).map_err(|e| IndexError::io(&p, "stat", e))?.len(),
            xxh3: super::verify::file_xxh3(&p)?,
        });
    }
    let manifest = Manifest {
        format_version: MANIFEST_VERSION,
        generation: 0,
        lsn: 0,
        metric: opts.metric,
        element: T::TYPE,
        dim: dim as u32,
        count: n,
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
    };
    let mpath = tmp.join(MANIFEST_FILE);
    fs::write(&mpath, manifest.encode()).map_err(|e| IndexError::io(&mpath, "write", e))?;
    fs::File::open(&mpath)
        .and_then(|f| f.sync_all())
        .map_err(|e| IndexError::io(&mpath, "fsync", e))?;
    sync_dir(&gen_dir).map_err(|e| IndexError::io(&gen_dir, "fsync", e))?;
    sync_dir(&tmp).map_err(|e| IndexError::io(&tmp, "fsync", e))?;
    install(&tmp, out, opts.force)?;
    guard.0 = None;
    phases.push(("write".to_string(), t.elapsed().as_secs_f64()));

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
    })
}

/// Moves the finished build into place; an index being replaced is moved
/// aside first and removed only after the new one is in place.
fn install(tmp: &Path, out: &Path, force: bool) -> Result<(), IndexError> {
    let parent = parent_dir(out);
    let old = if force && out.exists() {
        let name = out.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let old = parent.join(format!(".{name}.replaced-{}", std::process::id()));
        fs::rename(out, &old).map_err(|e| IndexError::io(out, "move aside", e))?;
        Some(old)
    } else {
        None
    };
    fs::rename(tmp, out).map_err(|e| IndexError::io(out, "rename into place", e))?;
    sync_dir(&parent).map_err(|e| IndexError::io(&parent, "fsync", e))?;
    if let Some(old) = old {
        fs::remove_dir_all(&old).map_err(|e| IndexError::io(&old, "remove replaced index", e))?;
    }
    Ok(())
}

/// Reads rows `start..start+m` into `out`, rejecting non-finite values
/// (naming row and column); normalised for cosine.
fn read_checked<T: Element>(
    file: &VectorFile,
    start: u64,
    m: usize,
    metric: Metric,
    out: &mut Vec<T>,
) -> Result<(), IndexError> {
    let dim = file.dim();
    file.read_rows::<T>(start, m, out)?;
    if let Some(i) = out.iter().position(|x| !x.is_valid()) {
        return Err(IndexError::Input(format!(
            "{}: row {} dimension {} is {:?}: every value must be finite",
            file.path().display(),
            start + (i / dim) as u64,
            i % dim,
            out[i]
        )));
    }
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
        let m = (n - start).min(ENCODE_BATCH_ROWS as u64) as usize;
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
    let mut rows: Vec<T> = Vec::new();
    let mut best = 0.0f32;
    let mut start = 0u64;
    while start < file.len() {
        let m = (file.len() - start).min(ENCODE_BATCH_ROWS as u64) as usize;
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
    metric: Metric,
    norm_sq_max: f32,
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
    let mut out = Vec::with_capacity(idx.len() * pqspace::pq_dim(metric, dim));
    let mut row: Vec<T> = Vec::with_capacity(dim);
    for i in idx {
        read_checked(file, i as u64, 1, metric, &mut row)?;
        pqspace::push_row(row.iter().map(|x| x.to_f32()), metric, norm_sq_max, &mut out);
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
            graph: BuildParams { degree_max: 6, list_size: 12, ..Default::default() },
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
