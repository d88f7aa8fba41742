//! `basalt plan`: what a workload of N vectors needs on one box (RAM, disk,
//! build time and memory, QPS and latency), which resource runs out first,
//! and where one box no longer serves it.
//!
//! Sizes come from the code that lays the files out (the graph layout, the
//! build's memory estimate, the partitioned build's plan) and the daemon's
//! limits. Rates come from measured runs stored with the tool
//! (`calibration.json`, refreshed by `bench/plan-calibrate.sh`): build
//! core-seconds per point, sector reads, rounds, CPU and I/O time per query
//! at a recall, and the recall PQ codes of each size reach at a fixed read
//! budget. The models are deliberately simple and say what they assume:
//! - build: graph core-seconds per point grow as a power of N (the exponent
//!   fitted on the synthetic sizes, held to 0..=1) and linearly with the
//!   dimension; cores scale linearly. The partitioned build inserts 2.5N
//!   points (2 copies, and a third for boundary points) into shards of the
//!   expected size 2.5N / shards, and adds its
//!   k-means, assignment pass, merge and connect from the per-point rates of
//!   a measured run (the `*_CORE_S_PER_*` constants);
//! - reads and rounds at a recall grow as a power of N fitted along the
//!   profile's family (a real set and its subsets, else the synthetic sets
//!   of one dimension); the ln N growth is only printed, as an optimistic
//!   bound;
//! - CPU per query is proportional to its reads (PQ distances of each read
//!   node's neighbours and one exact distance), linear in the dimension;
//! - a round waits one device latency (the calibration's I/O time per round);
//! - PQ codes of other sizes scale the reads by the ratio measured on the
//!   calibration's PQ sweep, keyed by bytes per dimension; below the sweep
//!   nothing was measured (no value), above it the largest size's values
//!   are kept (a bound: more bytes never need more reads).
//!
//! Every slope fitted against N or the dimension is held at or above 0: a
//! noisy calibration must not predict less work for more points. Byte
//! options are checked against [`OPTION_BYTES_MAX`], so no sum overflows.
//! Errors are `String`s naming the option or the calibration field at fault.

use serde::{Deserialize, Serialize};

use crate::distance::DIM_MAX;
use crate::element::ElementType;
use crate::index::build::{BuildOptions, estimate_memory_bytes_for, estimate_output_bytes};
use crate::index::partition;

#[cfg(test)]
mod tests;

/// The calibration built into the binary.
pub const CALIBRATION_JSON: &str = include_str!("calibration.json");

/// RAM of the process besides what is counted item by item.
pub const PROCESS_BASE_BYTES: u64 = partition::PROCESS_BASE_BYTES;
/// RAM of one collection's id map and payload store (fjall's defaults: a
/// 32 MiB block cache and up to 64 MiB of write buffers).
pub const ID_MAP_RAM_BYTES: u64 = 96 << 20;
/// Disk of the id map per point (fjall: id -> slot and back; measured at 51
/// bytes a point after importing 100K points without payloads, rounded up
/// for compaction's second copy). Payloads come on top.
pub const ID_MAP_DISK_BYTES_PER_POINT: u64 = 64;
/// fjall's journal at most (its default `max_journaling_size`).
pub const ID_MAP_JOURNAL_BYTES_MAX: u64 = 512 << 20;
/// Default RAM of the in-memory delta (the daemon's
/// `collections.delta_bytes_max`); two exist while a merge runs.
pub const DELTA_BYTES_DEFAULT: u64 = crate::collection::config::DELTA_BYTES_MAX_DEFAULT;
/// WAL bytes kept for a standby (`replication.retention_bytes_max`).
pub const WAL_RETENTION_BYTES_DEFAULT: u64 = 4 << 30;
/// Most bytes a workload's byte option (RAM, build memory, disk, cache,
/// delta, WAL retention) may give: 64 PiB, more than one box has.
pub const OPTION_BYTES_MAX: u64 = 1 << 56;
// Every size the plan adds up has at most 8 terms of at most
// OPTION_BYTES_MAX and 8 of N (at most NODES_MAX) times a point's vector,
// lists and sector slack: with the limit checked, no sum wraps.
const _: () = assert!(
    8 * OPTION_BYTES_MAX as u128
        + 8 * crate::format::NODES_MAX as u128
            * (4 * DIM_MAX as u128 + 4 * (crate::vamana::DEGREE_MAX as u128 + 1) + 4096)
        < u64::MAX as u128
);

// The partitioned build's phases besides the shard graphs, as core-seconds
// per point (or per operation) of one measured run: `bench/partitioned.sh`
// on 2M x 128 f32 with 2 threads under 0.5 GiB, 13 shards planned and split
// into 39 (bench/results/partitioned-2m-2026-12-06.jsonl). They are
// documented constants, not fitted from the calibration (its partitioned
// run records only its total graph time). Linear in the dimension where the
// phase reads vectors (assumed: only 128 was measured).
const PARTITION_RUN_POINTS: f64 = 2e6;
const PARTITION_RUN_DIM: f64 = 128.0;
const PARTITION_RUN_THREADS: f64 = 2.0;
/// The assignment pass (distances to the centres, two copies of each
/// vector to the shards' scratch files): 6.5 s. Taken as independent of the
/// shard count: with 13 centres the copies dominate; at thousands of
/// shards the distances would not be negligible (not measured).
pub const ASSIGNMENT_CORE_S_PER_VALUE: f64 =
    6.5 * PARTITION_RUN_THREADS / (PARTITION_RUN_POINTS * PARTITION_RUN_DIM);
/// The merge (each point's union of lists pruned with exact distances): 24.3 s.
pub const MERGE_CORE_S_PER_VALUE: f64 =
    24.3 * PARTITION_RUN_THREADS / (PARTITION_RUN_POINTS * PARTITION_RUN_DIM);
/// The connect phase (a BFS over the lists, no vectors): 0.8 s.
pub const CONNECT_CORE_S_PER_POINT: f64 = 0.8 * PARTITION_RUN_THREADS / PARTITION_RUN_POINTS;
/// The k-means, per sample point, centre, dimension and iteration: 0.2 s
/// for 13 centres on 26,000 sample points (13 x `PARTITION_SAMPLE_PER_SHARD`)
/// and `PARTITION_KMEANS_ITERS` (12) iterations, the splits into 39 shards
/// included.
pub const KMEANS_CORE_S_PER_OP: f64 =
    0.2 * PARTITION_RUN_THREADS / (26_000.0 * 13.0 * PARTITION_RUN_DIM * 12.0);

/// One measured build.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BuildPoint {
    pub set: String,
    pub role: String,
    /// Sets of one source (a generator and shape, or one real set and its
    /// subsets): reads grow with N along a family.
    #[serde(default)]
    pub family: String,
    pub n: u64,
    pub dim: usize,
    pub dtype: String,
    pub pq_bytes: usize,
    pub threads: usize,
    /// Load, graph (or shard graphs, merge and connect) seconds.
    pub graph_s: f64,
    pub total_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub shards: Option<usize>,
    /// Copies per point a partitioned build placed (sum of its shard
    /// sizes over N); a calibration made before the third copies holds
    /// none, and those builds placed 2.
    #[serde(default)]
    pub copies_per_point: Option<f64>,
}

/// One measured search at one L (1 thread, no entry cache).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SearchPoint {
    pub set: String,
    pub role: String,
    pub n: u64,
    pub dim: usize,
    pub dtype: String,
    pub pq_bytes: usize,
    #[serde(rename = "L")]
    pub l: usize,
    pub recall: f64,
    pub reads: f64,
    pub rounds: f64,
    pub cpu_us: f64,
    pub io_us: f64,
    pub latency_us: f64,
}

/// The device the calibration ran on.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Device {
    pub iops_qd1: f64,
    pub iops_qd32: f64,
    pub read_latency_us_qd1: f64,
}

