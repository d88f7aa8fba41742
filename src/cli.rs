//! Command-line interface: clap definitions of every subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::distance::Metric;
use crate::element::ElementType;

#[derive(Parser, Debug)]
#[command(name = "basalt", version, about = "Disk-first approximate nearest-neighbour search")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a short end-to-end demo on embedded synthetic data (no input needed).
    Demo(DemoArgs),
    /// Generate seeded synthetic vectors (Gaussian mixture, low intrinsic dimension).
    Gen(GenArgs),
    /// Exact k nearest neighbours (ground truth) by brute force.
    Gt(GtArgs),
    /// Recall@k of a results file against a ground-truth file.
    Recall(RecallArgs),
    /// Build a disk index (PQ + Vamana + page-aligned layout) from a vector file.
    Build(BuildArgs),
    /// Print an index's header, manifest, degree statistics and sizes.
    Inspect(InspectArgs),
    /// Check every checksum and graph invariant of an index.
    Verify(InspectArgs),
    /// Search a disk index with a query file and report recall, QPS and latency per L.
    Search(SearchArgs),
    /// What N vectors need on one box (RAM, disk, build, QPS, latency) and what runs out first.
    Plan(PlanArgs),
    /// Create an empty collection (dimension and metric; points come later).
    Create(CreateArgs),
    /// Build a collection from a vector file with the ids and payloads you bring.
    Import(ImportArgs),
    /// Upsert one point inline, or many from a vector file (one line per durable batch).
    Insert(InsertArgs),
    /// Delete points by id (ids not present are reported, not an error).
    Delete(DeleteArgs),
    /// Print one point (id, vector, payload) as JSON.
    Get(GetArgs),
    /// List ids in order (numbers first, then strings), a page at a time.
    List(ListArgs),
    /// Search a collection (disk generation and delta) with one vector or a query file.
    Query(QueryArgs),
    /// Make (or with --drop, remove) a payload index of one field.
    Index(IndexArgs),
    /// Merge the delta and the deletes into a new disk generation now.
    Merge(CollectionArg),
    /// Print a collection's statistics as JSON.
    Stats(CollectionArg),
    /// Write a consistent copy of a collection (opens as a collection) while it takes writes.
    Snapshot(SnapshotArgs),
    /// Run the daemon: a Qdrant-compatible HTTP API over the collections of a data directory.
    Serve(ServeArgs),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Promote the running standby to primary (epoch + 1; the old primary is fenced).
    Promote(PromoteArgs),
    /// Make a stopped old primary rejoin as a standby (its collections are copied afresh).
    Rejoin(RejoinArgs),
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Vectors.
    #[arg(long)]
    pub n: u64,
    #[arg(long)]
    pub dim: usize,
    #[arg(long, default_value = "f32")]
    pub dtype: ElementType,
    /// Target recall@10.
    #[arg(long, default_value_t = 0.95)]
    pub recall: f64,
    /// RAM of the box in GiB (default: this machine's).
    #[arg(long)]
    pub ram: Option<f64>,
    /// Memory budget of the build in GiB (default: 90% of --ram).
    #[arg(long)]
    pub build_memory: Option<f64>,
    /// Random 4 KiB reads per second the SSDs sustain at depth, in thousands
    /// (default: the calibration's, measured at depth 32).
    #[arg(long)]
    pub disk_iops: Option<f64>,
    /// Cores (default: this machine's).
    #[arg(long)]
    pub cores: Option<usize>,
    /// Disk capacity in GiB (checked only when given).
    #[arg(long)]
    pub disk: Option<f64>,
    /// Queries per second the workload needs (checked only when given).
    #[arg(long)]
    pub qps: Option<f64>,
    /// PQ bytes per vector (default: min(dim, 32), the daemon's).
    #[arg(long)]
    pub pq_bytes: Option<usize>,
    #[arg(long = "R", default_value_t = 64)]
    pub r: usize,
    /// RAM of the entry cache in GiB (counted; the reads it saves are not).
    #[arg(long, default_value_t = 0.0)]
    pub cache: f64,
    /// The delta's memory bound in GiB (collections.delta_bytes_max).
    #[arg(long, default_value_t = 1.0)]
    pub delta: f64,
    /// WAL kept for a standby in GiB (replication.retention_bytes_max; 0: no standby).
    #[arg(long, default_value_t = 4.0)]
    pub wal_retention: f64,
    /// The measured set whose reads at the recall are grown to N (default:
    /// the calibration's real set; an unknown name lists them).
    #[arg(long)]
    pub profile: Option<String>,
    /// A calibration file instead of the built-in one (bench/plan-calibrate.sh writes it).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The standby's configuration (its service.listen and service.api_key).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The standby's HTTP address (overrides service.listen).
    #[arg(long)]
    pub listen: Option<String>,
}

