//! The partitioned build: the Vamana graph of an input whose in-memory
//! build does not fit the memory budget (the merged build of the DiskANN
//! paper, Subramanya et al. 2019, section 3.3, with the merge pruning each
//! node's union of edges back to R instead of truncating it).
//!
//! Phases, each within the budget whatever N is:
//! 1. **Plan** ([`plan`]): the largest shard the budget can build and merge
//!    in RAM, and from it the shard count k (every point is in
//!    [`SHARD_REPLICAS`] shards and shards are planned [`SHARD_FILL`] full).
//! 2. **Partition**: k-means (k centres) on a seeded sample of the centred
//!    input; one streamed pass then puts each point in its 2 nearest shards
//!    that still have room (capacity-bounded, so no shard outgrows the
//!    budget however uneven the clusters), and a point near a three-way
//!    boundary in its third nearest too (see [`THIRD_COPY_RATIO`]),
//!    appending its vector and a member record to the shard's scratch
//!    files, and finds the medoid (the point nearest the mean) on the way.
//! 3. **Shard graphs**: each shard's vectors are loaded and its Vamana built
//!    in memory with the build's own parameters (and the index's
//!    inner-product M); its lists, in global ids, go to a scratch file.
//! 4. **Merge**, shard by shard over the points whose nearest shard it is
//!    (their "home"): each point's candidates are the union of its lists in
//!    its shards, RobustPrune (the build's alpha and R) picks the final
//!    list with exact distances; the home shard's vectors are in RAM and the
//!    few candidates outside it are read from the input, in blocks whose
//!    size the budget bounds. Lists go to a scratch adjacency file indexed
//!    by node id. The medoid gets an edge to every shard's medoid.
//! 5. **Connect**: a level-by-level BFS from the medoid over that file (three
//!    bitsets of N bits); a node no path reaches gets an in-edge from one of
//!    its out-neighbours that is reached (rounds, bounded).
//! 6. **Write**: packed placement numbers the nodes from the merged lists
//!    (as the in-memory build does), then the input and the adjacency file
//!    go, in node order, into the usual graph file; then the hot list, its
//!    warm-up reading lists from the adjacency file.
//!
//! With one thread and a seed the result is the same run to run (k-means,
//! assignment, shard builds and merge are all seeded and ordered).

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::IndexError;
use super::build::{BuildOptions, Progress};
use crate::distance::{Distance, DistanceElement, Metric};
use crate::element::ElementType;
use crate::pq::kmeans::{CenterTable, kmeans};
use crate::vamana::{self, PruneRule, PruneScratch, robust_prune_by};
use crate::vecfile::VectorFile;

/// Shards each point is placed in (DiskANN's merged build uses 2).
pub const SHARD_REPLICAS: usize = 2;
/// Most shards a point is placed in: a point near a three-way boundary
/// (see [`THIRD_COPY_RATIO`]) also goes to its third nearest shard while
/// that holds fewer than [`SHARD_FILL`] of its capacity (the room the plan
/// leaves for uneven clusters, so third copies never displace a first or
/// second copy).
pub const REPLICAS_MAX: usize = 3;
/// A point takes a third copy when its squared distance to the third
/// nearest centre is at most this many times that to the nearest. With 2
/// copies a point's list holds only neighbours that share one of its 2
/// shards, and near a three-way boundary many do not: on 100K x 64
/// synthetic in 5 shards (a budget of 0.085 GiB) recall@10 at L 16/32/48
/// was 0.660/0.843/0.925 against the one-shot build's 0.692/0.860/0.934.
/// At 1.3 (53% of the points took a third copy, the build took 1.6x as
/// long) it was 0.687/0.863/0.934; at 1.15 (8%), 0.679/0.856/0.927; with
/// every point in 3 shards, 0.688/0.862/0.933 (and 6,530 points displaced).
pub const THIRD_COPY_RATIO: f32 = 1.3;
/// Shards are planned to be this full on average, so that the
/// capacity-bounded assignment has room for uneven clusters.
pub const SHARD_FILL: f64 = 0.8;
/// A shard the sample says will fill more than this share of its
/// capacity is split before the assignment pass.
pub const SHARD_SPLIT_FILL: f64 = 0.9;
/// Rounds of splitting.
const BALANCE_ROUNDS_MAX: usize = 8;
/// Most shards a build plans (a smaller budget for the input is refused).
pub const SHARDS_MAX: usize = 4096;
/// Smallest shard worth building: a budget that only fits smaller shards is
/// refused as too small for the input.
pub const SHARD_POINTS_MIN: u64 = 1024;
/// Memory of the process besides what the build plans (binary, allocator,
/// thread stacks), counted against the budget.
pub const PROCESS_BASE_BYTES: u64 = 24 << 20;
/// Share of the budget the merge keeps for the vectors of candidates outside
/// the home shard (read from the input per block).
pub const MERGE_EXTRA_SHARE: f64 = 0.125;
/// Most points the merge prunes per block.
pub const MERGE_BLOCK_MAX: usize = 16_384;
/// Most points of the k-means sample.
pub const PARTITION_SAMPLE_MAX: usize = 262_144;
/// Sample points per centre the k-means aims for.
pub const PARTITION_SAMPLE_PER_SHARD: usize = 2_000;
/// Lloyd iterations of the partitioning k-means.
pub const PARTITION_KMEANS_ITERS: usize = 12;
/// Rows per batch of the streamed passes.
const BATCH_ROWS: usize = 16_384;
/// Buffer of each shard scratch writer.
const WRITER_BUFFER_BYTES: usize = 64 << 10;
/// Rounds of the reconnection of unreached nodes.
const CONNECT_ROUNDS_MAX: usize = 8;
/// The scratch directory inside a build's temporary directory.
pub const SCRATCH_DIR: &str = "partition-scratch";
/// No shard (a member record of a point in one shard only).
const NO_SHARD: u32 = u32::MAX;

/// What the partitioned build will do, and what it needs.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct PartitionPlan {
    pub shards: usize,
    /// Most points a shard may take (its capacity).
    pub shard_points_max: u64,
    /// Planned peak memory of the whole build.
    pub memory_bytes: u64,
    /// Scratch disk space (freed when the build ends).
    pub scratch_bytes: u64,
}

/// What one run of the partitioned build did.
#[derive(Clone, Debug, serde::Serialize, PartialEq)]
pub struct PartitionSummary {
    pub shards: usize,
    pub shard_points_max: u64,
    /// Points per shard, as assigned.
    pub shard_points: Vec<u64>,
    /// Points placed in one shard only (all others had no room).
    pub single_placed: u64,
    /// Points placed in a shard other than their 2 nearest (full ones).
    pub displaced: u64,
    /// Points placed in a third shard (near a three-way boundary).
    pub third_placed: u64,
    /// Candidate vectors the merge read from the input (outside the home shard).
    pub merge_extra_reads: u64,
    /// Edges the connect phase added for nodes the medoid did not reach.
    pub connect_edges: u64,
}