/// Everything `bench/plan-calibrate.sh` measured.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Calibration {
    pub measured: String,
    pub command: String,
    pub build_threads: usize,
    pub device: Device,
    pub builds: Vec<BuildPoint>,
    pub searches: Vec<SearchPoint>,
}

/// What one query costs at a recall (interpolated between two L).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct QueryCost {
    pub reads: f64,
    pub rounds: f64,
    pub cpu_us: f64,
    pub io_us: f64,
}

impl Calibration {
    /// Parses and checks a calibration: every role the models need is there.
    pub fn parse(json: &str) -> Result<Calibration, String> {
        let c: Calibration = serde_json::from_str(json).map_err(|e| format!("calibration: {e}"))?;
        if c.build_threads == 0 {
            return Err("calibration: build_threads is 0".into());
        }
        if c.fit_builds().next().is_none() {
            return Err("calibration: no f32 build of role \"fit\"".into());
        }
        if c.builds.iter().any(|b| b.n < 2 || b.graph_s <= 0.0 || b.threads == 0) {
            return Err("calibration: a build with n < 2, no graph time or no threads".into());
        }
        // The partitioned model divides by the shard count.
        let few = partition::SHARD_REPLICAS;
        if let Some(b) = c.builds.iter().find(|b| b.shards.is_some_and(|s| s < few)) {
            return Err(format!(
                "calibration: build {} has {} shards; a partitioned build has at least {few}",
                b.set,
                b.shards.unwrap_or(0)
            ));
        }
        for b in c.fit_builds() {
            if c.sweep(&b.set).len() < 2 {
                return Err(format!("calibration: set {} has fewer than 2 searches", b.set));
            }
        }
        Ok(c)
    }

    /// The built-in calibration.
    pub fn builtin() -> Calibration {
        Calibration::parse(CALIBRATION_JSON).expect("the built-in calibration parses")
    }

    fn fit_builds(&self) -> impl Iterator<Item = &BuildPoint> {
        self.builds.iter().filter(|b| b.role == "fit" && b.dtype == "f32")
    }

    /// The searches of one set, by L.
    pub fn sweep(&self, set: &str) -> Vec<&SearchPoint> {
        let mut v: Vec<&SearchPoint> = self.searches.iter().filter(|s| s.set == set).collect();
        v.sort_by_key(|s| s.l);
        v
    }

    fn build(&self, set: &str) -> Option<&BuildPoint> {
        self.builds.iter().find(|b| b.set == set)
    }

    /// Exponent of N in the graph phase's core-seconds per point, from the
    /// sizes of the growth group (a log-log fit; memory and cache misses
    /// make it grow faster than the ln N of the search each insert runs).
    pub fn graph_exponent(&self) -> f64 {
        let pts: Vec<(f64, f64)> = self
            .growth_group()
            .iter()
            .map(|b| ((b.n as f64).ln(), (graph_core_s(b) / b.n as f64).ln()))
            .collect();
        if pts.len() < 2 { 0.0 } else { Line::fit(&pts).slope.clamp(0.0, 1.0) }
    }

    /// Core-seconds per point of the graph phase at N = 1M, as a line in
    /// the dimension (f32).
    fn graph_rate(&self) -> Line {
        let beta = self.graph_exponent();
        let pts: Vec<(f64, f64)> = self
            .fit_builds()
            .map(|b| {
                let per_point = graph_core_s(b) / b.n as f64;
                (b.dim as f64, per_point / (b.n as f64 / 1e6).powf(beta))
            })
            .collect();
        Line::fit_rising(&pts)
    }

    /// Graph core-seconds per point of an f32 build of `n` points.
    pub fn graph_per_point(&self, n: u64, dim: usize) -> f64 {
        self.graph_rate().at(dim as f64) * (n.max(2) as f64 / 1e6).powf(self.graph_exponent())
    }

    /// Core-seconds per point of the other phases (PQ, write, hot list).
    fn other_rate(&self) -> Line {
        let pts: Vec<(f64, f64)> = self
            .fit_builds()
            .map(|b| {
                let s = ((b.total_s - b.graph_s).max(0.0)) * b.threads as f64 / b.n as f64;
                (b.dim as f64, s)
            })
            .collect();
        Line::fit_rising(&pts)
    }

    /// Build core-seconds of an in-memory build of `n` x `dim` f32.
    pub fn build_core_s(&self, n: u64, dim: usize) -> f64 {
        n as f64 * (self.graph_per_point(n, dim) + self.other_rate().at(dim as f64))
    }

    /// Core-seconds of the shard graphs of a partitioned build before the
    /// measured factor: every point inserted `copies` times into shards of
    /// the expected size.
    fn shard_graphs_model(&self, n: u64, dim: usize, shards: usize, copies: f64) -> f64 {
        let inserts = copies * n as f64;
        inserts * self.graph_per_point(shard_points(n, shards, copies), dim)
    }

    /// Measured over modelled core-seconds of the partitioned build's shard
    /// graphs, from the calibration's partitioned run.
    fn partition_factor(&self) -> Option<f64> {
        let b = self.builds.iter().find(|b| b.role == "partitioned" && b.shards.is_some())?;
        let shards = b.shards?;
        // Its graph time holds the shard graphs, the merge and the connect
        // (bench/plan-calibrate.sh adds them up): the modelled merge and
        // connect come out. They are rates of another run, so they may take
        // at most half of it.
        let phases = partition_phases(b.n, b.dim, shards);
        let measured = graph_core_s(b);
        let shard_graphs = (measured - phases.merge - phases.connect).max(measured / 2.0);
        let copies = b.copies_per_point.unwrap_or(partition::SHARD_REPLICAS as f64);
        Some(shard_graphs / self.shard_graphs_model(b.n, b.dim, shards, copies))
    }

    /// Core-seconds of each phase of a partitioned build of `n` x `dim` f32
    /// in `shards` shards (at least one; a partition plan has at least
    /// `SHARD_REPLICAS`).
    pub fn partitioned_cost(&self, n: u64, dim: usize, shards: usize) -> PartitionedCost {
        let f = self.partition_factor().unwrap_or(1.0);
        PartitionedCost {
            shard_graphs: f * self.shard_graphs_model(n, dim, shards, PARTITION_COPIES_EXPECTED),
            rest: n as f64 * self.other_rate().at(dim as f64),
            ..partition_phases(n, dim, shards)
        }
    }