#[derive(Args, Debug)]
pub struct RejoinArgs {
    /// This node's configuration (its service.data_dir).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory (overrides service.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The new primary's replication address:port (else replication.primary).
    #[arg(long)]
    pub primary: Option<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Collection directory.
    pub collection: PathBuf,
    /// Where to write the snapshot (must not exist).
    pub dest: PathBuf,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration (configs/basalt.toml lists every key and default).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address:port to listen on (overrides service.listen).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory (overrides service.data_dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Make a small generated collection "demo" in the data directory if it
    /// is not there, and print what to try next.
    #[arg(long)]
    pub demo: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate a configuration file (with BASALT_* overrides) and print the effective configuration.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Collection directory.
    pub collection: PathBuf,
    /// The payload field (a path: `a.b`, `tags[]`).
    #[arg(long)]
    pub field: String,
    /// keyword, integer, float, bool, uuid or datetime.
    #[arg(long, required_unless_present = "drop", value_parser = ["keyword", "integer", "float", "bool", "uuid", "datetime"])]
    pub schema: Option<String>,
    /// Remove the index instead.
    #[arg(long, conflicts_with = "schema")]
    pub drop: bool,
}

#[derive(Args, Debug)]
pub struct CollectionArg {
    /// Collection directory.
    pub collection: PathBuf,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Collection directory (absent or empty).
    pub collection: PathBuf,
    #[arg(long)]
    pub dim: u32,
    #[arg(long)]
    pub metric: Metric,
    #[arg(long, default_value = "f32")]
    pub element: ElementType,
    /// fsync (every acknowledged batch is on disk) or none (opt-in: an
    /// acknowledged batch can be lost to a power cut).
    #[arg(long, default_value = "fsync")]
    pub durability: String,
    #[arg(long = "R", default_value_t = 64)]
    pub r: usize,
    #[arg(long = "L", default_value_t = 100)]
    pub l: usize,
    /// PQ bytes per vector (default: min(dim, 32)).
    #[arg(long)]
    pub pq_bytes: Option<usize>,
    /// Merge once the delta holds this many points.
    #[arg(long)]
    pub delta_points_merge: Option<u64>,
    /// Memory bound of the delta in bytes (suffixes K, M, G).
    #[arg(long, value_parser = parse_bytes)]
    pub delta_bytes_max: Option<u64>,
    /// Never merge in the background (only `basalt merge`).
    #[arg(long)]
    pub no_auto_merge: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Input vectors (.fbin, .u8bin, .i8bin, .fvecs, .bvecs).
    #[arg(long)]
    pub data: PathBuf,
    /// Ids, one per line, in row order (digits = a number id, else a string; UUIDs normalised).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    /// Payloads, one JSON object (or an empty line) per row.
    #[arg(long)]
    pub payloads: Option<PathBuf>,
    /// Collection directory to create.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub metric: Metric,
    #[arg(long = "R", default_value_t = 64)]
    pub r: usize,
    #[arg(long = "L", default_value_t = 100)]
    pub l: usize,
    #[arg(long, default_value_t = 32)]
    pub pq_bytes: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct InsertArgs {
    pub collection: PathBuf,
    /// The id of one point given inline (with --vector).
    pub id: Option<String>,
    /// One point's vector, comma-separated.
    #[arg(long, allow_hyphen_values = true)]
    pub vector: Option<String>,
    /// One point's payload (a JSON object).
    #[arg(long)]
    pub payload: Option<String>,
    /// Many points from a vector file.
    #[arg(long, conflicts_with_all = ["id", "vector"])]
    pub data: Option<PathBuf>,
    /// Ids of --data's rows, one per line (default: row number + --first-id).
    #[arg(long, requires = "data")]
    pub ids: Option<PathBuf>,
    /// Payloads of --data's rows, JSONL.
    #[arg(long, requires = "data")]
    pub payloads: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub first_id: u64,
    /// Points per batch (one WAL record, one fsync).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Never start a background merge.
    #[arg(long)]
    pub no_merge: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub collection: PathBuf,
    /// Ids to delete.
    pub ids: Vec<String>,
    /// More ids, one per line.
    #[arg(long)]
    pub ids_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    pub collection: PathBuf,
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    pub collection: PathBuf,
    /// Start after this id (the last of the previous page).
    #[arg(long)]
    pub after: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Every id (pages through the whole collection).
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct QueryArgs {
    pub collection: PathBuf,
    /// One query vector, comma-separated.
    #[arg(long, allow_hyphen_values = true)]
    pub vector: Option<String>,
    /// Query vectors from a file.
    #[arg(long, conflicts_with = "vector")]
    pub queries: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    #[arg(long = "L", default_value_t = 100)]
    pub l: usize,
    /// Beam width W: most reads in flight (pipelined search).
    #[arg(long, default_value_t = 8)]
    pub beam: usize,
    /// Include payloads.
    #[arg(long)]
    pub payload: bool,
    /// Only points passing this filter (Qdrant's filter language, JSON).
    #[arg(long)]
    pub filter: Option<String>,
    /// How to run a filtered query: auto (the planner), prefilter (exact
    /// path), graph (filter-aware beam search), postfilter (plain search,
    /// then the filter; may return fewer), exact (every match read).
    #[arg(long, default_value = "auto", value_parser = ["auto", "prefilter", "graph", "postfilter", "exact"])]
    pub plan: String,
    /// Print what each query did (plan, estimate, reads) on stderr, one JSON line per query.
    #[arg(long)]
    pub explain: bool,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Input vectors (.fbin, .u8bin, .i8bin, .fvecs, .bvecs).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub metric: Metric,
    /// Output index directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Maximum out-degree.
    #[arg(long = "R", default_value_t = 64)]
    pub r: usize,
    /// Build search list size.
    #[arg(long = "L", default_value_t = 100)]
    pub l: usize,
    #[arg(long, default_value_t = 1.2)]
    pub alpha: f32,
    /// Insertion passes: with 2, the first uses alpha = 1 (the paper's build).
    #[arg(long, default_value_t = 2)]
    pub passes: usize,
    /// PQ bytes per vector (sub-spaces), at most the dimension.
    #[arg(long, default_value_t = 32)]
    pub pq_bytes: usize,
    /// Vectors PQ trains on.
    #[arg(long, default_value_t = 256_000)]
    pub pq_sample: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Memory budget of the build in GiB (default: 90% of available). An
    /// input whose in-memory build needs more is built in shards that fit
    /// (the partitioned build), peak memory under the budget.
    #[arg(long)]
    pub build_memory: Option<f64>,
    /// Build in this many shards even when the in-memory build fits (to
    /// compare the two builds; the budget still bounds every shard).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Replace an existing index at --out.
    #[arg(long)]
    pub force: bool,
    /// How nodes are numbered: packed (graph neighbours share a sector, so
    /// a search uses every record of a sector it reads; the index keeps an
    /// ids file mapping nodes to input rows) or row-order (node = row).
    /// Packing applies when several records fit a sector (in memory or
    /// partitioned); otherwise the index is in row order.
    #[arg(long, value_enum, default_value_t = PlacementArg::Packed)]
    pub placement: PlacementArg,
    /// Fill lists below R with the nearest pruned candidates (DiskANN's
    /// disk build does); measured on debian-384 it changed neither recall
    /// nor reads, so it is off by default.
    #[arg(long)]
    pub saturate: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `basalt build --placement`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlacementArg {
    Packed,
    RowOrder,
}

impl From<PlacementArg> for crate::format::graph::Placement {
    fn from(p: PlacementArg) -> Self {
        match p {
            PlacementArg::Packed => crate::format::graph::Placement::Packed,
            PlacementArg::RowOrder => crate::format::graph::Placement::RowOrder,
        }
    }
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Index directory.
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    #[arg(long)]
    pub index: PathBuf,
    /// Query vectors (same element type and dimension as the index).
    #[arg(long)]
    pub queries: PathBuf,
    /// Ground truth, to report recall@k.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
    /// Comma-separated search list sizes; one result row per L.
    #[arg(long = "L", value_delimiter = ',', default_value = "10,20,40,80,160")]
    pub l: Vec<usize>,
    /// Beam width W: most reads in flight (pipelined; the width starts at 4
    /// and grows to W as the search converges), or reads per round (rounds).
    #[arg(long, default_value_t = 8)]
    pub beam: usize,
    /// pipelined: up to W reads in flight, each record expanded as it lands
    /// (PipeANN); rounds: W reads a round, each round waits for all
    /// (DiskANN).
    #[arg(long, default_value = "pipelined")]
    pub mode: crate::search::SearchMode,
    /// Search threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Queries each thread keeps in flight at once (pipelined disk search:
    /// a deeper device queue for more QPS, at some latency); 1 searches
    /// one query at a time. At most 16 (INTERLEAVE_MAX).
    #[arg(long, default_value_t = 1)]
    pub interleave: usize,
    /// Microseconds a search blocked on its reads spins before it sleeps
    /// (io_uring; 0: sleep at once; at most 1000).
    #[arg(long, default_value_t = crate::search::SPIN_WAIT_US_DEFAULT)]
    pub spin_us: u64,
    /// Records kept in RAM (the entry cache), at most.
    #[arg(long, default_value_t = 0)]
    pub cache_nodes: usize,
    /// RAM for the entry cache, in bytes (suffixes K, M, G: powers of 1024);
    /// bounds --cache-nodes when both are given.
    #[arg(long, value_parser = parse_bytes)]
    pub cache_bytes: Option<u64>,
    /// hot: the index's hot list (nodes sample queries expanded most), then
    /// breadth-first from the medoid; bfs: breadth-first only.
    #[arg(long, default_value = "hot")]
    pub cache_policy: crate::search::CachePolicy,
    /// uring or pread.
    #[arg(long, default_value = "uring")]
    pub reader: crate::io::ReaderKind,
    /// Load the whole graph (vectors and lists) into RAM and search it
    /// there: no reads (the cache options then do nothing).
    #[arg(long)]
    pub in_memory: bool,
    /// RAM the in-memory mode may take (suffixes K, M, G); default: 80% of
    /// what the kernel reports available.
    #[arg(long, value_parser = parse_bytes, requires = "in_memory")]
    pub in_memory_bytes: Option<u64>,
    /// What steers the in-memory search: sq8 (8-bit copies of f32 vectors,
    /// the pool rescored exactly at the end) or exact.
    #[arg(long, default_value = "sq8", requires = "in_memory")]
    pub in_memory_steer: crate::search::MemSteer,
    /// One JSON object per L on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write the ids found at the last L to this file (.ibin) for `basalt recall`.
    #[arg(long)]
    pub results: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Working directory for the demo's files (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Number of base vectors.
    #[arg(long, default_value_t = 20_000)]
    pub n: u64,
    /// Dimension.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
}

#[derive(Args, Debug)]
pub struct GenArgs {
    /// Output file (.fbin, .u8bin, .i8bin, .fvecs, .bvecs).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of vectors.
    #[arg(long)]
    pub n: u64,
    /// Dimension.
    #[arg(long)]
    pub dim: usize,
    /// Element type; must match the output extension.
    #[arg(long, default_value = "f32")]
    pub dtype: ElementType,
    /// Mixture clusters.
    #[arg(long, default_value_t = 64)]
    pub clusters: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write queries from the same mixture (another RNG stream) to this file.
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Number of queries.
    #[arg(long, default_value_t = 1000)]
    pub nq: u64,
}

#[derive(Args, Debug)]
pub struct GtArgs {
    #[arg(long)]
    pub base: PathBuf,
    #[arg(long)]
    pub queries: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub k: usize,
    #[arg(long)]
    pub metric: Metric,
    /// Output ground-truth file (.ibin or .bin).
    #[arg(long)]
    pub out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print a JSON summary (time, shape) on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RecallArgs {
    #[arg(long)]
    pub gt: PathBuf,
    /// Results in the ground-truth layout (.ibin/.bin/.ivecs), best first.
    #[arg(long)]
    pub results: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub k: usize,
}

/// Parses a byte count: digits with an optional K, M, G or T suffix
/// (powers of 1024; an optional "iB" or "B" after it).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        Some('T' | 't') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a byte count (e.g. 512M)"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} is too large"))
}
