//! Disk search: open an index once, search it from many threads.
//!
//! [`Index`] holds what lives in RAM: the PQ codebook and codes, the graph
//! layout and the entry cache; the graph file stays on the SSD and is read
//! through O_DIRECT. Each search thread owns a [`Searcher`] (its sector
//! reader, one io_uring ring, and scratch), so the hot path shares nothing
//! mutable.
//!
//! Beam search, as in DiskANN: the query's PQ lookup table; a candidate pool
//! of at most L ordered by PQ distance; each round takes the W best
//! unvisited candidates, reads their records in one submission (cached ones
//! cost no I/O), scores each record's full vector exactly (the rerank) and
//! its neighbours by PQ. It stops when the best L are all visited and returns
//! the top k by exact distance. Every record read is checksum-verified: a
//! corrupted sector is an error, never a wrong answer.

mod beam;
mod cache;
pub mod hot;
mod memory;
mod pipe;
mod sectors;
use sectors::Sectors;

/// Where a record of a round comes from (the round-based search).
#[derive(Clone, Copy, Debug)]
enum RoundSrc {
    Cache,
    /// A sector kept by this query.
    Kept(u32),
    /// The round's j-th read.
    Read(usize),
}

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use beam::Beam;
use memory::{MemGraph, MemScratch};
use pipe::PipeScratch;

use crate::distance::{Distance, DistanceElement, Metric, normalize};
use crate::element::ElementType;
use crate::format::FormatError;
use crate::format::codes::Codes;
use crate::format::graph::{GraphHeader, Layout};
use crate::index::pqspace::{self, PqSpace};
use crate::index::{GRAPH_FILE, IndexError, IndexFiles, Manifest};
use crate::io::{IoError, ReadRequest, ReaderKind, SectorReader};
use crate::pq::{Codebook, LookupTable};
use crate::topk::TopK;
use crate::vecfile::NORM_SQUARED_MAX;

pub use cache::{CACHE_ENTRY_OVERHEAD_BYTES, CachePolicy, EntryCache};
pub use pipe::{CONVERGE_POSITION, INTERLEAVE_MAX, OUT_SHARE_MAX, PIPE_WIDTH_START};

/// How the disk search schedules its reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// DiskANN's beam search: W reads a round, each round waits for all of
    /// them.
    Rounds,
    /// PipeANN's pipelined search (`pipe`): up to W reads in flight, each
    /// record expanded as it lands, W adapted as the search converges.
    #[default]
    Pipelined,
}

impl SearchMode {
    pub const fn name(self) -> &'static str {
        match self {
            SearchMode::Rounds => "rounds",
            SearchMode::Pipelined => "pipelined",
        }
    }
}

impl std::fmt::Display for SearchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for SearchMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rounds" => Ok(SearchMode::Rounds),
            "pipelined" => Ok(SearchMode::Pipelined),
            other => Err(format!("unknown search mode {other:?} (expected rounds or pipelined)")),
        }
    }
}

/// What steers the in-memory search (see `memory`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemSteer {
    /// Exact distances on the full vectors throughout.
    Exact,
    /// Distances to 8-bit scalar-quantised copies of f32 vectors (a
    /// quarter of the bytes to fetch), the pool reranked exactly at the
    /// end; indexes of u8 or i8 elements are searched exactly.
    #[default]
    Sq8,
}

impl MemSteer {
    pub const fn name(self) -> &'static str {
        match self {
            MemSteer::Exact => "exact",
            MemSteer::Sq8 => "sq8",
        }
    }
}

impl std::fmt::Display for MemSteer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for MemSteer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exact" => Ok(MemSteer::Exact),
            "sq8" => Ok(MemSteer::Sq8),
            other => Err(format!("unknown in-memory steering {other:?} (expected exact or sq8)")),
        }
    }
}

/// Largest beam width W (reads per round).
pub const BEAM_WIDTH_MAX: usize = 64;
/// Largest k.
pub const K_MAX: usize = 1024;
/// Largest search list size L.
pub const LIST_SIZE_MAX: usize = crate::vamana::SEARCH_LIST_MAX;
/// Largest entry cache, in nodes.
pub const CACHE_NODES_MAX: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("invalid query: {0}")]
    Query(String),
    #[error("invalid search parameters: {0}")]
    Params(String),
}

/// How to open an index.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub reader: ReaderKind,
    /// Records kept in RAM, at most (see also `cache_bytes`).
    pub cache_nodes: usize,
    /// RAM the entry cache may use, in bytes (records plus
    /// `CACHE_ENTRY_OVERHEAD_BYTES` each); when set, it bounds `cache_nodes`.
    pub cache_bytes: Option<u64>,
    /// Which nodes the cache holds.
    pub cache_policy: CachePolicy,
    /// Load the whole graph into RAM and search it there (no reads, exact
    /// distances; see `memory`); the entry cache is then not filled.
    pub in_memory: bool,
    /// RAM the in-memory mode may take, in bytes; `None`: what the kernel
    /// reports available less [`IN_MEMORY_HEADROOM`].
    pub in_memory_bytes_max: Option<u64>,
    /// What steers the in-memory search.
    pub in_memory_steer: MemSteer,
    /// How disk searches schedule their reads.
    pub search_mode: SearchMode,
    /// How long, in microseconds, a search blocked on its reads spins on
    /// the completion queue before it sleeps (io_uring; at most
    /// [`SPIN_WAIT_US_MAX`]; 0: sleep at once).
    pub spin_wait_us: u64,
}