    /// Cost of one query at `recall` on set `set` (None: not reached).
    pub fn cost_at(&self, set: &str, recall: f64) -> Option<QueryCost> {
        let sweep = self.sweep(set);
        let at = |s: &SearchPoint| QueryCost {
            reads: s.reads,
            rounds: s.rounds,
            cpu_us: s.cpu_us,
            io_us: s.io_us,
        };
        let first = sweep.first()?;
        if first.recall >= recall {
            return Some(at(first));
        }
        for w in sweep.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.recall < recall && b.recall >= recall {
                let t = (recall - a.recall) / (b.recall - a.recall);
                let mix = |x: f64, y: f64| x + t * (y - x);
                return Some(QueryCost {
                    reads: mix(a.reads, b.reads),
                    rounds: mix(a.rounds, b.rounds),
                    cpu_us: mix(a.cpu_us, b.cpu_us),
                    io_us: mix(a.io_us, b.io_us),
                });
            }
        }
        None
    }

    /// Recall of set `set` at a read budget (interpolated; clamped to the
    /// sweep's ends).
    pub fn recall_at_reads(&self, set: &str, reads: f64) -> Option<f64> {
        let sweep = self.sweep(set);
        let first = sweep.first()?;
        if reads <= first.reads {
            return Some(first.recall);
        }
        for w in sweep.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.reads < reads && b.reads >= reads {
                let t = (reads - a.reads) / (b.reads - a.reads);
                return Some(a.recall + t * (b.recall - a.recall));
            }
        }
        sweep.iter().map(|s| s.recall).reduce(f64::max)
    }

    /// Best recall a set reached.
    pub fn best_recall(&self, set: &str) -> f64 {
        self.sweep(set).iter().map(|s| s.recall).fold(0.0, f64::max)
    }

    /// The profile used when none is named: the real set if the
    /// calibration has one, else the first fitted set.
    pub fn default_profile(&self) -> &str {
        self.builds
            .iter()
            .find(|b| b.role == "real")
            .or_else(|| self.fit_builds().next())
            .map(|b| b.set.as_str())
            .expect("a parsed calibration has a fitted build")
    }

    /// Sets a plan may take as its profile (f32, role fit or real).
    pub fn profiles(&self) -> Vec<&str> {
        self.builds
            .iter()
            .filter(|b| b.dtype == "f32" && (b.role == "fit" || b.role == "real"))
            .map(|b| b.set.as_str())
            .collect()
    }

    /// The f32 fitted sets of the dimension measured at the most sizes:
    /// how reads, rounds and CPU per read grow with N.
    fn growth_group(&self) -> Vec<&BuildPoint> {
        let mut dims: Vec<usize> = self.fit_builds().map(|b| b.dim).collect();
        dims.sort_unstable();
        dims.dedup();
        let sizes = |d: usize| self.fit_builds().filter(|b| b.dim == d).count();
        let best = dims.iter().copied().max_by_key(|&d| (sizes(d), std::cmp::Reverse(d)));
        self.fit_builds().filter(|b| Some(b.dim) == best).collect()
    }

    /// The sets reads grow along for a profile: its family's f32 sets
    /// measured at two or more sizes (a real set and its subsets), else the
    /// synthetic growth group.
    fn family_of(&self, profile: &str) -> Vec<&BuildPoint> {
        let Some(p) = self.build(profile) else { return self.growth_group() };
        let fam: Vec<&BuildPoint> = self
            .builds
            .iter()
            .filter(|b| {
                !p.family.is_empty()
                    && b.family == p.family
                    && b.dtype == "f32"
                    && matches!(b.role.as_str(), "fit" | "real" | "growth")
            })
            .collect();
        let mut sizes: Vec<u64> = fam.iter().map(|b| b.n).collect();
        sizes.sort_unstable();
        sizes.dedup();
        if sizes.len() >= 2 { fam } else { self.growth_group() }
    }

    /// The query-cost model at `recall` with the given profile: the
    /// profile's measured cost at its N, grown to other N as its family's
    /// sets grow (a power law; ln N as the optimistic bound), its CPU per
    /// read shifted to other dimensions as measured between dimensions at
    /// one N.
    pub fn search_model(&self, recall: f64, profile: &str) -> Result<SearchModel, String> {
        let past = |set: &str| {
            format!(
                "recall {recall} is past what the calibration measured (set {set} reached \
                 {:.3}); plan for a lower recall",
                self.best_recall(set)
            )
        };
        let pb = self
            .build(profile)
            .filter(|b| b.dtype == "f32" && (b.role == "fit" || b.role == "real"))
            .ok_or_else(|| {
                format!(
                    "no profile {profile:?}; the calibration has {}",
                    self.profiles().join(", ")
                )
            })?;
        let at = self.cost_at(profile, recall).ok_or_else(|| past(profile))?;
        let mut growth = Vec::new();
        let family = self.family_of(profile);
        let growth_sets: Vec<String> = family.iter().map(|b| b.set.clone()).collect();
        let growth_n_max = family.iter().map(|b| b.n).max().unwrap_or(pb.n);
        for b in family {
            let c = self.cost_at(&b.set, recall).ok_or_else(|| past(&b.set))?;
            growth.push(((b.n as f64).ln(), c));
        }
        // Costs grow with N or stay (Line::fit_rising): measured sets whose
        // reads fell with N are noise, not a trend to extrapolate.
        let line = |f: &dyn Fn(&QueryCost) -> f64| {
            Line::fit_rising(&growth.iter().map(|(x, c)| (*x, f(c))).collect::<Vec<_>>())
        };
        let loglog = |f: &dyn Fn(&QueryCost) -> f64| {
            let pts: Vec<(f64, f64)> =
                growth.iter().map(|(x, c)| (*x, f(c).max(1e-9).ln())).collect();
            Line::fit_rising(&pts)
        };
        // CPU per read grows as the codes leave the CPU caches: a property of
        // the machine and the code size, not the data, so it is read off
        // the synthetic sets (they reach the largest sizes).
        let mut cpu_growth = Vec::new();
        for b in self.growth_group() {
            let c = self.cost_at(&b.set, recall).ok_or_else(|| past(&b.set))?;
            cpu_growth.push(((b.n as f64).ln(), c.cpu_us / c.reads.max(1.0)));
        }
        let growth_x_max = cpu_growth.iter().map(|g| g.0).fold(f64::NEG_INFINITY, f64::max);
        // CPU per read against the dimension, among the sets of the size
        // measured at the most dimensions.
        let mut by_dim = Vec::new();
        let mut sizes: Vec<u64> = self.fit_builds().map(|b| b.n).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let dims_at = |n: u64| self.fit_builds().filter(|b| b.n == n).count();
        if let Some(n) = sizes.iter().copied().max_by_key(|&n| (dims_at(n), std::cmp::Reverse(n))) {
            for b in self.fit_builds().filter(|b| b.n == n) {
                if let Some(c) = self.cost_at(&b.set, recall) {
                    by_dim.push((b.dim as f64, c.cpu_us / c.reads.max(1.0)));
                }
            }
        }
        let io: Vec<f64> = self
            .fit_builds()
            .filter_map(|b| self.cost_at(&b.set, recall))
            .map(|c| c.io_us / c.rounds.max(1.0))
            .collect();
        Ok(SearchModel {
            profile: profile.to_string(),
            profile_n: pb.n,
            profile_dim: pb.dim,
            at_profile: at,
            reads_growth: loglog(&|c| c.reads),
            reads_growth_ln: line(&|c| c.reads),
            rounds_growth: loglog(&|c| c.rounds),
            cpu_per_read_growth: Line::fit_rising(&cpu_growth),
            growth_ln_n_max: growth_x_max,
            growth_sets,
            growth_n_max,
            cpu_per_read_dim: Line::fit_rising(&by_dim),
            io_per_round_us: io.iter().sum::<f64>() / io.len().max(1) as f64,
        })
    }

    /// Ratio of a dtype's cost to f32's at the same shape: (build, reads).
    fn dtype_factors(&self, element: ElementType, recall: f64) -> (f64, f64) {
        if element == ElementType::F32 {
            return (1.0, 1.0);
        }
        // u8 and i8 share the measured 1-byte set (u8), compared with the
        // f32 synthetic sets of the same generator.
        let Some(b) = self.builds.iter().find(|b| b.role == "fit" && b.dtype != "f32") else {
            return (1.0, 1.0);
        };
        let build = graph_core_s(b) / (b.n as f64 * self.graph_per_point(b.n, b.dim));
        let reference = self.growth_group().first().map(|g| g.set.clone());
        let reads = match (self.cost_at(&b.set, recall), reference) {
            (Some(c), Some(r)) => match self.search_model(recall, &r) {
                Ok(m) => c.reads / m.cost(b.n, b.dim).reads,
                Err(_) => 1.0,
            },
            _ => 1.0,
        };
        (build, reads)
    }

    /// The profile's measured build rate over the f32 model's at its shape
    /// (real data build slower than the synthetic sets the rate is fitted on).
    pub fn profile_build_factor(&self, profile: &str) -> f64 {
        match self.build(profile) {
            Some(b) => graph_core_s(b) / (b.n as f64 * self.graph_per_point(b.n, b.dim)),
            None => 1.0,
        }
    }

    /// A PQ sweep: (bytes per dimension, set) of one family's "pq" sets and
    /// the set they vary (same n and dim), by bytes. The profile's family's
    /// sweep if it has one, else the first measured.
    pub fn pq_sweep(&self, profile: &str) -> Vec<(f64, String)> {
        let fam = self.build(profile).map(|b| b.family.clone()).unwrap_or_default();
        let has = |f: &str| self.builds.iter().any(|b| b.role == "pq" && b.family == f);
        let fam = if has(&fam) {
            fam
        } else {
            match self.builds.iter().find(|b| b.role == "pq") {
                Some(b) => b.family.clone(),
                None => return Vec::new(),
            }
        };
        let pq: Vec<&BuildPoint> =
            self.builds.iter().filter(|b| b.role == "pq" && b.family == fam).collect();
        let mut v: Vec<(f64, String)> =
            pq.iter().map(|b| (b.pq_bytes as f64 / b.dim as f64, b.set.clone())).collect();
        let base = self.builds.iter().find(|b| {
            matches!(b.role.as_str(), "fit" | "real")
                && b.family == fam
                && b.n == pq[0].n
                && b.dim == pq[0].dim
        });
        if let Some(b) = base {
            v.push((b.pq_bytes as f64 / b.dim as f64, b.set.clone()));
        }
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }

    /// Reads at `recall` along a sweep, by bytes per dimension (log
    /// interpolation; None where a bracketing size does not reach it).
    pub fn sweep_reads(&self, sweep: &[(f64, String)], ratio: f64, recall: f64) -> Option<f64> {
        let pts: Vec<(f64, Option<f64>)> = sweep
            .iter()
            .map(|(r, set)| (r.ln(), self.cost_at(set, recall).map(|c| c.reads)))
            .collect();
        interpolate_opt(&pts, ratio.ln())
    }

    /// Recall at `reads` along a sweep, by bytes per dimension.
    pub fn sweep_recall(&self, sweep: &[(f64, String)], ratio: f64, reads: f64) -> Option<f64> {
        let pts: Vec<(f64, Option<f64>)> =
            sweep.iter().map(|(r, set)| (r.ln(), self.recall_at_reads(set, reads))).collect();
        interpolate_opt(&pts, ratio.ln())
    }
}

