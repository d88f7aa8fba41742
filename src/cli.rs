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