/// Default of [`OpenOptions::spin_wait_us`]: a wake-up from a sleep costs a
/// context switch and the scheduler's latency on each of a query's waits
/// (debian-384, 1 thread, L 50: mean latency 789 -> 680 us, medians of 5
/// interleaved runs with 0 and 100 us). A spinning thread holds its core,
/// so a daemon with more search threads than cores may want 0.
pub const SPIN_WAIT_US_DEFAULT: u64 = 100;
/// Largest [`OpenOptions::spin_wait_us`] (1 ms: longer than a disk read).
pub const SPIN_WAIT_US_MAX: u64 = 1_000;

/// Share of the available memory the in-memory mode leaves free when no
/// limit is given.
pub const IN_MEMORY_HEADROOM: f64 = 0.2;

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            reader: ReaderKind::Uring,
            cache_nodes: 0,
            cache_bytes: None,
            cache_policy: CachePolicy::Hot,
            in_memory: false,
            in_memory_bytes_max: None,
            in_memory_steer: MemSteer::default(),
            search_mode: SearchMode::default(),
            spin_wait_us: SPIN_WAIT_US_DEFAULT,
        }
    }
}

impl OpenOptions {
    /// The cache's size in nodes for records of `record_bytes`.
    pub fn cache_nodes_for(&self, record_bytes: u32) -> usize {
        match self.cache_bytes {
            Some(b) => {
                let per = u64::from(record_bytes) + cache::CACHE_ENTRY_OVERHEAD_BYTES;
                let by_bytes = usize::try_from(b / per).unwrap_or(usize::MAX);
                if self.cache_nodes == 0 { by_bytes } else { by_bytes.min(self.cache_nodes) }
            }
            None => self.cache_nodes,
        }
    }
}

/// Per-query knobs.
#[derive(Clone, Copy, Debug)]
pub struct SearchParams {
    pub k: usize,
    pub list_size: usize,
    pub beam_width: usize,
}

impl SearchParams {
    pub fn validate(&self) -> Result<(), SearchError> {
        if self.k == 0 || self.k > K_MAX {
            return Err(SearchError::Params(format!(
                "k = {} is outside 1..={K_MAX} (K_MAX)",
                self.k
            )));
        }
        if self.list_size < self.k || self.list_size > LIST_SIZE_MAX {
            return Err(SearchError::Params(format!(
                "L = {} must be between k = {} and {LIST_SIZE_MAX} (LIST_SIZE_MAX)",
                self.list_size, self.k
            )));
        }
        if self.beam_width == 0 || self.beam_width > BEAM_WIDTH_MAX {
            return Err(SearchError::Params(format!(
                "beam width {} is outside 1..={BEAM_WIDTH_MAX} (BEAM_WIDTH_MAX)",
                self.beam_width
            )));
        }
        Ok(())
    }
}

/// What one query cost.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct QueryStats {
    /// 4 KiB sectors read from the SSD. (Counters are u64: an exact
    /// filtered search reads every match, past 2^32 sectors at 1e9 points.)
    pub sector_reads: u64,
    /// Rounds of the beam search (hops).
    pub rounds: u64,
    /// Records served from the entry cache.
    pub cache_hits: u64,
    /// Full-precision distance evaluations (the rerank).
    pub exact_distances: u64,
    /// Compressed distance evaluations: PQ on disk, 8-bit rows in the
    /// in-memory mode.
    pub pq_distances: u64,
    /// Time waiting on reads (blocked; the pipelined search's rounds are its
    /// waits).
    pub io_us: u64,
    /// Everything else: PQ table, distances, pool upkeep.
    pub cpu_us: u64,
    /// Of `cpu_us`: filling the query's PQ lookup table.
    pub pq_table_us: u64,
    /// Of `cpu_us`: scoring neighbours by PQ and keeping the pool.
    pub pq_us: u64,
    /// Of `cpu_us`: checking and decoding records and their exact
    /// distances (the rerank).
    pub exact_us: u64,
    /// Records read whose candidate had left the best L by the time they
    /// landed: reranked, not expanded (the pipelined search's speculation).
    pub wasted_reads: u64,
    /// Records taken from a sector this query had already read, or was
    /// reading for another record: the reads a packed placement saves.
    pub sector_hits: u64,
}

impl QueryStats {
    /// Adds `b`'s counts and times to these.
    pub fn add(&mut self, b: &QueryStats) {
        self.sector_reads += b.sector_reads;
        self.rounds += b.rounds;
        self.cache_hits += b.cache_hits;
        self.exact_distances += b.exact_distances;
        self.pq_distances += b.pq_distances;
        self.io_us += b.io_us;
        self.cpu_us += b.cpu_us;
        self.pq_table_us += b.pq_table_us;
        self.pq_us += b.pq_us;
        self.exact_us += b.exact_us;
        self.wasted_reads += b.wasted_reads;
        self.sector_hits += b.sector_hits;
    }
}