/// Core-seconds of a build's graph phases.
fn graph_core_s(b: &BuildPoint) -> f64 {
    b.graph_s * b.threads as f64
}

/// Points one of `shards` shards of a partitioned build of `n` takes on
/// average when every point is in `copies` of them. (The shard cap is
/// larger: shards are planned `SHARD_FILL` full and the clusters uneven.)
fn shard_points(n: u64, shards: usize, copies: f64) -> u64 {
    assert!(shards > 0, "a partitioned build has shards (Calibration::parse, partition::plan)");
    (copies * n as f64 / shards as f64).ceil() as u64
}

/// Copies per point a partitioned build is expected to place: 2, plus the
/// third copies of points near three-way boundaries, which the builds
/// measured placed for about half the points (2.49 on 300K x 128, 2.53 on
/// 100K x 64 synthetic; `partition::THIRD_COPY_RATIO`).
pub const PARTITION_COPIES_EXPECTED: f64 = 2.5;

/// The partitioned build's k-means, assignment, merge and connect, from the
/// measured per-point rates (the shard graphs and the rest left at 0).
fn partition_phases(n: u64, dim: usize, shards: usize) -> PartitionedCost {
    let (nf, d) = (n as f64, dim as f64);
    // The k-means sample: PARTITION_SAMPLE_PER_SHARD a centre, at most
    // PARTITION_SAMPLE_MAX (and N).
    let sample = (shards as u64 * partition::PARTITION_SAMPLE_PER_SHARD as u64)
        .min(partition::PARTITION_SAMPLE_MAX as u64)
        .min(n) as f64;
    let iterations = partition::PARTITION_KMEANS_ITERS as f64;
    PartitionedCost {
        kmeans: KMEANS_CORE_S_PER_OP * sample * shards as f64 * d * iterations,
        assignment: ASSIGNMENT_CORE_S_PER_VALUE * nf * d,
        shard_graphs: 0.0,
        merge: MERGE_CORE_S_PER_VALUE * nf * d,
        connect: CONNECT_CORE_S_PER_POINT * nf,
        rest: 0.0,
    }
}

/// Core-seconds (or seconds) of each phase of a partitioned build.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PartitionedCost {
    pub kmeans: f64,
    pub assignment: f64,
    pub shard_graphs: f64,
    pub merge: f64,
    pub connect: f64,
    /// PQ, write and hot list, at the in-memory build's rate.
    pub rest: f64,
}

impl PartitionedCost {
    pub fn total(&self) -> f64 {
        self.kmeans + self.assignment + self.shard_graphs + self.merge + self.connect + self.rest
    }

    fn scaled(&self, f: f64) -> PartitionedCost {
        PartitionedCost {
            kmeans: self.kmeans * f,
            assignment: self.assignment * f,
            shard_graphs: self.shard_graphs * f,
            merge: self.merge * f,
            connect: self.connect * f,
            rest: self.rest * f,
        }
    }
}

/// Linear interpolation over sorted (x, y) points, clamped at the ends;
/// None when a bracketing point has no value.
fn interpolate_opt(pts: &[(f64, Option<f64>)], x: f64) -> Option<f64> {
    let first = pts.first()?;
    if x <= first.0 {
        return first.1;
    }
    for w in pts.windows(2) {
        if x == w[1].0 {
            // On a measured point: its value, whatever its neighbours'.
            return w[1].1;
        }
        if x < w[1].0 {
            let (a, b) = (w[0].1?, w[1].1?);
            let t = (x - w[0].0) / (w[1].0 - w[0].0);
            return Some(a + t * (b - a));
        }
    }
    pts.last()?.1
}

/// y = intercept + slope x, least squares (a constant through one x),
/// never below half the smallest fitted y (a line through two dimensions
/// must not reach zero far from them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Line {
    pub intercept: f64,
    pub slope: f64,
    pub floor: f64,
}

impl Line {
    pub fn fit(pts: &[(f64, f64)]) -> Line {
        if pts.is_empty() {
            return Line { intercept: 0.0, slope: 0.0, floor: 0.0 };
        }
        let n = pts.len() as f64;
        let floor = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min).max(0.0) / 2.0;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
        if sxx <= f64::EPSILON * mx.abs().max(1.0) {
            return Line { intercept: my, slope: 0.0, floor };
        }
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let slope = sxy / sxx;
        Line { intercept: my - slope * mx, slope, floor }
    }

    /// The least-squares line with its slope held at or above 0 (where the
    /// free fit falls, the best such line is the mean).
    pub fn fit_rising(pts: &[(f64, f64)]) -> Line {
        let l = Line::fit(pts);
        if l.slope >= 0.0 {
            return l;
        }
        let mean = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
        Line { intercept: mean, slope: 0.0, floor: l.floor }
    }

    pub fn at(&self, x: f64) -> f64 {
        (self.intercept + self.slope * x).max(self.floor)
    }
}

/// Reads, rounds and CPU of a query at one recall, as functions of N and the
/// dimension, from one measured profile.
#[derive(Clone, Debug, Serialize)]
pub struct SearchModel {
    pub profile: String,
    pub profile_n: u64,
    pub profile_dim: usize,
    pub at_profile: QueryCost,
    /// ln reads and ln rounds against ln N (a power law, fitted along the
    /// profile's family, else the synthetic sets of one dimension measured
    /// at several sizes).
    pub reads_growth: Line,
    pub rounds_growth: Line,
    /// Reads against ln N (the optimistic bound: a search's hops grow as
    /// ln N on a graph of fixed quality).
    pub reads_growth_ln: Line,
    /// CPU per read against ln N (synthetic sets), held past the largest
    /// of them (it grows while the codes leave the CPU caches, then stays).
    pub cpu_per_read_growth: Line,
    pub growth_ln_n_max: f64,
    /// The sets the reads and rounds growth was fitted on, and the largest
    /// N among them (past it the growth is extrapolated).
    pub growth_sets: Vec<String>,
    pub growth_n_max: u64,
    /// CPU per read against the dimension (sets of one size).
    pub cpu_per_read_dim: Line,
    pub io_per_round_us: f64,
}