/// Bytes of one node's list in the scratch files: degree, then R ids.
fn list_bytes(degree_max: usize) -> u64 {
    4 * (degree_max as u64 + 1)
}

/// Per-point memory of a shard: the larger of its build (vectors, lists
/// with the back-edge slack, visited sets, order and augmentation, member
/// records) and its merge (vectors, member records, lists in RAM).
fn shard_point_bytes(dim: usize, element: ElementType, degree_max: usize, threads: usize) -> u64 {
    let vb = (dim * element.size_bytes()) as u64;
    let build = vb + super::build::adjacency_bytes_per_node(degree_max) + 4 * threads as u64 + 24;
    let merge = vb + Member::BYTES as u64 + list_bytes(degree_max);
    build.max(merge)
}

/// Plans the partitioned build of `n` x `dim` under `budget` bytes with
/// `threads` threads: the shard size, the shard count and the memory of
/// every phase (the largest is the planned peak). Errors say which part
/// does not fit.
pub fn plan(
    n: u64,
    dim: usize,
    element: ElementType,
    opts: &BuildOptions,
    budget: u64,
    threads: usize,
) -> Result<PartitionPlan, String> {
    let gib = |b: u64| format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64);
    let r = opts.graph.degree_max;
    let vb = (dim * element.size_bytes()) as u64;
    let usable = budget.saturating_sub(PROCESS_BASE_BYTES);
    let reserve = (usable as f64 * MERGE_EXTRA_SHARE) as u64;
    let per_point = shard_point_bytes(dim, element, r, threads);
    let room = (usable - reserve) / per_point;
    let cap = match opts.shards {
        Some(0) | Some(1) => {
            return Err(format!("--shards {} must be at least 2", opts.shards.unwrap_or(0)));
        }
        Some(k) if k > SHARDS_MAX => {
            return Err(format!("--shards {k} is more than {SHARDS_MAX} (SHARDS_MAX)"));
        }
        Some(k) => {
            let want = (SHARD_REPLICAS as f64 * n as f64 / (k as f64 * SHARD_FILL)).ceil() as u64;
            if want > room {
                return Err(format!(
                    "{k} shards of {want} points do not fit the memory budget of {} (at most \
                     {room} points a shard)",
                    gib(budget)
                ));
            }
            want.max(1)
        }
        None => room,
    };
    if opts.shards.is_none() && cap < SHARD_POINTS_MIN {
        return Err(format!(
            "the memory budget of {} leaves room for shards of {cap} points (at {per_point} bytes \
             a point); the partitioned build needs at least {SHARD_POINTS_MIN} (SHARD_POINTS_MIN)",
            gib(budget)
        ));
    }
    let shards = ((SHARD_REPLICAS as f64 * n as f64) / (cap as f64 * SHARD_FILL)).ceil() as usize;
    let shards = opts.shards.unwrap_or(shards.max(SHARD_REPLICAS));
    if shards > SHARDS_MAX {
        return Err(format!(
            "{n} points in shards of at most {cap} need {shards} shards, more than \
             {SHARDS_MAX} (SHARDS_MAX); raise the memory budget (now {})",
            gib(budget)
        ));
    }
    // The phases besides the shards: PQ (sample and encode batch), the
    // partition pass (k-means sample, writers, distances), connect (three
    // bitsets), the hot list (codes in RAM, sample queries, counts).
    let pq_dim = super::pqspace::pq_dim(opts.metric, dim) as u64;
    let pq_row = vb + 4 * pq_dim + opts.pq_chunks as u64;
    let pq = (opts.pq_sample_max as u64).min(n) * pq_dim * 4
        + super::build::batch_rows(pq_row) as u64 * pq_row;
    let sample = partition_sample_size(n, shards) as u64;
    let partition = sample * dim as u64 * 4 * 2
        + 2 * shards as u64 * WRITER_BUFFER_BYTES as u64
        + BATCH_ROWS as u64 * (vb + 4 * dim as u64 + 4 * shards as u64);
    let connect = 3 * n.div_ceil(64) * 8;
    // A packed build's placement (BFS order and both maps); the maps stay
    // for the write pass, the codes' renumbering and the hot list.
    let layout = crate::format::graph::Layout::new(dim as u32, element, r as u32, n, 0);
    let packs = super::build::packs(opts, &layout);
    let (placement, maps) = if packs { (12 * n, 8 * n) } else { (0, 0) };
    let hot_queries = crate::search::hot::sample_size(n) as u64;
    let hot = n * opts.pq_chunks as u64
        + hot_queries * dim as u64 * 4
        + threads as u64 * n.min(hot_queries * 64) * 16
        + maps;
    let shard_phase = cap * per_point + reserve;
    let memory_bytes = PROCESS_BASE_BYTES
        + shard_phase.max(pq).max(partition).max(connect).max(hot).max(placement);
    if memory_bytes > budget {
        return Err(format!(
            "the partitioned build of {n} x {dim} needs about {} besides its shards (PQ {}, \
             partition {}, connect {}, packed placement {}, hot list with every PQ code in RAM \
             {}) but the budget is {}",
            gib(memory_bytes),
            gib(pq),
            gib(partition),
            gib(connect),
            gib(placement),
            gib(hot),
            gib(budget)
        ));
    }
    // Third copies take at most the room the fill leaves.
    let copies = (REPLICAS_MAX as u64 * n).min(shards as u64 * cap);
    let scratch_bytes = copies * (vb + Member::BYTES as u64 + list_bytes(r)) + n * list_bytes(r);
    Ok(PartitionPlan { shards, shard_points_max: cap, memory_bytes, scratch_bytes })
}

fn partition_sample_size(n: u64, shards: usize) -> usize {
    (shards * PARTITION_SAMPLE_PER_SHARD).clamp(16_384, PARTITION_SAMPLE_MAX).min(n as usize)
}

/// A point's record in a shard's member file.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Member {
    id: u32,
    /// The point's other shards ([`NO_SHARD`] where none) and its index in
    /// each.
    others: [(u32, u32); REPLICAS_MAX - 1],
    /// This shard is the point's home (its nearest with room).
    home: bool,
}

impl Member {
    const BYTES: usize = 8 + 8 * (REPLICAS_MAX - 1);
    fn encode(&self) -> [u8; Self::BYTES] {
        let mut b = [0u8; Self::BYTES];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..8].copy_from_slice(&u32::from(self.home).to_le_bytes());
        for (j, (s, l)) in self.others.iter().enumerate() {
            b[8 + 8 * j..12 + 8 * j].copy_from_slice(&s.to_le_bytes());
            b[12 + 8 * j..16 + 8 * j].copy_from_slice(&l.to_le_bytes());
        }
        b
    }
    fn decode(b: &[u8]) -> Member {
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Member {
            id: u(0),
            home: u(4) != 0,
            others: std::array::from_fn(|j| (u(8 + 8 * j), u(12 + 8 * j))),
        }
    }
}

struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn vectors(&self, s: usize) -> PathBuf {
        self.dir.join(format!("shard-{s}.vectors"))
    }
    fn members(&self, s: usize) -> PathBuf {
        self.dir.join(format!("shard-{s}.members"))
    }
    fn lists(&self, s: usize) -> PathBuf {
        self.dir.join(format!("shard-{s}.lists"))
    }
    fn adjacency(&self) -> PathBuf {
        self.dir.join("adjacency")
    }
}

/// Whether `name` is a file the partitioned build writes in its scratch
/// directory (what the removal of a killed build's directory may delete).
pub(crate) fn is_scratch_file(name: &str) -> bool {
    name == "adjacency"
        || name.strip_prefix("shard-").is_some_and(|rest| {
            let (num, ext) = rest.split_once('.').unwrap_or((rest, ""));
            num.parse::<u64>().is_ok() && matches!(ext, "vectors" | "members" | "lists")
        })
}

/// The graph a partitioned build leaves in its scratch adjacency file.
pub(crate) struct Adjacency {
    file: File,
    path: PathBuf,
    degree_max: usize,
    n: u64,
}

impl Adjacency {
    fn create(path: &Path, n: u64, degree_max: usize) -> Result<Adjacency, IndexError> {
        let file = fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| IndexError::io(path, "create", e))?;
        file.set_len(n * list_bytes(degree_max))
            .map_err(|e| IndexError::io(path, "truncate", e))?;
        Ok(Adjacency { file, path: path.to_path_buf(), degree_max, n })
    }

    /// Opens a list file of `n` nodes for reading (a shard's lists).
    fn open(path: &Path, n: u64, degree_max: usize) -> Result<Adjacency, IndexError> {
        let file = File::open(path).map_err(|e| IndexError::io(path, "open", e))?;
        Ok(Adjacency { file, path: path.to_path_buf(), degree_max, n })
    }

    /// Appends node `id`'s list to `out`.
    pub(crate) fn read(&self, id: u32, out: &mut Vec<u32>) -> Result<(), IndexError> {
        let lb = list_bytes(self.degree_max) as usize;
        let mut buf = [0u8; 4 * (vamana::DEGREE_MAX + 1)];
        self.file
            .read_exact_at(&mut buf[..lb], u64::from(id) * lb as u64)
            .map_err(|e| IndexError::io(&self.path, "read", e))?;
        decode_list(&buf[..lb], self.degree_max, out);
        Ok(())
    }

    fn write(&self, id: u32, list: &[u32]) -> Result<(), IndexError> {
        let lb = list_bytes(self.degree_max) as usize;
        let mut buf = [0u8; 4 * (vamana::DEGREE_MAX + 1)];
        encode_list(list, self.degree_max, &mut buf[..lb]);
        self.file
            .write_all_at(&buf[..lb], u64::from(id) * lb as u64)
            .map_err(|e| IndexError::io(&self.path, "write", e))
    }
}

fn encode_list(list: &[u32], degree_max: usize, out: &mut [u8]) {
    debug_assert!(list.len() <= degree_max);
    out.fill(0);
    out[..4].copy_from_slice(&(list.len() as u32).to_le_bytes());
    for (c, id) in out[4..].chunks_exact_mut(4).zip(list) {
        c.copy_from_slice(&id.to_le_bytes());
    }
}

fn decode_list(b: &[u8], degree_max: usize, out: &mut Vec<u32>) {
    let d = (u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize).min(degree_max);
    out.extend(
        b[4..4 + 4 * d].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))),
    );
}

/// Everything the graph phases need from the caller.
pub(crate) struct Input<'a> {
    pub file: &'a VectorFile,
    pub opts: &'a BuildOptions,
    /// The inner-product M (for the other metrics unused).
    pub ip_norm_max: f32,
    /// The exact mean of the (normalised, for cosine) input.
    pub mean: &'a [f64],
    pub plan: &'a PartitionPlan,
}

/// The outcome of [`build_graph`]: the adjacency file, the medoid, and
/// what the build did.
pub(crate) struct Built {
    pub adjacency: Adjacency,
    pub medoid: u32,
    pub summary: PartitionSummary,
    pub phases: Vec<(String, f64)>,
}