/// Sees every record a search reads: id, exact distance, vector as f32.
pub type RecordVisitor<'a> = dyn FnMut(u32, f32, &[f32]) + 'a;

/// Hooks into one search (the collection layer's).
#[derive(Default)]
pub struct SearchHooks<'a> {
    /// Whether node `id` may be returned; a refused node is still walked
    /// through (tombstones: FreshDiskANN's DeleteList).
    pub accept: Option<&'a dyn Fn(u32) -> bool>,
    /// Called with every record read: id, exact distance to the query, and
    /// the record's vector as f32 (the merge's insert phase prunes with them).
    pub visit: Option<&'a mut RecordVisitor<'a>>,
    /// This search's mode instead of the index's (the merge asks for rounds:
    /// a primary and its standby must build the same graph from the same
    /// log, so the search must not depend on when reads land).
    pub mode: Option<SearchMode>,
}

/// A query's answer: ids and exact distances (smaller is nearer), best first.
#[derive(Clone, Debug, Default)]
pub struct SearchResult {
    pub ids: Vec<u32>,
    pub distances: Vec<f32>,
    pub stats: QueryStats,
}

/// An open index, shared by every search thread.
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    header: GraphHeader,
    layout: Layout,
    codebook: Codebook,
    codes: Codes,
    graph_path: PathBuf,
    file: Arc<File>,
    direct: bool,
    space: PqSpace,
    reader_kind: ReaderKind,
    fallback_reason: Option<String>,
    cache: EntryCache,
    /// The whole graph in RAM (the in-memory mode).
    mem: Option<MemGraph>,
    search_mode: SearchMode,
    spin_wait: std::time::Duration,
}

impl Index {
    /// Opens the index at `dir`: reads the manifest, the graph header, the PQ
    /// codebook and codes (checksums verified), opens the graph file with
    /// O_DIRECT and fills the entry cache.
    pub fn open(dir: &Path, opts: &OpenOptions) -> Result<Index, SearchError> {
        if opts.cache_nodes > CACHE_NODES_MAX {
            return Err(SearchError::Params(format!(
                "cache of {} nodes exceeds {CACHE_NODES_MAX} (CACHE_NODES_MAX)",
                opts.cache_nodes
            )));
        }
        if opts.spin_wait_us > SPIN_WAIT_US_MAX {
            return Err(SearchError::Params(format!(
                "spin wait of {} us exceeds {SPIN_WAIT_US_MAX} (SPIN_WAIT_US_MAX)",
                opts.spin_wait_us
            )));
        }
        // One function decides which files an index has and checks them
        // against each other: manifest, sizes, hashes of the small files,
        // build id and generation in every header, shapes.
        let loaded = IndexFiles::open(dir)?.load()?;
        let graph_path = loaded.files.path(GRAPH_FILE);
        let header = loaded.header;
        let layout = header.layout();
        let codebook = loaded.codebook;
        let codes = loaded.codes;
        let manifest = loaded.files.manifest;
        let hot = loaded.hot;
        let space = PqSpace::new(header.metric, header.ip_norm_max);
        let (file, direct) = crate::io::open_direct(&graph_path)?;
        let file = Arc::new(file);
        // Probe the reader kind once so every searcher uses the same one and a
        // fallback is reported once.
        let (probe, why) = crate::io::make_reader_auto(
            opts.reader,
            file.clone(),
            graph_path.clone(),
            cache::FILL_BATCH,
            layout.sectors_per_record,
        )?;
        let reader_kind = probe.kind();
        let mut index = Index {
            dir: dir.to_path_buf(),
            manifest,
            header,
            layout,
            codebook,
            codes,
            graph_path,
            file,
            direct,
            space,
            reader_kind,
            fallback_reason: why.map(|e| e.to_string()),
            cache: EntryCache::default(),
            mem: None,
            search_mode: opts.search_mode,
            spin_wait: std::time::Duration::from_micros(opts.spin_wait_us),
        };
        if opts.in_memory {
            let budget = match opts.in_memory_bytes_max {
                Some(b) => b,
                None => {
                    let avail = crate::index::available_memory_bytes().ok_or_else(|| {
                        SearchError::Params(
                            "the in-memory mode needs a memory limit: /proc/meminfo has no \
                             MemAvailable"
                                .to_string(),
                        )
                    })?;
                    (avail as f64 * (1.0 - IN_MEMORY_HEADROOM)) as u64
                }
            };
            let f = File::open(&index.graph_path)
                .map_err(|e| FormatError::io(&index.graph_path, "open", e))?;
            index.mem = Some(crate::with_element!(index.header.element, T =>
                MemGraph::load::<T>(&index.graph_path, f, &index.layout, budget, opts.in_memory_steer, index.header.metric))?);
            return Ok(index);
        }
        // A budget larger than the index is the whole index.
        let mut nodes = opts.cache_nodes_for(index.layout.record_bytes);
        if index.packed_sectors()
            && let Some(b) = opts.cache_bytes
        {
            // Whole sectors: a budget in bytes buys sectors of rps records.
            let sectors = b / (crate::format::SECTOR_BYTES as u64 + CACHE_ENTRY_OVERHEAD_BYTES);
            let by_bytes = usize::try_from(sectors)
                .unwrap_or(usize::MAX)
                .saturating_mul(index.layout.records_per_sector as usize);
            nodes = if opts.cache_nodes == 0 { by_bytes } else { by_bytes.min(opts.cache_nodes) };
        }
        let nodes = nodes.min(index.len() as usize);
        if nodes > CACHE_NODES_MAX {
            return Err(SearchError::Params(format!(
                "a cache of {nodes} nodes exceeds {CACHE_NODES_MAX} (CACHE_NODES_MAX)"
            )));
        }
        index.cache = EntryCache::fill(&index, probe, nodes, opts.cache_policy, &hot)?;
        Ok(index)
    }