impl SearchModel {
    /// One query's cost on `n` x `dim`.
    pub fn cost(&self, n: u64, dim: usize) -> QueryCost {
        let (x, x0) = ((n.max(2) as f64).ln(), (self.profile_n.max(2) as f64).ln());
        let power = |l: &Line| (l.slope * (x - x0)).exp();
        let p = &self.at_profile;
        let reads = (p.reads * power(&self.reads_growth)).max(1.0);
        let rounds = (p.rounds * power(&self.rounds_growth)).max(1.0);
        let held = |x: f64| x.min(self.growth_ln_n_max);
        let c = &self.cpu_per_read_growth;
        let d = &self.cpu_per_read_dim;
        let per_read = p.cpu_us / p.reads.max(1.0)
            * (c.at(held(x)) / c.at(held(x0)))
            * (d.at(dim as f64) / d.at(self.profile_dim as f64));
        QueryCost { reads, rounds, cpu_us: reads * per_read, io_us: rounds * self.io_per_round_us }
    }

    /// Reads on `n` points under the ln N growth (the optimistic bound).
    pub fn reads_ln(&self, n: u64) -> f64 {
        let (x, x0) = ((n.max(2) as f64).ln(), (self.profile_n.max(2) as f64).ln());
        let l = &self.reads_growth_ln;
        (self.at_profile.reads * l.at(x) / l.at(x0)).max(1.0)
    }
}

/// The workload and the box.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    pub n: u64,
    pub dim: usize,
    pub element: ElementType,
    pub recall: f64,
    pub ram_bytes: u64,
    pub build_memory_bytes: u64,
    /// Random 4 KiB reads per second of the box's SSDs at depth.
    pub disk_iops: f64,
    pub cores: usize,
    pub disk_bytes: Option<u64>,
    pub qps_target: Option<f64>,
    pub degree_max: usize,
    pub pq_bytes: usize,
    pub cache_bytes: u64,
    pub delta_bytes_max: u64,
    pub wal_retention_bytes: u64,
    /// The calibration set whose reads at the recall the plan grows to N
    /// (None: [`Calibration::default_profile`]).
    pub profile: Option<String>,
}

impl Workload {
    /// Checks the workload's numbers; errors name the option.
    pub fn validate(&self) -> Result<(), String> {
        if self.n == 0 {
            return Err("--n must be at least 1".into());
        }
        if self.n > crate::format::NODES_MAX {
            return Err(format!(
                "--n {} is more than one index holds: node ids are 32-bit (NODES_MAX {}); past \
                 it one box means several indexes, which basalt does not plan",
                self.n,
                crate::format::NODES_MAX
            ));
        }
        if self.dim == 0 || self.dim > DIM_MAX {
            return Err(format!("--dim {} is outside 1..={DIM_MAX} (DIM_MAX)", self.dim));
        }
        if !(self.recall > 0.0 && self.recall < 1.0) {
            return Err(format!("--recall {} must be above 0 and below 1", self.recall));
        }
        if self.pq_bytes == 0 || self.pq_bytes > self.dim {
            return Err(format!(
                "--pq-bytes {} must be between 1 and the dimension {}",
                self.pq_bytes, self.dim
            ));
        }
        let (lo, hi) = (crate::vamana::DEGREE_MIN, crate::vamana::DEGREE_MAX);
        if self.degree_max < lo || self.degree_max > hi {
            return Err(format!(
                "--R {} is outside {lo}..={hi} (DEGREE_MIN, DEGREE_MAX)",
                self.degree_max
            ));
        }
        if self.cores == 0 || self.cores > crate::THREADS_MAX {
            return Err(format!("--cores {} is outside 1..={}", self.cores, crate::THREADS_MAX));
        }
        if self.ram_bytes == 0 || self.build_memory_bytes == 0 {
            return Err("--ram and --build-memory must be above 0".into());
        }
        let bytes = [
            ("--ram", Some(self.ram_bytes)),
            ("--build-memory", Some(self.build_memory_bytes)),
            ("--disk", self.disk_bytes),
            ("--cache", Some(self.cache_bytes)),
            ("--delta", Some(self.delta_bytes_max)),
            ("--wal-retention", Some(self.wal_retention_bytes)),
        ];
        for (name, v) in bytes {
            if let Some(v) = v
                && v > OPTION_BYTES_MAX
            {
                return Err(format!(
                    "{name} of {} GiB is more than {} GiB (OPTION_BYTES_MAX)",
                    v >> 30,
                    OPTION_BYTES_MAX >> 30
                ));
            }
        }
        if !(self.disk_iops.is_finite() && self.disk_iops > 0.0) {
            return Err("--disk-iops must be above 0".into());
        }
        if let Some(q) = self.qps_target
            && !(q.is_finite() && q > 0.0)
        {
            return Err("--qps must be above 0".into());
        }
        Ok(())
    }

    /// The options `basalt build` uses by default (packed placement, so
    /// the ids file and the packing's memory count).
    fn build_options(&self) -> BuildOptions {
        let mut o = BuildOptions {
            pq_chunks: self.pq_bytes,
            placement: crate::format::graph::Placement::Packed,
            ..BuildOptions::default()
        };
        o.graph.degree_max = self.degree_max;
        o
    }

    fn with_n(&self, n: u64) -> Workload {
        Workload { n, ..self.clone() }
    }
}

/// RAM of the serving daemon, item by item.
#[derive(Clone, Debug, Serialize)]
pub struct Ram {
    pub codes: u64,
    pub codebook: u64,
    pub cache: u64,
    /// The delta at its bound, twice (a merge runs beside the next delta).
    pub deltas: u64,
    /// What a merge may use on top (`MERGE_MEMORY_BYTES_MAX`, or less).
    pub merge: u64,
    /// Tombstones and free slots: bitmaps of N bits.
    pub bitmaps: u64,
    pub id_map: u64,
    pub base: u64,
    pub total: u64,
}

/// Disk, item by item.
#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    /// Graph, codes, codebook, hot list and manifest.
    pub index: u64,
    /// A merge writes the next generation beside the current one.
    pub next_generation: u64,
    /// WAL: the delta's worth plus what a standby may need kept.
    pub wal: u64,
    pub id_map: u64,
    pub total: u64,
    /// The input vectors (a build reads them; not needed after).
    pub build_input: u64,
    /// The partitioned build's scratch files (freed when it ends); counted
    /// also when that build is refused, as what it needs once it fits.
    pub build_scratch: u64,
    /// What a build needs at its peak: the input, the scratch, the index.
    pub build_total: u64,
}

/// The build: in memory or partitioned, its memory and time.
#[derive(Clone, Debug, Serialize)]
pub struct Build {
    pub in_memory_bytes: u64,
    pub budget_bytes: u64,
    pub partitioned: Option<partition::PartitionPlan>,
    /// Why no build fits the budget (None: one does).
    pub refused: Option<String>,
    pub in_memory_s: f64,
    pub partitioned_s: Option<f64>,
    /// The partitioned build's seconds phase by phase.
    pub partitioned_phases_s: Option<PartitionedCost>,
}

/// A query at the target recall.
#[derive(Clone, Debug, Serialize)]
pub struct Search {
    pub reads: f64,
    /// Reads if they grow as ln N instead (the optimistic bound).
    pub reads_ln: f64,
    pub rounds: f64,
    pub cpu_us: f64,
    pub io_us: f64,
    /// Mean latency of one query on an idle box.
    pub latency_us: f64,
    /// Queries per second the SSDs allow (`disk_iops / reads`).
    pub qps_disk: f64,
    /// Queries per second the cores allow (`cores / cpu`).
    pub qps_cpu: f64,
    pub qps: f64,
    /// "disk" or "cpu": which bound `qps` is.
    pub bound: &'static str,
    /// N is past the largest set the reads' growth was fitted on
    /// (`growth_n_max`): the power law is extrapolated. A check set
    /// measured beyond it does not count, as nothing is fitted on it.
    pub extrapolated: bool,
    pub growth_n_max: u64,
    /// The measured set the costs are grown from, its size and dimension.
    pub profile: String,
    pub profile_n: u64,
    pub profile_dim: usize,
}

