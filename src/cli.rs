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
    /// Memory budget of the in-memory build in GiB (default: 90% of available).
    #[arg(long)]
    pub build_memory: Option<f64>,
    /// Replace an existing index at --out.
    #[arg(long)]
    pub force: bool,
    /// Fill lists below R with the nearest pruned candidates (DiskANN's
    /// disk build does); measured on debian-384 it changed neither recall
    /// nor reads, so it is off by default.
    #[arg(long)]
    pub saturate: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
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
    /// Beam width W: reads per round.
    #[arg(long, default_value_t = 4)]
    pub beam: usize,
    /// Search threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
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