/// Runs phases 2-5 in `tmp` (the build's temporary directory).
pub(crate) fn build_graph<T: DistanceElement>(
    input: &Input<'_>,
    tmp: &Path,
    progress: &dyn Progress,
) -> Result<Built, IndexError> {
    let scratch = Scratch { dir: tmp.join(SCRATCH_DIR) };
    fs::create_dir(&scratch.dir).map_err(|e| IndexError::io(&scratch.dir, "mkdir", e))?;
    let mut phases = Vec::new();
    let t = Instant::now();
    let centers = train_centers::<T>(input, progress)?;
    phases.push(("partition k-means".to_string(), t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let assigned = assign::<T>(input, &centers, &scratch, progress)?;
    phases.push(("partition".to_string(), t.elapsed().as_secs_f64()));
    super::release_free_memory();
    let t = Instant::now();
    let medoids = build_shards::<T>(input, &assigned.sizes, &scratch, progress)?;
    phases.push(("shard graphs".to_string(), t.elapsed().as_secs_f64()));
    let t = Instant::now();
    let n = input.file.len();
    let r = input.opts.graph.degree_max;
    let adjacency = Adjacency::create(&scratch.adjacency(), n, r)?;
    let extra_reads = merge::<T>(input, &assigned.sizes, &scratch, &adjacency, progress)?;
    hub(&adjacency, assigned.medoid, &medoids)?;
    phases.push(("merge".to_string(), t.elapsed().as_secs_f64()));
    super::release_free_memory();
    let t = Instant::now();
    let connect_edges = connect(&adjacency, assigned.medoid, progress)?;
    phases.push(("connect".to_string(), t.elapsed().as_secs_f64()));
    Ok(Built {
        adjacency,
        medoid: assigned.medoid,
        summary: PartitionSummary {
            shards: assigned.sizes.len(),
            shard_points_max: input.plan.shard_points_max,
            shard_points: assigned.sizes,
            single_placed: assigned.single_placed,
            displaced: assigned.displaced,
            third_placed: assigned.third_placed,
            merge_extra_reads: extra_reads,
            connect_edges,
        },
        phases,
    })
}

/// Reads rows `start..start + m` as f32, centred on the mean.
fn read_centred<T: DistanceElement>(
    input: &Input<'_>,
    start: u64,
    m: usize,
    rows: &mut Vec<T>,
    out: &mut Vec<f32>,
) -> Result<(), IndexError> {
    super::build::read_checked(input.file, start, m, input.opts.metric, rows)?;
    out.clear();
    out.extend(
        rows.iter().zip(input.mean.iter().cycle()).map(|(x, mu)| (x.to_f32() as f64 - mu) as f32),
    );
    Ok(())
}

/// k-means centres (centred space) of a seeded sample of the input.
fn train_centers<T: DistanceElement>(
    input: &Input<'_>,
    progress: &dyn Progress,
) -> Result<Vec<f32>, IndexError> {
    let n = input.file.len();
    let dim = input.file.dim();
    let k = input.plan.shards;
    let size = partition_sample_size(n, k);
    progress.phase("partition k-means", 1);
    let mut rng = ChaCha8Rng::seed_from_u64(input.opts.graph.seed ^ 0x7061_7274_6974_696f);
    let mut idx: Vec<u64> = rand::seq::index::sample(&mut rng, n as usize, size)
        .into_iter()
        .map(|i| i as u64)
        .collect();
    idx.sort_unstable();
    let mut sample = Vec::with_capacity(size * dim);
    let (mut rows, mut row) = (Vec::new(), Vec::new());
    for i in idx {
        read_centred::<T>(input, i, 1, &mut rows, &mut row)?;
        sample.extend_from_slice(&row);
    }
    let mut centers = kmeans(&sample, dim, k, PARTITION_KMEANS_ITERS, &mut rng).centers;
    balance(&sample, dim, &mut centers, n, input.plan.shard_points_max, &mut rng)?;
    progress.phase_done();
    Ok(centers)
}

/// The 2 nearest of the centres (table) to each sample row.
fn top2(sample: &[f32], table: &CenterTable) -> Vec<[u32; 2]> {
    let k = table.k();
    sample
        .par_chunks(table.width())
        .map_init(
            || vec![0f32; k],
            |d, x| {
                table.partial_distances(x, d);
                let [a, b] = k_nearest::<2>(d, |_| true);
                let a = a.expect("at least one centre");
                [a as u32, b.unwrap_or(a) as u32]
            },
        )
        .collect()
}

/// Splits every shard that the sample says would take more than
/// [`SHARD_SPLIT_FILL`] of its capacity (counting both copies) with a
/// k-means of its own sample points, until none does (rounds bounded).
/// Clusters are uneven (a mixture's components differ in size), and points
/// turned away from a full shard land in a far one, where their
/// neighbours are not: on 200K x 32 synthetic in 5 planned shards, 27% of
/// the points were placed so before this, and recall@10 at L = 40 fell
/// from 0.997 (one-shot) to 0.969.
fn balance(
    sample: &[f32],
    dim: usize,
    centers: &mut Vec<f32>,
    n: u64,
    cap: u64,
    rng: &mut ChaCha8Rng,
) -> Result<(), IndexError> {
    let rows = sample.len() / dim;
    let limit = cap as f64 * SHARD_SPLIT_FILL;
    for _ in 0..BALANCE_ROUNDS_MAX {
        let k = centers.len() / dim;
        let table = CenterTable::new(centers, dim);
        let tops = top2(sample, &table);
        let mut count = vec![0u64; k];
        for t in &tops {
            count[t[0] as usize] += 1;
            if t[1] != t[0] {
                count[t[1] as usize] += 1;
            }
        }
        let scale = n as f64 / rows as f64;
        let mut next: Vec<f32> = Vec::with_capacity(centers.len());
        let mut split = false;
        for s in 0..k {
            let est = count[s] as f64 * scale;
            let own: Vec<f32> = if est > limit {
                tops.iter()
                    .zip(sample.chunks_exact(dim))
                    .filter(|(t, _)| t[0] as usize == s)
                    .flat_map(|(_, x)| x.iter().copied())
                    .collect()
            } else {
                Vec::new()
            };
            let parts = (est / (cap as f64 * SHARD_FILL)).ceil() as usize;
            if est > limit && own.len() / dim >= 2 * parts.max(2) {
                let c = kmeans(&own, dim, parts.max(2), PARTITION_KMEANS_ITERS, rng);
                next.extend_from_slice(&c.centers);
                split = true;
            } else {
                next.extend_from_slice(&centers[s * dim..(s + 1) * dim]);
            }
        }
        *centers = next;
        if centers.len() / dim > SHARDS_MAX {
            return Err(IndexError::Input(format!(
                "balancing the partition needs more than {SHARDS_MAX} (SHARDS_MAX) shards of \
                 at most {cap} points; raise the memory budget"
            )));
        }
        if !split {
            break;
        }
    }
    Ok(())
}

struct Assigned {
    sizes: Vec<u64>,
    medoid: u32,
    single_placed: u64,
    displaced: u64,
    third_placed: u64,
}

/// The partition pass: every point into its 2 nearest shards with room.
fn assign<T: DistanceElement>(
    input: &Input<'_>,
    centers: &[f32],
    scratch: &Scratch,
    progress: &dyn Progress,
) -> Result<Assigned, IndexError> {
    let n = input.file.len();
    let dim = input.file.dim();
    let k = centers.len() / dim;
    let cap = input.plan.shard_points_max;
    let table = CenterTable::new(centers, dim);
    let open = |p: PathBuf| -> Result<(BufWriter<File>, PathBuf), IndexError> {
        let f = fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&p)
            .map_err(|e| IndexError::io(&p, "create", e))?;
        Ok((BufWriter::with_capacity(WRITER_BUFFER_BYTES, f), p))
    };
    let mut vec_out = Vec::with_capacity(k);
    let mut mem_out = Vec::with_capacity(k);
    for s in 0..k {
        vec_out.push(open(scratch.vectors(s))?);
        mem_out.push(open(scratch.members(s))?);
    }
    let mut sizes = vec![0u64; k];
    let (mut single_placed, mut displaced, mut third_placed) = (0u64, 0u64, 0u64);
    let mut medoid = (f32::INFINITY, 0u32);
    progress.phase("partition", n);
    let (mut rows, mut centred) = (Vec::new(), Vec::new());
    let mut dists: Vec<f32> = Vec::new();
    let mut start = 0u64;
    while start < n {
        let m = (n - start).min(BATCH_ROWS as u64) as usize;
        read_centred::<T>(input, start, m, &mut rows, &mut centred)?;
        dists.resize(m * (k + 1), 0.0);
        // Per row: k partial distances to the centres, then the squared
        // norm (the distance to the mean, for the medoid).
        centred.par_chunks(dim).zip(dists.par_chunks_mut(k + 1)).for_each(|(x, d)| {
            table.partial_distances(x, &mut d[..k]);
            d[k] = x.iter().map(|v| v * v).sum();
        });
        let vb = dim * std::mem::size_of::<T>();
        let bytes = T::as_bytes(&rows);
        for (i, d) in dists.chunks_exact(k + 1).enumerate() {
            let id = start + i as u64;
            if (d[k], id as u32) < medoid {
                medoid = (d[k], id as u32);
            }
            let mut near = nearest_with_room(&d[..k], &sizes, cap);
            displaced += u64::from(near.far);
            if let Some(c) = near.shards[2] {
                // d holds ||x - c||^2 - ||x||^2; d[k] is ||x||^2.
                let full = |s: usize| d[s] + d[k];
                let room = (cap as f64 * SHARD_FILL) as u64;
                if sizes[c] >= room
                    || full(c) > THIRD_COPY_RATIO * full(near.shards[0].unwrap_or(c))
                {
                    near.shards[2] = None;
                }
            }
            // Each copy's (shard, index there); unused ones are NO_SHARD,
            // after the used ones.
            let at = near.shards.map(|s| s.map_or((NO_SHARD, 0), |s| (s as u32, sizes[s] as u32)));
            let placed = at.iter().take_while(|a| a.0 != NO_SHARD).count();
            let row = &bytes[i * vb..(i + 1) * vb];
            for (j, &(s, _)) in at[..placed].iter().enumerate() {
                let others = std::array::from_fn(|o| at[if o < j { o } else { o + 1 }]);
                let rec = Member { id: id as u32, others, home: j == 0 };
                let s = s as usize;
                let (w, p) = &mut mem_out[s];
                w.write_all(&rec.encode()).map_err(|e| IndexError::io(p, "write", e))?;
                let (w, p) = &mut vec_out[s];
                w.write_all(row).map_err(|e| IndexError::io(p, "write", e))?;
                sizes[s] += 1;
            }
            third_placed += u64::from(placed > SHARD_REPLICAS);
            if placed < 2 {
                single_placed += 1;
            }
        }
        start += m as u64;
        progress.advance(start);
    }
    for (w, p) in vec_out.into_iter().chain(mem_out) {
        let f = w.into_inner().map_err(|e| IndexError::io(&p, "write", e.into_error()))?;
        f.sync_all().map_err(|e| IndexError::io(&p, "fsync", e))?;
    }
    progress.phase_done();
    Ok(Assigned { sizes, medoid: medoid.1, single_placed, displaced, third_placed })
}

/// Where one point goes: its [`REPLICAS_MAX`] nearest shards (by `d`,
/// ties to the lower index) holding fewer than `cap` points (`None` past
/// those with room), and how many of them are not among its
/// [`SHARD_REPLICAS`] nearest overall.
struct Nearest {
    shards: [Option<usize>; REPLICAS_MAX],
    far: u32,
}

fn nearest_with_room(d: &[f32], sizes: &[u64], cap: u64) -> Nearest {
    let top = k_nearest::<REPLICAS_MAX>(d, |_| true);
    let shards = k_nearest::<REPLICAS_MAX>(d, |s| sizes[s] < cap);
    // The planned capacity holds every copy with room to spare (SHARD_FILL).
    assert!(shards[0].is_some(), "a shard with room");
    let far = shards[..SHARD_REPLICAS]
        .iter()
        .flatten()
        .filter(|&&s| !top[..SHARD_REPLICAS].contains(&Some(s)))
        .count() as u32;
    Nearest { shards, far }
}

/// The `K` smallest entries of `d` in order (ties to the lower index) among
/// the indexes `eligible` accepts.
fn k_nearest<const K: usize>(d: &[f32], eligible: impl Fn(usize) -> bool) -> [Option<usize>; K] {
    let mut top = [None; K];
    for s in (0..d.len()).filter(|&s| eligible(s)) {
        let better = |t: Option<usize>| t.is_none_or(|t| (d[s], s) < (d[t], t));
        if let Some(at) = (0..K).find(|&j| better(top[j])) {
            top[at..].rotate_right(1);
            top[at] = Some(s);
        }
    }
    top
}

/// Reads a whole scratch file.
fn read_file(path: &Path, bytes_hint: u64) -> Result<Vec<u8>, IndexError> {
    let f = File::open(path).map_err(|e| IndexError::io(path, "open", e))?;
    let mut buf = Vec::with_capacity(bytes_hint as usize);
    BufReader::new(f).read_to_end(&mut buf).map_err(|e| IndexError::io(path, "read", e))?;
    Ok(buf)
}

fn read_members(path: &Path, m: u64) -> Result<Vec<Member>, IndexError> {
    let b = read_file(path, m * Member::BYTES as u64)?;
    if b.len() as u64 != m * Member::BYTES as u64 {
        return Err(IndexError::Input(format!(
            "{}: {} bytes, not the {m} member records written",
            path.display(),
            b.len()
        )));
    }
    Ok(b.chunks_exact(Member::BYTES).map(Member::decode).collect())
}

fn read_vectors<T: DistanceElement>(path: &Path, m: u64, dim: usize) -> Result<Vec<T>, IndexError> {
    let f = File::open(path).map_err(|e| IndexError::io(path, "open", e))?;
    let mut out = vec![T::from_f32(0.0); m as usize * dim];
    let mut r = BufReader::with_capacity(1 << 20, f);
    let row_bytes = dim * std::mem::size_of::<T>();
    let mut buf = vec![0u8; BATCH_ROWS * row_bytes];
    let mut done = 0usize;
    while done < m as usize {
        let rows = (m as usize - done).min(BATCH_ROWS);
        let b = &mut buf[..rows * row_bytes];
        r.read_exact(b).map_err(|e| IndexError::io(path, "read", e))?;
        T::copy_from_bytes(b, &mut out[done * dim..(done + rows) * dim]);
        done += rows;
    }
    Ok(out)
}

/// Progress of one shard's graph build, named by shard, with an estimate
/// of the time left for all shard builds.
struct ShardProgress<'a> {
    progress: &'a dyn Progress,
    label: String,
    points: u64,
}