    /// Whether searches keep the sectors they read and rerank every record
    /// in them (a packed placement with several records a sector).
    pub(crate) fn packed_sectors(&self) -> bool {
        self.header.placement == crate::format::graph::Placement::Packed
            && self.layout.records_per_sector >= 2
    }

    /// The input row of each node, for an index whose build packed its
    /// placement (node ids are not rows then; its ids file maps them back).
    /// `None` in row order, or when the ids are not all row numbers (a
    /// collection's own ids).
    pub fn rows(&self) -> Result<Option<Vec<u32>>, SearchError> {
        if self.header.placement != crate::format::graph::Placement::Packed {
            return Ok(None);
        }
        let path = self.dir.join(self.manifest.generation_dir()).join(crate::index::IDS_FILE);
        let f = crate::collection::idfile::IdFile::open(&path, self.header.ident, self.len())?;
        let mut rows = Vec::with_capacity(self.len() as usize);
        for id in f.scan() {
            match id? {
                Some(crate::collection::ids::ExternalId::Num(r)) if r <= u64::from(u32::MAX) => {
                    rows.push(r as u32)
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(rows))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn header(&self) -> &GraphHeader {
        &self.header
    }
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    pub fn dim(&self) -> usize {
        self.header.dim as usize
    }
    pub fn len(&self) -> u64 {
        self.header.count
    }
    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }
    pub fn metric(&self) -> Metric {
        self.header.metric
    }
    pub fn element_type(&self) -> ElementType {
        self.header.element
    }
    /// Whether reads bypass the page cache (O_DIRECT).
    pub fn direct_io(&self) -> bool {
        self.direct
    }
    pub fn reader_kind(&self) -> ReaderKind {
        self.reader_kind
    }
    /// Why io_uring was not used, when it was asked for and unavailable.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }
    /// How disk searches schedule their reads.
    pub fn search_mode(&self) -> SearchMode {
        self.search_mode
    }
    /// Whether the whole graph is in RAM (the in-memory mode).
    pub fn in_memory(&self) -> bool {
        self.mem.is_some()
    }
    /// What steers the in-memory search (`None` when searching from disk);
    /// `Exact` for an index of u8 / i8 elements whatever was asked.
    pub fn in_memory_steer(&self) -> Option<MemSteer> {
        self.mem.as_ref().map(|g| g.steer())
    }
    /// RAM of the in-memory graph (0 when searching from disk).
    pub fn in_memory_bytes(&self) -> u64 {
        self.mem.as_ref().map_or(0, |g| MemGraph::bytes_for(&self.layout, g.steer()))
    }

    /// A per-thread searcher with its own reader.
    pub fn searcher(&self) -> Result<Searcher, SearchError> {
        // In memory nothing is read: a pread reader costs no ring setup.
        let kind = if self.mem.is_some() { ReaderKind::Pread } else { self.reader_kind };
        let mut reader = crate::io::make_reader(
            kind,
            self.file.clone(),
            self.graph_path.clone(),
            BEAM_WIDTH_MAX,
            self.layout.sectors_per_record,
        )?;
        reader.set_spin_wait(self.spin_wait);
        Ok(Searcher {
            reader,
            table: self
                .codebook
                .lookup_table(&vec![0.0; self.codebook.dim()], pqspace::TABLE_METRIC),
            pq_query: Vec::new(),
            beam: Beam::default(),
            query: Vec::new(),
            batch: Vec::new(),
            requests: Vec::new(),
            mem: MemScratch::default(),
            pipe: PipeScratch::default(),
            sectors: Sectors::default(),
            round_src: Vec::new(),
        })
    }

    /// Validates a query and prepares it (normalised for cosine).
    fn prepare_query(&self, query: &[f32], out: &mut Vec<f32>) -> Result<(), SearchError> {
        if query.len() != self.dim() {
            return Err(SearchError::Query(format!(
                "dimension {} does not match the index dimension {}",
                query.len(),
                self.dim()
            )));
        }
        let element = self.header.element;
        for (i, &v) in query.iter().enumerate() {
            if let Err(what) = element.check_f32(v) {
                return Err(SearchError::Query(format!("value {i} is {v}: {what}")));
            }
        }
        let norm_sq: f64 = query.iter().map(|&x| f64::from(x).powi(2)).sum();
        if norm_sq > NORM_SQUARED_MAX {
            return Err(SearchError::Query(format!(
                "squared norm {norm_sq:e} is over {NORM_SQUARED_MAX:e} (NORM_SQUARED_MAX), \
                 where squared distances could overflow f32"
            )));
        }
        out.clear();
        out.extend_from_slice(query);
        if self.header.metric == Metric::Cosine {
            normalize(out);
        }
        Ok(())
    }

    /// Searches for the `params.k` nearest neighbours of `query`.
    pub fn search(
        &self,
        s: &mut Searcher,
        query: &[f32],
        params: &SearchParams,
    ) -> Result<SearchResult, SearchError> {
        self.search_with(s, query, params, &mut SearchHooks::default())
    }

    /// [`Self::search`] with hooks: a filter on what may be returned (every
    /// node is still walked through) and a visitor of every record read.
    pub fn search_with(
        &self,
        s: &mut Searcher,
        query: &[f32],
        params: &SearchParams,
        hooks: &mut SearchHooks<'_>,
    ) -> Result<SearchResult, SearchError> {
        params.validate()?;
        let mut q = std::mem::take(&mut s.query);
        self.prepare_query(query, &mut q)?;
        let r = crate::with_element!(self.header.element, T => self.beam_search::<T>(s, &q, params, hooks));
        s.query = q;
        r
    }

    /// Searches a stream of queries on one thread with up to `interleave`
    /// of them in flight at once: `next` gives each query with the
    /// caller's number for it, `done` takes each answer (in the order they
    /// finish). The pipelined disk search interleaves them (`pipe`): the
    /// device sees a deeper queue and the thread waits less, while each
    /// query expands exactly what it would alone; its latency counts from
    /// its own start. Rounds and the in-memory mode, and `interleave` 1,
    /// search them one after the other. A bad query ends the call with its
    /// error.
    pub fn search_interleaved<'q>(
        &self,
        s: &mut Searcher,
        params: &SearchParams,
        interleave: usize,
        next: &mut dyn FnMut() -> Option<(usize, &'q [f32])>,
        done: &mut dyn FnMut(usize, SearchResult),
    ) -> Result<(), SearchError> {
        params.validate()?;
        if interleave == 0 || interleave > pipe::INTERLEAVE_MAX {
            return Err(SearchError::Params(format!(
                "interleave {interleave} is outside 1..={} (INTERLEAVE_MAX)",
                pipe::INTERLEAVE_MAX
            )));
        }
        if self.mem.is_some() || self.search_mode != SearchMode::Pipelined {
            while let Some((i, q)) = next() {
                done(i, self.search(s, q, params)?);
            }
            return Ok(());
        }
        let mut next_prepared = |out: &mut Vec<f32>| match next() {
            None => Ok(None),
            Some((i, q)) => {
                self.prepare_query(q, out)?;
                Ok(Some(i))
            }
        };
        let hooks = &mut SearchHooks::default();
        let r = crate::with_element!(self.header.element, T => self.pipe_drive::<T>(
            &mut *s.reader,
            &mut s.pipe,
            interleave,
            params,
            hooks,
            &mut next_prepared,
            done,
        ));
        if r.is_err() {
            s.reader.discard();
        }
        r
    }

    /// Scores a given set of nodes instead of walking the graph (the
    /// filtered planner's exact path): PQ distances for every node of
    /// `slots`, then the `rerank` best by PQ read from disk (or the cache)
    /// and scored exactly; the best `k` of those. With `rerank >=
    /// slots.len()` every node is read and the answer is exact.
    pub fn search_slots(
        &self,
        s: &mut Searcher,
        query: &[f32],
        slots: &[u32],
        k: usize,
        rerank: usize,
    ) -> Result<SearchResult, SearchError> {
        if k == 0 || k > K_MAX {
            return Err(SearchError::Params(format!("k = {k} is outside 1..={K_MAX} (K_MAX)")));
        }
        let mut q = std::mem::take(&mut s.query);
        self.prepare_query(query, &mut q)?;
        let r = crate::with_element!(self.header.element, T => self.score_slots::<T>(s, &q, slots, k, rerank));
        s.query = q;
        r
    }

    fn score_slots<T: DistanceElement>(
        &self,
        s: &mut Searcher,
        q: &[f32],
        slots: &[u32],
        k: usize,
        rerank: usize,
    ) -> Result<SearchResult, SearchError> {
        let started = Instant::now();
        let mut stats = QueryStats::default();
        let mut times = QueryTimes::default();
        let n = self.len();
        if let Some(&bad) = slots.iter().find(|&&id| u64::from(id) >= n) {
            return Err(SearchError::Params(format!(
                "node {bad} is outside the index ({n} nodes)"
            )));
        }
        let mut chosen: Vec<u32> = if rerank >= slots.len() {
            slots.to_vec()
        } else {
            self.space.query(q, &mut s.pq_query);
            self.codebook.fill_lookup_table(&s.pq_query, pqspace::TABLE_METRIC, &mut s.table);
            let mut scored: Vec<(f32, u32)> =
                slots.iter().map(|&id| (s.table.distance(self.codes.row(id)), id)).collect();
            stats.pq_distances += scored.len() as u64;
            if rerank > 0 {
                scored.select_nth_unstable_by(rerank - 1, |a, b| a.0.total_cmp(&b.0));
            }
            scored.truncate(rerank);
            scored.into_iter().map(|(_, id)| id).collect()
        };
        // Sector order: neighbouring reads, and a stable answer.
        chosen.sort_unstable();
        let qt: Vec<T> = q.iter().map(|&x| T::from_f32(x)).collect();
        let dist = Distance::<T>::new(self.header.metric);
        let mut vec_buf: Vec<T> = vec![T::default(); self.dim()];
        let mut best = TopK::new(k);
        for chunk in chosen.chunks(BEAM_WIDTH_MAX) {
            stats.rounds += 1;
            if let Some(g) = &self.mem {
                for &id in chunk {
                    best.push(dist.eval(&qt, g.vector::<T>(id)), id);
                    stats.exact_distances += 1;
                }
                continue;
            }
            s.requests.clear();
            for &id in chunk {
                if !self.cache.contains(id) {
                    s.requests.push(ReadRequest {
                        offset: self.layout.sector_of(id) * crate::format::SECTOR_BYTES as u64,
                        sectors: self.layout.sectors_per_record,
                    });
                }
            }
            if !s.requests.is_empty() {
                let t = Instant::now();
                s.reader.read(&s.requests)?;
                times.io_ns += t.elapsed().as_nanos();
                stats.sector_reads +=
                    s.requests.len() as u64 * u64::from(self.layout.sectors_per_record);
            }
            let mut slot = 0;
            for &id in chunk {
                let bytes: &[u8] = match self.cache.get(id) {
                    Some(b) => {
                        stats.cache_hits += 1;
                        b
                    }
                    None => {
                        let data = s.reader.data(slot);
                        slot += 1;
                        let at = self.layout.offset_in_sector(id);
                        &data[at..at + self.layout.record_bytes as usize]
                    }
                };
                let no_hooks = &mut SearchHooks::default();
                self.rerank(id, bytes, &qt, &dist, &mut vec_buf, &mut best, no_hooks)?;
                stats.exact_distances += 1;
            }
        }
        Ok(times.finish(started, best, stats))
    }

    /// The codes of every node (the merge scores and decodes with them).
    pub fn codes(&self) -> &Codes {
        &self.codes
    }

    /// The PQ codebook.
    pub fn codebook(&self) -> &Codebook {
        &self.codebook
    }

    /// The PQ space (how vectors map into the codebook's space).
    pub fn pq_space(&self) -> PqSpace {
        self.space
    }

    fn record_error(&self, id: u32, fault: crate::format::graph::RecordFault) -> SearchError {
        FormatError::corrupt(
            &self.graph_path,
            self.layout.record_offset(id),
            format!("node {id} (sector {}): {fault}", self.layout.sector_of(id)),
        )
        .into()
    }

    fn beam_search<T: DistanceElement>(
        &self,
        s: &mut Searcher,
        q: &[f32],
        params: &SearchParams,
        hooks: &mut SearchHooks<'_>,
    ) -> Result<SearchResult, SearchError> {
        let started = Instant::now();
        let qt: Vec<T> = q.iter().map(|&x| T::from_f32(x)).collect();
        let dist = Distance::<T>::new(self.header.metric);
        if let Some(g) = &self.mem {
            return memory::search(g, &mut s.mem, &qt, &dist, self.header.medoid, params, hooks);
        }
        if hooks.mode.unwrap_or(self.search_mode) == SearchMode::Pipelined {
            // One lane: the query alone on this thread.
            let mut given = false;
            let mut next = |out: &mut Vec<f32>| {
                if std::mem::replace(&mut given, true) {
                    return Ok(None);
                }
                out.clear();
                out.extend_from_slice(q);
                Ok(Some(0))
            };
            let mut answer = None;
            let mut done = |_: usize, r: SearchResult| answer = Some(r);
            let r = self.pipe_drive::<T>(
                &mut *s.reader,
                &mut s.pipe,
                1,
                params,
                hooks,
                &mut next,
                &mut done,
            );
            if let Err(e) = r {
                // Every read still in flight is waited for and dropped, so
                // the searcher stays usable.
                s.reader.discard();
                return Err(e);
            }
            return Ok(answer.expect("the one query was answered"));
        }
        let mut stats = QueryStats::default();
        let mut times = QueryTimes::default();
        let t_table = Instant::now();
        self.space.query(q, &mut s.pq_query);
        self.codebook.fill_lookup_table(&s.pq_query, pqspace::TABLE_METRIC, &mut s.table);
        times.table_ns = t_table.elapsed().as_nanos();
        let mut vec_buf: Vec<T> = vec![T::default(); self.dim()];
        let mut best = TopK::new(params.k);

        let start = self.header.medoid;
        let d0 = s.table.distance(self.codes.row(start));
        s.beam.start(params.list_size, params.beam_width, start, d0);
        stats.pq_distances += 1;

        let keeping = self.packed_sectors();
        s.sectors.clear();
        loop {
            // The W best unvisited candidates among the best L.
            s.beam.next_batch(&mut s.batch);
            if s.batch.is_empty() {
                break;
            }
            stats.rounds += 1;
            // One submission for every record of the round not cached, not
            // in a sector kept from an earlier round and not in a sector
            // another record of this round reads.
            s.requests.clear();
            s.round_src.clear();
            for &id in &s.batch {
                let sector = self.layout.sector_of(id);
                let offset = sector * crate::format::SECTOR_BYTES as u64;
                let src = if self.cache.contains(id) {
                    RoundSrc::Cache
                } else if let Some(k) = keeping.then(|| s.sectors.get(sector)).flatten() {
                    stats.sector_hits += 1;
                    RoundSrc::Kept(k)
                } else if let Some(j) =
                    keeping.then(|| s.requests.iter().position(|r| r.offset == offset)).flatten()
                {
                    stats.sector_hits += 1;
                    RoundSrc::Read(j)
                } else {
                    s.requests
                        .push(ReadRequest { offset, sectors: self.layout.sectors_per_record });
                    RoundSrc::Read(s.requests.len() - 1)
                };
                s.round_src.push(src);
            }
            if !s.requests.is_empty() {
                let t = Instant::now();
                s.reader.read(&s.requests)?;
                times.io_ns += t.elapsed().as_nanos();
                stats.sector_reads +=
                    s.requests.len() as u64 * u64::from(self.layout.sectors_per_record);
            }
            if keeping {
                // Kept for later rounds (and, from here, for this one).
                for (j, r) in s.requests.iter().enumerate() {
                    let sector = r.offset / crate::format::SECTOR_BYTES as u64;
                    // The read's other records into the answer (its own is
                    // reranked below, with its expansion).
                    let own =
                        s.round_src.iter().position(|x| matches!(*x, RoundSrc::Read(y) if y == j));
                    let read_id = s.batch[own.expect("every read is some record's")];
                    stats.exact_distances += self.rerank_mates(
                        sector,
                        s.reader.data(j),
                        read_id,
                        &qt,
                        &dist,
                        &mut vec_buf,
                        &mut best,
                        hooks,
                    )?;
                    if let Some(k) = s.sectors.keep(sector, s.reader.data(j), false) {
                        for src in s.round_src.iter_mut() {
                            if matches!(*src, RoundSrc::Read(x) if x == j) {
                                *src = RoundSrc::Kept(k);
                            }
                        }
                    }
                }
            }
            let len = self.layout.record_bytes as usize;
            for bi in 0..s.batch.len() {
                let t_exact = Instant::now();
                let id = s.batch[bi];
                let at = self.layout.offset_in_sector(id);
                if keeping && matches!(s.round_src[bi], RoundSrc::Cache) {
                    stats.exact_distances += self.rerank_cached_mates(
                        id,
                        &mut s.sectors,
                        &qt,
                        &dist,
                        &mut vec_buf,
                        &mut best,
                        hooks,
                    )?;
                }
                let bytes: &[u8] = match s.round_src[bi] {
                    RoundSrc::Cache => {
                        stats.cache_hits += 1;
                        self.cache.get(id).expect("chosen because it is cached")
                    }
                    RoundSrc::Kept(k) => s.sectors.record(k, at, len),
                    RoundSrc::Read(j) => &s.reader.data(j)[at..at + len],
                };
                let rec = self.rerank(id, bytes, &qt, &dist, &mut vec_buf, &mut best, hooks)?;
                stats.exact_distances += 1;
                let t_pq = Instant::now();
                times.exact_ns += (t_pq - t_exact).as_nanos();
                stats.pq_distances +=
                    s.beam.score_neighbors(rec.neighbors(), &s.table, &self.codes);
                times.pq_ns += t_pq.elapsed().as_nanos();
            }
        }
        Ok(times.finish(started, best, stats))
    }

    /// For a record taken from the cache: the other records of its cached
    /// sector, reranked the first time this query meets that sector (as a
    /// read sector's are when it lands). Returns how many were scored.
    #[allow(clippy::too_many_arguments, reason = "one call per cached record, all borrowed state")]
    fn rerank_cached_mates<T: DistanceElement>(
        &self,
        id: u32,
        kept: &mut Sectors,
        qt: &[T],
        dist: &Distance<T>,
        vec_buf: &mut [T],
        best: &mut TopK,
        hooks: &SearchHooks<'_>,
    ) -> Result<u64, SearchError> {
        match self.cache.sector(id) {
            Some((sector, data)) if kept.first_cached(sector) => {
                self.rerank_mates(sector, data, id, qt, dist, vec_buf, best, hooks)
            }
            _ => Ok(0),
        }
    }

    /// Reranks the records of sector `sector` (its bytes `data`) other than
    /// `read_id`'s: with a packed placement they are the read node's graph
    /// neighbours, so near the query too; each is checked and scored
    /// exactly into `best` when the accept hook takes it (the visit hook is
    /// not called: it sees expansions only). Returns how many were scored.
    #[allow(clippy::too_many_arguments, reason = "one call per read, all borrowed state")]
    fn rerank_mates<T: DistanceElement>(
        &self,
        sector: u64,
        data: &[u8],
        read_id: u32,
        qt: &[T],
        dist: &Distance<T>,
        vec_buf: &mut [T],
        best: &mut TopK,
        hooks: &SearchHooks<'_>,
    ) -> Result<u64, SearchError> {
        let rps = u64::from(self.layout.records_per_sector);
        let len = self.layout.record_bytes as usize;
        let first = (sector - 1) * rps;
        let mut scored = 0;
        for j in 0..rps {
            let id = first + j;
            if id >= self.len() {
                break;
            }
            let id = id as u32;
            if id == read_id {
                continue;
            }
            let at = j as usize * len;
            let rec = self
                .layout
                .decode_record(id, &data[at..at + len], true)
                .map_err(|f| self.record_error(id, f))?;
            // A record without edges is skipped: a collection's free slot
            // (zero vector, no edges) must never be returned, and a live
            // node without edges is still found by expansion as before.
            if rec.degree() == 0 {
                continue;
            }
            rec.vector_into(vec_buf);
            let d = dist.eval(qt, vec_buf);
            if hooks.accept.is_none_or(|accept| accept(id)) {
                best.push_unique(d, id);
            }
            scored += 1;
        }
        Ok(scored)
    }

    /// Checks node `id`'s record in `bytes` and reranks it: its exact
    /// distance into `best` when the accept hook takes it, then the visit
    /// hook. Returns the record for its neighbours.
    #[allow(clippy::too_many_arguments, reason = "one call per search loop, all borrowed state")]
    fn rerank<'b, T: DistanceElement>(
        &self,
        id: u32,
        bytes: &'b [u8],
        qt: &[T],
        dist: &Distance<T>,
        vec_buf: &mut [T],
        best: &mut TopK,
        hooks: &mut SearchHooks<'_>,
    ) -> Result<crate::format::graph::RecordView<'b>, SearchError> {
        let rec = self
            .layout
            // check_graph: a neighbour id >= N would index past the codes;
            // the record decoder already knows how to refuse it.
            .decode_record(id, bytes, true)
            .map_err(|f| self.record_error(id, f))?;
        rec.vector_into(vec_buf);
        let d = dist.eval(qt, vec_buf);
        if hooks.accept.is_none_or(|accept| accept(id)) {
            if self.packed_sectors() {
                // A record reranked with its sector may be expanded later.
                best.push_unique(d, id);
            } else {
                best.push(d, id);
            }
        }
        if let Some(visit) = hooks.visit.as_mut() {
            visit(id, d, &vec_buf.iter().map(|x| x.to_f32()).collect::<Vec<f32>>());
        }
        Ok(rec)
    }
}