/// One PQ size: the RAM it takes and what it costs in reads or recall.
#[derive(Clone, Debug, Serialize)]
pub struct PqRow {
    pub pq_bytes: usize,
    pub codes_bytes: u64,
    pub ram_total_bytes: u64,
    /// Reads at the target recall (None: not reached in the calibration,
    /// or below the sweep).
    pub reads: Option<f64>,
    /// Recall at the plan's read budget (None below the sweep).
    pub recall_at_budget: Option<f64>,
    pub sweep: SweepPosition,
}

/// Where a PQ size lies against the sizes the sweep measured (in bytes per
/// dimension).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SweepPosition {
    /// Below the smallest: nothing measured, so no reads or recall (the
    /// smallest size's would be optimistic: fewer bytes need more reads).
    Below,
    /// Between two measured sizes (log-interpolated) or on one.
    Inside,
    /// Above the largest: its values, a bound (more bytes never need more
    /// reads nor reach less recall).
    Above,
}

/// A resource and the largest N it serves.
#[derive(Clone, Debug, Serialize)]
pub struct Limit {
    pub resource: &'static str,
    pub n_max: u64,
    pub detail: String,
}

/// Everything `basalt plan` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub workload: Workload,
    pub ram: Ram,
    pub disk: Disk,
    pub build: Build,
    pub search: Search,
    pub pq: Vec<PqRow>,
    /// Reads a query may make: `disk_iops / qps` with a QPS target, else
    /// what the chosen PQ size needs at the recall.
    pub read_budget: f64,
    /// The RAM / recall tipping point: the fewest PQ bytes whose recall at
    /// the read budget reaches the target, and the RAM total with them
    /// (None: no size up to the dimension does).
    pub tipping_pq_bytes: Option<usize>,
    pub tipping_ram_bytes: Option<u64>,
    /// The tipping point is the sweep's smallest size: it may be lower.
    pub tipping_at_sweep_end: bool,
    /// The most PQ bytes the box's RAM holds, and their recall at the budget.
    pub ram_pq_max: usize,
    pub ram_pq_recall: Option<f64>,
    /// The sets of the PQ sweep used.
    pub pq_sweep: Vec<String>,
    /// The chosen PQ size is below the sweep: its reads are the smallest
    /// size's, a lower bound.
    pub pq_below_sweep: bool,
    /// Largest N per resource, smallest first.
    pub limits: Vec<Limit>,
    pub fits: bool,
    pub calibration: String,
}

fn ram_for(w: &Workload, pq_bytes: usize) -> Ram {
    let codes = w.n * pq_bytes as u64;
    let codebook = crate::format::pq::pq_file_bytes(w.dim + 1, pq_bytes) as u64;
    let deltas = 2 * w.delta_bytes_max;
    let merge = crate::collection::merge::MERGE_MEMORY_BYTES_MAX;
    let bitmaps = 2 * w.n.div_ceil(8);
    let total = codes
        + codebook
        + w.cache_bytes
        + deltas
        + merge
        + bitmaps
        + ID_MAP_RAM_BYTES
        + PROCESS_BASE_BYTES;
    Ram {
        codes,
        codebook,
        cache: w.cache_bytes,
        deltas,
        merge,
        bitmaps,
        id_map: ID_MAP_RAM_BYTES,
        base: PROCESS_BASE_BYTES,
        total,
    }
}

fn disk_for(w: &Workload, scratch: u64) -> Disk {
    let index = estimate_output_bytes(w.n, w.dim, w.element, &w.build_options());
    let wal = w.delta_bytes_max + crate::wal::SEGMENT_BYTES_DEFAULT + w.wal_retention_bytes;
    let id_map = w.n * ID_MAP_DISK_BYTES_PER_POINT + ID_MAP_JOURNAL_BYTES_MAX;
    Disk {
        index,
        next_generation: index,
        wal,
        id_map,
        total: 2 * index + wal + id_map,
        build_input: w.n * (w.dim * w.element.size_bytes()) as u64,
        build_scratch: scratch,
        build_total: w.n * (w.dim * w.element.size_bytes()) as u64 + scratch + index,
    }
}

fn build_for(w: &Workload, cal: &Calibration, build_factor: f64) -> Build {
    let opts = w.build_options();
    let in_memory = estimate_memory_bytes_for(w.n, w.dim, w.element, &opts, w.cores);
    let in_memory_s = cal.build_core_s(w.n, w.dim) * build_factor / w.cores as f64;
    let budget = w.build_memory_bytes;
    if in_memory <= budget {
        return Build {
            in_memory_bytes: in_memory,
            budget_bytes: budget,
            partitioned: None,
            refused: None,
            in_memory_s,
            partitioned_s: None,
            partitioned_phases_s: None,
        };
    }
    match partition::plan(w.n, w.dim, w.element, &opts, budget, w.cores) {
        Ok(p) => {
            let phases =
                cal.partitioned_cost(w.n, w.dim, p.shards).scaled(build_factor / w.cores as f64);
            Build {
                in_memory_bytes: in_memory,
                budget_bytes: budget,
                partitioned: Some(p),
                refused: None,
                in_memory_s,
                partitioned_s: Some(phases.total()),
                partitioned_phases_s: Some(phases),
            }
        }
        Err(e) => Build {
            in_memory_bytes: in_memory,
            budget_bytes: budget,
            partitioned: None,
            refused: Some(e),
            in_memory_s,
            partitioned_s: None,
            partitioned_phases_s: None,
        },
    }
}

/// Scratch disk a build of the workload writes: none in memory, else the
/// partitioned build's, also when that build is refused (it is what the
/// build needs once given the memory). So the disk a build needs grows
/// with N, which the bisection for the disk's limit relies on; counting a
/// refused build without scratch made larger N look cheaper.
fn build_scratch_bytes(w: &Workload) -> u64 {
    let opts = w.build_options();
    if estimate_memory_bytes_for(w.n, w.dim, w.element, &opts, w.cores) <= w.build_memory_bytes {
        return 0;
    }
    // The scratch holds every point SHARD_REPLICAS times whatever the shard
    // count, so it does not depend on the budget: plan with no bound.
    partition::plan(w.n, w.dim, w.element, &opts, u64::MAX, w.cores)
        .expect("with no memory bound every N up to NODES_MAX has a partition plan")
        .scratch_bytes
}

/// Disk the workload needs at its peak: serving (two generations, the WAL,
/// the id map) or building (input, scratch and index).
fn disk_need_bytes(w: &Workload) -> u64 {
    let d = disk_for(w, build_scratch_bytes(w));
    d.total.max(d.build_total)
}

/// The query cost for a workload: the f32 model, the dtype's factor and
/// the PQ size's factor.
fn search_for(w: &Workload, model: &SearchModel, reads_factor: f64) -> Search {
    let base = model.cost(w.n, w.dim);
    let f = reads_factor;
    let reads = base.reads * f;
    let rounds = base.rounds * f;
    let cpu_us = base.cpu_us * f;
    let io_us = rounds * model.io_per_round_us;
    let qps_disk = w.disk_iops / reads;
    let qps_cpu = w.cores as f64 * 1e6 / cpu_us.max(1.0);
    let (qps, bound) = if qps_disk <= qps_cpu { (qps_disk, "disk") } else { (qps_cpu, "cpu") };
    Search {
        reads,
        reads_ln: model.reads_ln(w.n) * reads_factor,
        rounds,
        cpu_us,
        io_us,
        latency_us: cpu_us + io_us,
        qps_disk,
        qps_cpu,
        qps,
        bound,
        extrapolated: w.n > model.growth_n_max,
        growth_n_max: model.growth_n_max,
        profile: model.profile.clone(),
        profile_n: model.profile_n,
        profile_dim: model.profile_dim,
    }
}