impl vamana::BuildProgress for ShardProgress<'_> {
    fn pass(&self, pass: usize, passes: usize) {
        if pass > 0 {
            self.progress.phase_done();
        }
        self.progress.phase(&format!("{} pass {}/{passes}", self.label, pass + 1), self.points);
    }
    fn inserted(&self, done: u64) {
        self.progress.advance(done);
    }
}

/// Phase 3: each shard's Vamana, its lists (global ids) to a scratch file.
fn build_shards<T: DistanceElement>(
    input: &Input<'_>,
    sizes: &[u64],
    scratch: &Scratch,
    progress: &dyn Progress,
) -> Result<Vec<u32>, IndexError> {
    let dim = input.file.dim();
    let r = input.opts.graph.degree_max;
    let mut medoids = Vec::with_capacity(sizes.len());
    let norm = (input.opts.metric == Metric::InnerProduct).then_some(input.ip_norm_max);
    let total: u64 = sizes.iter().sum();
    let started = Instant::now();
    let mut done = 0u64;
    for (s, &m) in sizes.iter().enumerate() {
        let eta = if done == 0 {
            String::new()
        } else {
            let left = started.elapsed().as_secs_f64() / done as f64 * (total - done) as f64;
            format!(" (shards ~{:.0}s left)", left)
        };
        if m == 0 {
            File::create(scratch.lists(s))
                .map_err(|e| IndexError::io(&scratch.lists(s), "create", e))?;
            continue;
        }
        let members = read_members(&scratch.members(s), m)?;
        let data = read_vectors::<T>(&scratch.vectors(s), m, dim)?;
        let label = format!("shard {}/{}{eta}", s + 1, sizes.len());
        let sp = ShardProgress { progress, label, points: m };
        let mut params = input.opts.graph.clone();
        // Seeded per shard: the same input and seed give the same shards.
        params.seed = params.seed.wrapping_add(s as u64);
        let graph = vamana::build_with_norm(&data, dim, input.opts.metric, norm, &params, &sp)
            .map_err(|e| IndexError::Input(format!("shard {s}: {e}")))?;
        progress.phase_done();
        medoids.push(members[graph.medoid() as usize].id);
        let path = scratch.lists(s);
        let f = fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)
            .map_err(|e| IndexError::io(&path, "create", e))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut buf = vec![0u8; list_bytes(r) as usize];
        let mut global = Vec::with_capacity(r);
        for local in 0..m as u32 {
            global.clear();
            graph.with_neighbors(local, |nb| {
                global.extend(nb.iter().map(|&l| members[l as usize].id));
            });
            encode_list(&global, r, &mut buf);
            w.write_all(&buf).map_err(|e| IndexError::io(&path, "write", e))?;
        }
        let f = w.into_inner().map_err(|e| IndexError::io(&path, "write", e.into_error()))?;
        f.sync_all().map_err(|e| IndexError::io(&path, "fsync", e))?;
        drop(graph);
        drop(data);
        super::release_free_memory();
        done += m;
    }
    Ok(medoids)
}