/// Where one query's time went, in nanoseconds (the disk searches').
#[derive(Default)]
struct QueryTimes {
    io_ns: u128,
    table_ns: u128,
    pq_ns: u128,
    exact_ns: u128,
}

impl QueryTimes {
    /// The answer: `best` in order, with `stats` completed by these times
    /// (the CPU time is the rest of the query since `started`).
    fn finish(&self, started: Instant, best: TopK, mut stats: QueryStats) -> SearchResult {
        let us = |ns: u128| (ns / 1000) as u64;
        stats.io_us = us(self.io_ns);
        stats.cpu_us = (started.elapsed().as_micros() as u64).saturating_sub(stats.io_us);
        stats.pq_table_us = us(self.table_ns);
        stats.pq_us = us(self.pq_ns);
        stats.exact_us = us(self.exact_ns);
        let found = best.into_sorted();
        SearchResult {
            ids: found.iter().map(|n| n.id).collect(),
            distances: found.iter().map(|n| n.distance).collect(),
            stats,
        }
    }
}

/// Per-thread search state: the reader (one ring) and reusable scratch.
pub struct Searcher {
    reader: Box<dyn SectorReader>,
    table: LookupTable,
    /// The query in PQ space (augmented for inner product).
    pq_query: Vec<f32>,
    beam: Beam,
    query: Vec<f32>,
    batch: Vec<u32>,
    requests: Vec<ReadRequest>,
    mem: MemScratch,
    pipe: PipeScratch,
    /// The sectors the current query has read (disk searches).
    sectors: Sectors,
    /// Where each record of the current round comes from.
    round_src: Vec<RoundSrc>,
}

impl Searcher {
    pub fn reader_kind(&self) -> ReaderKind {
        self.reader.kind()
    }
}

#[allow(dead_code)]
fn _assert_sync() {
    fn is_sync<T: Sync + Send>() {}
    is_sync::<Index>();
}

#[cfg(test)]
mod tests;