/// The largest n in 1..=hi for which `ok` holds (`ok` is monotone: true
/// up to some n); 0 if it fails at 1.
fn largest_n(hi: u64, ok: impl Fn(u64) -> bool) -> u64 {
    if !ok(1) {
        return 0;
    }
    if ok(hi) {
        return hi;
    }
    let (mut lo, mut hi) = (1u64, hi);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if ok(mid) { lo = mid } else { hi = mid }
    }
    lo
}

/// Plans a workload with a calibration.
pub fn plan(w: &Workload, cal: &Calibration) -> Result<Plan, String> {
    w.validate()?;
    let profile = w.profile.as_deref().unwrap_or(cal.default_profile());
    let model = cal.search_model(w.recall, profile)?;
    let (dtype_build, dtype_reads) = cal.dtype_factors(w.element, w.recall);
    let build_factor = dtype_build * cal.profile_build_factor(profile);
    // PQ: the sweep (the profile's family's if measured) gives reads at
    // the recall per bytes per dimension, relative to the profile's own ratio.
    let sweep = cal.pq_sweep(profile);
    let profile_ratio = cal.build(profile).map_or(1.0, |b| b.pq_bytes as f64 / b.dim as f64);
    let sweep_lo = sweep.first().map_or(0.0, |s| s.0);
    let sweep_hi = sweep.last().map_or(f64::INFINITY, |s| s.0);
    let profile_sweep_reads = cal.sweep_reads(&sweep, profile_ratio, w.recall);
    let pq_factor = |ratio: f64| -> Option<f64> {
        match profile_sweep_reads {
            Some(base) => cal.sweep_reads(&sweep, ratio, w.recall).map(|r| r / base),
            None => Some(1.0),
        }
    };
    let ratio = w.pq_bytes as f64 / w.dim as f64;
    let Some(own_pq) = pq_factor(ratio) else {
        return Err(format!(
            "--pq-bytes {} ({:.3} bytes a dimension) does not reach recall {} in the \
             calibration's PQ sweep; choose more PQ bytes or a lower recall",
            w.pq_bytes, ratio, w.recall
        ));
    };
    // Below the sweep's smallest size nothing was measured; above its
    // largest, the largest's values are a bound (more bytes never need more
    // reads). The tolerance absorbs the rounding of bytes per dimension.
    let position = |ratio: f64| {
        if ratio < sweep_lo * 0.999 {
            SweepPosition::Below
        } else if ratio > sweep_hi * 1.001 {
            SweepPosition::Above
        } else {
            SweepPosition::Inside
        }
    };
    // The chosen size below the sweep is still planned, at the smallest
    // size's reads (flagged: a lower bound).
    let reads_factor = dtype_reads * own_pq;
    let ram = ram_for(w, w.pq_bytes);
    let build = build_for(w, cal, build_factor);
    let disk = disk_for(w, build_scratch_bytes(w));
    let search = search_for(w, &model, reads_factor);

    // The read budget: what the disk allows at the QPS asked for, else what
    // the chosen PQ size needs. Recall at a budget is read off the sweep at
    // its size: the budget is scaled by how much more the plan's N reads
    // than the sweep's set at the same PQ ratio.
    let read_budget = match w.qps_target {
        Some(q) => w.disk_iops / q,
        None => search.reads,
    };
    let own_sweep_reads = cal.sweep_reads(&sweep, ratio, w.recall);
    let budget_at_sweep = own_sweep_reads.map(|r| read_budget * r / search.reads);
    let recall_at_budget = |ratio: f64| -> Option<f64> {
        if position(ratio) == SweepPosition::Below {
            return None;
        }
        cal.sweep_recall(&sweep, ratio, budget_at_sweep?)
    };
    // Sizes at the sweep's ratios (and the chosen one), for this dimension,
    // rounded up so that the smallest stays within the sweep.
    let mut sizes: Vec<usize> = sweep
        .iter()
        .map(|(r, _)| ((r * w.dim as f64 - 1e-6).ceil() as usize).clamp(1, w.dim))
        .collect();
    sizes.push(w.pq_bytes);
    sizes.sort_unstable();
    sizes.dedup();
    let pq: Vec<PqRow> = sizes
        .iter()
        .map(|&p| {
            let r = p as f64 / w.dim as f64;
            let sweep = position(r);
            PqRow {
                pq_bytes: p,
                codes_bytes: w.n * p as u64,
                ram_total_bytes: ram_for(w, p).total,
                reads: match sweep {
                    SweepPosition::Below => None,
                    _ => pq_factor(r).map(|f| search.reads / own_pq * f),
                },
                recall_at_budget: recall_at_budget(r),
                sweep,
            }
        })
        .collect();
    // The tipping point: the fewest PQ bytes whose recall at the budget
    // reaches the target (bisection over whole bytes; recall grows with them).
    let tipping_pq_bytes = if budget_at_sweep.is_some() {
        let ok = |p: u64| {
            recall_at_budget(p as f64 / w.dim as f64).is_some_and(|r| r >= w.recall - 1e-9)
        };
        match largest_n(w.dim as u64, |p| !ok(p)) {
            p if p as usize >= w.dim => None,
            p => Some(p as usize + 1),
        }
    } else {
        None
    };
    let tipping_ram_bytes = tipping_pq_bytes.map(|p| ram_for(w, p).total);
    // At the sweep's smallest size: the true point may be lower.
    let tipping_at_sweep_end =
        tipping_pq_bytes.is_some_and(|p| ((p - 1) as f64 / w.dim as f64) < sweep_lo * 0.999);
    // The most PQ bytes the box's RAM holds, and the recall they give.
    let fixed = ram_for(w, 0).total;
    let ram_pq_max = (w.ram_bytes.saturating_sub(fixed) / w.n).min(w.dim as u64) as usize;
    let ram_pq_recall =
        if ram_pq_max == 0 { None } else { recall_at_budget(ram_pq_max as f64 / w.dim as f64) };

    // Largest N per resource.
    let hi = crate::format::NODES_MAX;
    let mut limits = vec![
        Limit {
            resource: "RAM",
            n_max: largest_n(hi, |n| ram_for(&w.with_n(n), w.pq_bytes).total <= w.ram_bytes),
            detail: format!(
                "{} of RAM: PQ codes of {} bytes a point, plus the deltas, a merge and the cache",
                gib(w.ram_bytes),
                w.pq_bytes
            ),
        },
        Limit {
            resource: "build memory",
            n_max: largest_n(hi, |n| build_for(&w.with_n(n), cal, 1.0).refused.is_none()),
            detail: format!(
                "the partitioned build within {} (SHARDS_MAX {}, and the phases that hold \
                 every code or a bit per point)",
                gib(w.build_memory_bytes),
                partition::SHARDS_MAX
            ),
        },
        Limit {
            resource: "node ids",
            n_max: crate::format::NODES_MAX,
            detail: "32-bit node ids (NODES_MAX)".into(),
        },
    ];
    if let Some(d) = w.disk_bytes {
        limits.push(Limit {
            resource: "disk",
            n_max: largest_n(hi, |n| disk_need_bytes(&w.with_n(n)) <= d),
            detail: format!(
                "{} of disk: two generations, the WAL and the id map, or a build's input, \
                 scratch and index",
                gib(d)
            ),
        });
    }
    if let Some(q) = w.qps_target {
        limits.push(Limit {
            resource: "QPS",
            n_max: largest_n(hi, |n| search_for(&w.with_n(n), &model, reads_factor).qps >= q),
            detail: format!(
                "{q} queries/s at recall {} ({} reads/s, {} cores)",
                w.recall, w.disk_iops, w.cores
            ),
        });
    }
    limits.sort_by_key(|l| l.n_max);
    let fits = limits.iter().all(|l| w.n <= l.n_max);
    Ok(Plan {
        workload: w.clone(),
        ram,
        disk,
        build,
        search,
        pq,
        read_budget,
        tipping_pq_bytes,
        tipping_ram_bytes,
        tipping_at_sweep_end,
        ram_pq_max,
        ram_pq_recall,
        pq_sweep: sweep.iter().map(|s| s.1.clone()).collect(),
        pq_below_sweep: position(ratio) == SweepPosition::Below,
        limits,
        fits,
        calibration: format!("{} ({})", cal.measured, cal.command),
    })
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86_400.0)
    }
}