/// The build distance between two rows: squared L2, plus the difference of
/// the inner-product augmentation coordinates (as the in-memory build).
struct BuildDistance<T: 'static> {
    l2: Distance<T>,
    /// M^2 of the inner-product reduction; `None` for the other metrics.
    ip_m2: Option<f32>,
}

impl<T: DistanceElement> BuildDistance<T> {
    fn new(metric: Metric, ip_norm_max: f32) -> Self {
        BuildDistance {
            l2: Distance::new(Metric::L2),
            ip_m2: (metric == Metric::InnerProduct).then_some(ip_norm_max * ip_norm_max),
        }
    }
    fn aug(&self, x: &[T]) -> f32 {
        match self.ip_m2 {
            Some(m2) => {
                (m2 - x.iter().map(|v| v.to_f32() * v.to_f32()).sum::<f32>()).max(0.0).sqrt()
            }
            None => 0.0,
        }
    }
    fn eval(&self, a: &[T], b: &[T]) -> f32 {
        let d = self.l2.eval(a, b);
        if self.ip_m2.is_some() {
            let e = self.aug(a) - self.aug(b);
            d + e * e
        } else {
            d
        }
    }
}

/// Phase 4: every node's final list. Returns the candidate vectors read
/// from the input (outside the home shard).
fn merge<T: DistanceElement>(
    input: &Input<'_>,
    sizes: &[u64],
    scratch: &Scratch,
    adjacency: &Adjacency,
    progress: &dyn Progress,
) -> Result<u64, IndexError> {
    let n = input.file.len();
    let dim = input.file.dim();
    let r = input.opts.graph.degree_max;
    let lb = list_bytes(r) as usize;
    let rule = PruneRule {
        alpha: input.opts.graph.alpha,
        degree_max: r,
        saturate: input.opts.graph.saturate,
    };
    let dist = BuildDistance::<T>::new(input.opts.metric, input.ip_norm_max);
    let vb = (dim * std::mem::size_of::<T>()) as u64;
    let budget_extra = {
        let usable = input.plan.memory_bytes.saturating_sub(PROCESS_BASE_BYTES);
        ((usable as f64 * MERGE_EXTRA_SHARE) as u64 / (vb + 8)).max(2 * r as u64 + 1) as usize
    };
    let lists: Vec<Adjacency> = sizes
        .iter()
        .enumerate()
        .map(|(s, &m)| Adjacency::open(&scratch.lists(s), m, r))
        .collect::<Result<_, _>>()?;
    let mut extra_reads = 0u64;
    let mut merged = 0u64;
    progress.phase("merge", n);
    for (s, &m) in sizes.iter().enumerate() {
        if m == 0 {
            continue;
        }
        let members = read_members(&scratch.members(s), m)?;
        let vectors = read_vectors::<T>(&scratch.vectors(s), m, dim)?;
        let own = read_file(&scratch.lists(s), m * lb as u64)?;
        let ids: Vec<u32> = members.iter().map(|x| x.id).collect();
        debug_assert!(ids.is_sorted(), "members are assigned in id order");
        let home: Vec<u32> = (0..m as u32).filter(|&l| members[l as usize].home).collect();
        let mut at = 0usize;
        while at < home.len() {
            // A block: home points and their candidates, until the
            // candidates outside the shard fill the extra budget.
            let mut block: Vec<(u32, Vec<u32>)> = Vec::new();
            let mut extra: Vec<u32> = Vec::new();
            while at < home.len() && block.len() < MERGE_BLOCK_MAX {
                let local = home[at];
                let mb = &members[local as usize];
                let mut cands = Vec::with_capacity(REPLICAS_MAX * r);
                decode_list(&own[local as usize * lb..(local as usize + 1) * lb], r, &mut cands);
                for &(o, l) in mb.others.iter().filter(|o| o.0 != NO_SHARD) {
                    lists[o as usize].read(l, &mut cands)?;
                }
                let before = extra.len();
                extra.extend(cands.iter().copied().filter(|c| ids.binary_search(c).is_err()));
                if !block.is_empty() && extra.len() > budget_extra {
                    extra.truncate(before);
                    break;
                }
                block.push((local, cands));
                at += 1;
                if extra.len() > budget_extra {
                    break;
                }
            }
            extra.sort_unstable();
            extra.dedup();
            let mut extra_vecs: Vec<T> = Vec::with_capacity(extra.len() * dim);
            let mut row = Vec::new();
            for &g in &extra {
                super::build::read_checked(
                    input.file,
                    u64::from(g),
                    1,
                    input.opts.metric,
                    &mut row,
                )?;
                extra_vecs.extend_from_slice(&row);
            }
            extra_reads += extra.len() as u64;
            let vector = |g: u32| -> &[T] {
                match ids.binary_search(&g) {
                    Ok(i) => &vectors[i * dim..(i + 1) * dim],
                    Err(_) => {
                        let i = extra.binary_search(&g).expect("every candidate was read");
                        &extra_vecs[i * dim..(i + 1) * dim]
                    }
                }
            };
            let out: Vec<Vec<u32>> = block
                .par_iter()
                .map_init(PruneScratch::default, |ps, (local, cands)| {
                    let p = members[*local as usize].id;
                    // The union as it is while it fits R (both lists are
                    // already pruned in their shards; pruning the union
                    // again only drops edges: on 200K x 32 synthetic that
                    // cost 2.3 edges a node and 0.006 of recall@10 at L = 40).
                    let mut union = cands.clone();
                    union.sort_unstable();
                    union.dedup();
                    let pv = vector(p);
                    if union.len() <= r {
                        // Nearest first, as RobustPrune leaves a list: the
                        // packed placement fills a sector from the front of
                        // its members' lists (in id order, recall@10 at L 16
                        // on 100K x 64 packed was 0.023 under the one-shot
                        // build's).
                        let mut near: Vec<(f32, u32)> =
                            union.iter().map(|&c| (dist.eval(pv, vector(c)), c)).collect();
                        near.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                        return near.into_iter().map(|(_, c)| c).collect();
                    }
                    let scored = cands.iter().map(|&c| (c, dist.eval(pv, vector(c))));
                    let mut list = Vec::with_capacity(r);
                    robust_prune_by(p, scored, rule, ps, &mut list, |a, b| {
                        dist.eval(vector(a), vector(b))
                    });
                    list
                })
                .collect();
            for ((local, _), list) in block.iter().zip(&out) {
                adjacency.write(members[*local as usize].id, list)?;
            }
            merged += block.len() as u64;
            progress.advance(merged);
        }
        drop((members, vectors, own, ids, home));
        super::release_free_memory();
        // This shard's vectors are not needed again.
        fs::remove_file(scratch.vectors(s))
            .map_err(|e| IndexError::io(&scratch.vectors(s), "remove", e))?;
    }
    progress.phase_done();
    if merged != n {
        return Err(IndexError::Input(format!(
            "the merge wrote {merged} of {n} lists (a point without a home shard)"
        )));
    }
    Ok(extra_reads)
}

/// Gives the medoid (where every search starts) an edge to each shard's
/// medoid (up to R/2 of them, in place of its farthest edges), so that
/// every shard is one hop from the start: shards meet only where points
/// are in two of them. On 100K x 64 synthetic in 4 shards this saved 2-3
/// reads a query and added 0.002-0.007 of recall@10 at L 16-64.
fn hub(adj: &Adjacency, medoid: u32, shard_medoids: &[u32]) -> Result<(), IndexError> {
    let mut list = Vec::new();
    adj.read(medoid, &mut list)?;
    let add: Vec<u32> = shard_medoids
        .iter()
        .copied()
        .filter(|&m| m != medoid && !list.contains(&m))
        .take(adj.degree_max / 2)
        .collect();
    let keep = adj.degree_max.saturating_sub(add.len()).min(list.len());
    list.truncate(keep);
    list.extend(add);
    adj.write(medoid, &list)
}

/// A set of node ids as bits.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u64) -> Bits {
        Bits(vec![0; n.div_ceil(64) as usize])
    }
    fn get(&self, i: u32) -> bool {
        self.0[i as usize / 64] >> (i % 64) & 1 == 1
    }
    fn set(&mut self, i: u32) {
        self.0[i as usize / 64] |= 1 << (i % 64);
    }
    fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64u32).filter(move |b| bits >> b & 1 == 1).map(move |b| w as u32 * 64 + b)
        })
    }
}

/// Marks in `seen` every node reachable from the nodes of `frontier`
/// (which are marked); level by level, each node's list read once.
fn flood(adj: &Adjacency, seen: &mut Bits, mut frontier: Bits) -> Result<u64, IndexError> {
    let mut marked = 0u64;
    let mut list = Vec::new();
    loop {
        let mut next = Bits::new(adj.n);
        let mut any = false;
        for id in frontier.ones() {
            list.clear();
            adj.read(id, &mut list)?;
            for &v in &list {
                if !seen.get(v) {
                    seen.set(v);
                    next.set(v);
                    marked += 1;
                    any = true;
                }
            }
        }
        if !any {
            return Ok(marked);
        }
        frontier = next;
    }
}

/// Nodes reachable from the medoid (a fresh traversal).
fn reachable(adj: &Adjacency, medoid: u32) -> Result<(Bits, u64), IndexError> {
    let mut seen = Bits::new(adj.n);
    seen.set(medoid);
    let mut start = Bits::new(adj.n);
    start.set(medoid);
    let reached = 1 + flood(adj, &mut seen, start)?;
    Ok((seen, reached))
}

/// Gives `u` an in-edge from `v`: appended when `v`'s list has room, else
/// in place of its last (farthest) entry.
fn link(adj: &Adjacency, v: u32, u: u32, into: &mut Vec<u32>) -> Result<(), IndexError> {
    into.clear();
    adj.read(v, into)?;
    if into.len() < adj.degree_max {
        into.push(u);
    } else if let Some(last) = into.last_mut() {
        *last = u;
    }
    adj.write(v, into)
}