fn count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2}B", n as f64 / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1}M", n as f64 / 1e6)
    } else if n >= 1000 {
        format!("{:.0}K", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

/// The plan as text for an operator.
pub fn render(p: &Plan) -> String {
    use std::fmt::Write;
    let w = &p.workload;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "plan for {} x {} {} at recall@10 {} on {} cores, {} RAM, {:.0}K reads/s{}",
        count(w.n),
        w.dim,
        w.element,
        w.recall,
        w.cores,
        gib(w.ram_bytes),
        w.disk_iops / 1e3,
        w.disk_bytes.map(|d| format!(", {} disk", gib(d))).unwrap_or_default()
    );
    let r = &p.ram;
    let _ = writeln!(s, "\nRAM (serving): {}", gib(r.total));
    let _ = writeln!(s, "  PQ codes ({} bytes a point)  {}", w.pq_bytes, gib(r.codes));
    let _ = writeln!(s, "  entry cache                  {}", gib(r.cache));
    let _ = writeln!(s, "  deltas (2 x delta_bytes_max) {}", gib(r.deltas));
    let _ = writeln!(s, "  a running merge, at most     {}", gib(r.merge));
    let _ = writeln!(
        s,
        "  codebook, bitmaps, id map, process {}",
        gib(r.codebook + r.bitmaps + r.id_map + r.base)
    );
    let d = &p.disk;
    let _ = writeln!(s, "\ndisk: {}", gib(d.total));
    let _ = writeln!(s, "  index (graph with vectors, codes, hot list) {}", gib(d.index));
    let _ = writeln!(s, "  next generation during a merge              {}", gib(d.next_generation));
    let _ = writeln!(s, "  WAL (delta + a standby's retention)         {}", gib(d.wal));
    let _ = writeln!(s, "  id map (without payloads)                   {}", gib(d.id_map));
    let _ = writeln!(
        s,
        "  to build: the input {} and scratch {} beside the index ({} in all)",
        gib(d.build_input),
        gib(d.build_scratch),
        gib(d.build_total)
    );
    let b = &p.build;
    let _ = writeln!(s, "\nbuild (budget {}):", gib(b.budget_bytes));
    match (&b.partitioned, &b.refused) {
        (_, Some(e)) => {
            let _ = writeln!(s, "  does not fit: {e}");
        }
        (Some(pp), None) => {
            let _ = writeln!(
                s,
                "  in memory it needs {}: partitioned into {} shards of at most {} points, \
                 peak {}, about {}",
                gib(b.in_memory_bytes),
                pp.shards,
                count(pp.shard_points_max),
                gib(pp.memory_bytes),
                duration(b.partitioned_s.unwrap_or(0.0))
            );
            if let Some(ph) = &b.partitioned_phases_s {
                let _ = writeln!(
                    s,
                    "  (shard graphs {}; k-means, assignment, merge and connect {}; PQ, write \
                     and hot list {})",
                    duration(ph.shard_graphs),
                    duration(ph.kmeans + ph.assignment + ph.merge + ph.connect),
                    duration(ph.rest)
                );
            }
            let _ =
                writeln!(s, "  (in memory, with RAM for it: about {})", duration(b.in_memory_s));
        }
        (None, None) => {
            let _ = writeln!(
                s,
                "  in memory, peak about {}, about {}",
                gib(b.in_memory_bytes),
                duration(b.in_memory_s)
            );
        }
    }
    let q = &p.search;
    let _ = writeln!(
        s,
        "\nsearch at recall@10 {}{}:",
        w.recall,
        if q.extrapolated {
            format!(
                " (extrapolated past {}, the largest size the growth was fitted on)",
                count(q.growth_n_max)
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        s,
        "  grown from {} ({} x {}, measured) to {} x {}",
        q.profile,
        count(q.profile_n),
        q.profile_dim,
        count(w.n),
        w.dim
    );
    let _ = writeln!(
        s,
        "  {:.0} sector reads in {:.0} rounds; CPU {:.0} us, waiting {:.0} us: latency {:.2} ms \
         on an idle box",
        q.reads,
        q.rounds,
        q.cpu_us,
        q.io_us,
        q.latency_us / 1e3
    );
    let _ = writeln!(
        s,
        "  QPS at most {:.0} ({}-bound; disk allows {:.0}, cores {:.0})",
        q.qps, q.bound, q.qps_disk, q.qps_cpu
    );
    if p.pq_below_sweep {
        let _ = writeln!(
            s,
            "  (PQ {} bytes is below the sizes the sweep measured: these reads are its \
             smallest size's, a lower bound)",
            w.pq_bytes
        );
    }
    if q.reads_ln < q.reads * 0.9 {
        let _ = writeln!(
            s,
            "  (reads grown as a power of N, measured; if they grew as ln N: {:.0} reads, \
             disk QPS {:.0})",
            q.reads_ln,
            w.disk_iops / q.reads_ln
        );
    }
    let _ = writeln!(
        s,
        "\nPQ bytes vs RAM and recall at a budget of {:.0} reads a query ({}; sweep {}):",
        p.read_budget,
        if w.qps_target.is_some() {
            "what the disk allows at --qps"
        } else {
            "what the chosen size needs"
        },
        p.pq_sweep.first().map_or("none", |s| s.as_str())
    );
    let _ = writeln!(
        s,
        "  {:>8} {:>11} {:>11} {:>13} {:>14}",
        "PQ bytes", "codes", "RAM total", "reads@recall", "recall@budget"
    );
    for row in &p.pq {
        let _ = writeln!(
            s,
            "  {:>8} {:>11} {:>11} {:>13} {:>14}{}",
            row.pq_bytes,
            gib(row.codes_bytes),
            gib(row.ram_total_bytes),
            match (row.sweep, row.reads) {
                (SweepPosition::Below, _) => "-".into(),
                (_, None) => "not reached".into(),
                (_, Some(x)) => format!("{x:.0}"),
            },
            row.recall_at_budget.map_or("-".into(), |x| format!("{x:.3}")),
            match row.sweep {
                SweepPosition::Below => "  (below the sweep: not measured)",
                SweepPosition::Inside => "",
                SweepPosition::Above => "  (above the sweep: its largest size's values, a bound)",
            }
        );
    }
    match (p.tipping_pq_bytes, p.tipping_ram_bytes) {
        (Some(tp), Some(tr)) => {
            let _ = writeln!(
                s,
                "  tipping point: {}{tp} PQ bytes ({} of RAM in all); with fewer, recall at \
                 the budget falls under {}{}",
                if p.tipping_at_sweep_end { "at most " } else { "" },
                gib(tr),
                w.recall,
                if p.tipping_at_sweep_end { " (fewer were not measured)" } else { "" }
            );
        }
        _ => {
            let _ = writeln!(s, "  no PQ size reaches recall {} within the budget", w.recall);
        }
    }
    let _ = writeln!(
        s,
        "  the box's RAM holds up to {} PQ bytes a point{}",
        p.ram_pq_max,
        p.ram_pq_recall.map(|r| format!(": recall {r:.3} at the budget")).unwrap_or_default()
    );
    let _ = writeln!(s, "\nlimits (the largest N each resource serves, smallest first):");
    for l in &p.limits {
        let _ = writeln!(s, "  {:<13} {:>8}  {}", l.resource, count(l.n_max), l.detail);
    }
    match p.limits.iter().find(|l| w.n > l.n_max) {
        Some(l) => {
            let _ = writeln!(
                s,
                "\none box does NOT serve this workload: {} runs out first, past {} points",
                l.resource,
                count(l.n_max)
            );
        }
        None => {
            let first = &p.limits[0];
            let _ = writeln!(
                s,
                "\none box serves this workload; {} runs out first, past {} points",
                first.resource,
                count(first.n_max)
            );
        }
    }
    let _ = writeln!(s, "calibration: {}", p.calibration);
    s
}