/// Phase 5: every node reachable from the medoid. Returns the edges added.
/// Each round traverses the graph afresh from the medoid (a replaced edge
/// may have been another node's way in) and links every node it did not
/// reach from its first (nearest) out-neighbour that is reached; a closed
/// group with no such neighbour gets an edge from the medoid.
fn connect(adj: &Adjacency, medoid: u32, progress: &dyn Progress) -> Result<u64, IndexError> {
    progress.phase("connect", adj.n);
    let mut added = 0u64;
    let (mut list, mut into) = (Vec::new(), Vec::new());
    for _ in 0..CONNECT_ROUNDS_MAX {
        let (mut seen, reached) = reachable(adj, medoid)?;
        progress.advance(reached);
        if reached == adj.n {
            progress.phase_done();
            return Ok(added);
        }
        let mut linked = 0u64;
        for u in 0..adj.n as u32 {
            if seen.get(u) {
                continue;
            }
            list.clear();
            adj.read(u, &mut list)?;
            let Some(&v) = list.iter().find(|&&v| seen.get(v)) else { continue };
            link(adj, v, u, &mut into)?;
            seen.set(u);
            linked += 1;
        }
        if linked == 0 {
            let u = (0..adj.n as u32).find(|&u| !seen.get(u)).expect("an unreached node");
            link(adj, medoid, u, &mut into)?;
            linked = 1;
        }
        added += linked;
    }
    let (_, reached) = reachable(adj, medoid)?;
    progress.phase_done();
    if reached != adj.n {
        return Err(IndexError::Input(format!(
            "{} nodes stay unreachable from the medoid after the merge; rebuild with a larger R \
             (now {}) or a larger memory budget (fewer shards)",
            adj.n - reached,
            adj.degree_max
        )));
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::build::build_index;
    use crate::synth::{Mixture, STREAM_BASE, write_stream};
    use crate::vamana::BuildParams;

    /// Every node's (vector bytes, neighbours) and the medoid of an index.
    /// A node's vector bytes and neighbours.
    type Record = (Vec<u8>, Vec<u32>);

    fn records(idx: &Path) -> (u32, Vec<Record>) {
        let m = crate::index::read_manifest(idx).unwrap();
        let gp = m.file(idx, crate::index::GRAPH_FILE);
        let h = crate::format::graph::read_graph_header(&gp).unwrap();
        let l = h.layout();
        let bytes = fs::read(&gp).unwrap();
        let all = (0..h.count as u32)
            .map(|id| {
                let at = l.record_offset(id) as usize;
                let rec =
                    l.decode_record(id, &bytes[at..at + l.record_bytes as usize], true).unwrap();
                let mut v = vec![0f32; h.dim as usize];
                rec.vector_into(&mut v);
                (v.iter().flat_map(|x| x.to_le_bytes()).collect(), rec.neighbors().collect())
            })
            .collect();
        (h.medoid, all)
    }

    /// Small shards, packed as `basalt build` packs.
    fn opts(shards: Option<usize>) -> BuildOptions {
        BuildOptions {
            graph: BuildParams { degree_max: 16, list_size: 32, seed: 7, ..Default::default() },
            pq_chunks: 4,
            shards,
            placement: crate::format::graph::Placement::Packed,
            ..Default::default()
        }
    }

    /// With one thread the same input, seed and shard count give the same
    /// packed graph (every record, the medoid, the node -> row map and the
    /// codes), and the partitioned build's scratch directory is gone after
    /// it.
    #[test]
    fn one_thread_partitioned_builds_are_identical() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mixture::new(12, 6, 3).unwrap();
        let base = dir.path().join("b.fbin");
        write_stream::<f32>(&m, &base, 6000, 1, STREAM_BASE, &|_| {}).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let run = |name: &str| {
            let out = dir.path().join(name);
            let s = pool.install(|| build_index(&base, &out, &opts(Some(4)), &())).unwrap();
            let p = s.partition.expect("partitioned");
            assert!(p.shards >= 4, "{p:?}");
            assert_eq!(
                p.shard_points.iter().sum::<u64>(),
                2 * 6000 - p.single_placed + p.third_placed
            );
            assert!(!out.join(SCRATCH_DIR).exists());
            assert!(s.replaced_leftover.is_none(), "{:?}", s.replaced_leftover);
            crate::index::verify::verify_index(&out).unwrap();
            // The ids and codes files' contents (their headers hold the
            // build's random identity).
            let m = crate::index::read_manifest(&out).unwrap();
            let gp = m.file(&out, crate::index::GRAPH_FILE);
            let h = crate::format::graph::read_graph_header(&gp).unwrap();
            let gen_dir = gp.parent().unwrap();
            let rows = crate::index::build::read_row_ids(gen_dir, h.ident, h.count).unwrap();
            let rows = rows.expect("a packed partitioned build has an ids file");
            let (codes, _) =
                crate::format::codes::read_codes(&m.file(&out, crate::index::CODES_FILE)).unwrap();
            let codes: Vec<u8> = (0..h.count as u32).flat_map(|i| codes.row(i).to_vec()).collect();
            (records(&out), rows, codes)
        };
        let ((a, a_ids, a_codes), (b, b_ids, b_codes)) = (run("a"), run("b"));
        assert_eq!(a.0, b.0, "medoid");
        assert!(a.1 == b.1, "two one-thread builds differ");
        assert!(a_ids == b_ids && a_codes == b_codes, "ids or codes differ");
        // And it is a different graph from another seed's.
        let out = dir.path().join("c");
        let mut o = opts(Some(4));
        o.graph.seed = 8;
        pool.install(|| build_index(&base, &out, &o, &())).unwrap();
        assert!(records(&out).1 != a.1);
    }

    /// The assignment takes the 3 nearest shards with room in order, ties
    /// to the lower index, and counts the first 2 placed past the 2 nearest.
    #[test]
    fn nearest_with_room_skips_full_shards() {
        let d = [3.0, 1.0, 2.0, 1.0, 9.0];
        let at = |sizes: &[u64]| {
            let n = nearest_with_room(&d, sizes, 10);
            (n.shards, n.far)
        };
        assert_eq!(at(&[0; 5]), ([Some(1), Some(3), Some(2)], 0));
        assert_eq!(at(&[0, 10, 0, 0, 0]), ([Some(3), Some(2), Some(0)], 1));
        assert_eq!(at(&[0, 10, 0, 10, 0]), ([Some(2), Some(0), Some(4)], 2));
        assert_eq!(at(&[10, 10, 10, 10, 0]), ([Some(4), None, None], 1));
    }

    /// A member record holds its id, home flag and both other shards.
    #[test]
    fn member_records_round_trip() {
        let m = Member { id: 7, others: [(3, 11), (NO_SHARD, 0)], home: true };
        assert_eq!(Member::decode(&m.encode()), m);
        let m = Member { id: u32::MAX - 1, others: [(0, u32::MAX - 2), (9, 1)], home: false };
        assert_eq!(Member::decode(&m.encode()), m);
    }

    #[test]
    fn scratch_names_are_recognised() {
        for ok in ["adjacency", "shard-0.vectors", "shard-12.members", "shard-3.lists"] {
            assert!(is_scratch_file(ok), "{ok}");
        }
        for bad in ["graph", "shard-x.lists", "shard-1.txt", "shard-1", "adjacency2"] {
            assert!(!is_scratch_file(bad), "{bad}");
        }
    }

    /// The plan: shards from the budget, a budget too small for the
    /// input's fixed parts or for a minimal shard refused with the reason,
    /// forced shard counts checked.
    #[test]
    fn plan_sizes_shards_from_the_budget() {
        let o = opts(None);
        let p = plan(10_000_000, 128, ElementType::F32, &o, 2 << 30, 2).unwrap();
        assert!(p.memory_bytes <= 2 << 30, "{p:?}");
        assert!(p.shards as u64 * p.shard_points_max >= 20_000_000, "{p:?}");
        let half = plan(10_000_000, 128, ElementType::F32, &o, 1 << 30, 2).unwrap();
        assert!(half.shards > p.shards && half.shard_points_max < p.shard_points_max);
        let e =
            plan(10_000_000, 128, ElementType::F32, &o, (24 << 20) + (512 << 10), 2).unwrap_err();
        assert!(e.contains("SHARD_POINTS_MIN"), "{e}");
        // 1e9 x 128 with 2 GiB: the codes alone (1e9 x 4 bytes here) do not fit.
        let e = plan(1_000_000_000, 128, ElementType::F32, &o, 2 << 30, 2).unwrap_err();
        assert!(e.contains("hot list"), "{e}");
        let e = plan(1000, 8, ElementType::F32, &opts(Some(1)), 1 << 30, 1).unwrap_err();
        assert!(e.contains("at least 2"), "{e}");
        let e = plan(100_000_000, 128, ElementType::F32, &opts(Some(2)), 1 << 30, 1).unwrap_err();
        assert!(e.contains("do not fit"), "{e}");
    }

    /// Connect links a node nothing reaches from a reached out-neighbour,
    /// and a closed group from the medoid.
    #[test]
    fn connect_reaches_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let adj = Adjacency::create(&dir.path().join("adjacency"), 6, 3).unwrap();
        // 0 -> 1 -> 0; 2 -> 1 (2 unreached, its neighbour 1 is); 3 <-> 4
        // closed; 5 -> 3.
        for (id, l) in
            [(0, vec![1]), (1, vec![0, 4]), (2, vec![1]), (3, vec![4]), (4, vec![3]), (5, vec![3])]
        {
            adj.write(id, &l).unwrap();
        }
        // 1 -> 4 reaches 4 and 3; 2 and 5 need an edge.
        let added = connect(&adj, 0, &()).unwrap();
        assert_eq!(added, 2);
        assert_eq!(reachable(&adj, 0).unwrap().1, 6);
        let closed = Adjacency::create(&dir.path().join("closed"), 4, 2).unwrap();
        for (id, l) in [(0, vec![1]), (1, vec![0]), (2, vec![3]), (3, vec![2])] {
            closed.write(id, &l).unwrap();
        }
        assert!(connect(&closed, 0, &()).unwrap() >= 1);
        assert_eq!(reachable(&closed, 0).unwrap().1, 4);
    }
}
