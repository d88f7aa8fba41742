//! In-memory mode: the whole graph (every full vector and every neighbour
//! list) loaded into RAM once at open, and searched by best-first greedy
//! search on exact distances, with no sector reads and no PQ. For
//! collections that fit in RAM, where the SSD's round trips are the whole
//! latency of the disk search.
//!
//! [`MemGraph::load`] streams the graph file in blocks of
//! [`LOAD_BLOCK_SECTORS`] sectors (buffered reads, not O_DIRECT: one pass),
//! verifying every record's checksum and neighbour ids as the disk search
//! does; it refuses, before reading anything, a graph whose vectors and
//! lists would not fit the memory the caller allows (named in the error).
//! Vectors sit in one contiguous array in node order, lists in another at a
//! fixed stride of R with their degrees beside them: a node costs
//! `dim x element + 4 R + 2` bytes ([`MemGraph::bytes_for`]).
//!
//! The search ([`search`]) keeps a pool of the best L scored nodes, as the
//! disk search does, but expands one candidate at a time (W = 1: nothing to
//! overlap) and scores every neighbour exactly, so the pool's distances are
//! exact and its head is the answer. Seen nodes are stamped in a per-thread
//! array of 2 bytes a node (no hashing); the neighbours' vectors are
//! prefetched before they are scored.

use std::any::Any;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{QueryStats, SearchError, SearchHooks, SearchParams, SearchResult};
use crate::distance::{Distance, DistanceElement, prefetch};
use crate::format::graph::Layout;
use crate::format::{FormatError, SECTOR_BYTES};
use crate::topk::TopK;
use crate::vamana::Candidate;

/// Cache lines of each neighbour's vector prefetched before scoring
/// (the rest stream in as the kernel reads them).
const PREFETCH_LINES: usize = 4;
/// Sectors read per block while loading.
pub const LOAD_BLOCK_SECTORS: usize = 1024;

/// The graph in RAM.
pub(crate) struct MemGraph {
    /// `Vec<T>` of `count x dim` elements (T is the index's element type).
    vectors: Box<dyn Any + Send + Sync>,
    neighbors: Vec<u32>,
    degrees: Vec<u16>,
    degree_max: usize,
    dim: usize,
}

impl MemGraph {
    /// RAM the in-memory mode takes for a graph of `layout`.
    pub(crate) fn bytes_for(layout: &Layout) -> u64 {
        let per = u64::from(layout.dim) * u64::from(layout.element_bytes)
            + 4 * u64::from(layout.degree_max)
            + 2;
        layout.count.saturating_mul(per)
    }

    /// Loads every record of the graph file at `path` (the file `file`),
    /// checked as the disk search checks it, unless it needs more than
    /// `budget` bytes.
    pub(crate) fn load<T: DistanceElement>(
        path: &Path,
        mut file: File,
        layout: &Layout,
        budget: u64,
    ) -> Result<MemGraph, SearchError> {
        let need = Self::bytes_for(layout);
        if need > budget {
            let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
            return Err(SearchError::Params(format!(
                "the in-memory mode needs {need} bytes ({:.1} MiB) for {} nodes (vectors and \
                 lists) but {budget} bytes ({:.1} MiB) are allowed; search from disk instead, \
                 or raise the memory limit",
                mib(need),
                layout.count,
                mib(budget)
            )));
        }
        let n = usize::try_from(layout.count).map_err(|_| {
            SearchError::Params(format!(
                "{} nodes do not fit this machine's address space",
                layout.count
            ))
        })?;
        let dim = layout.dim as usize;
        let r = layout.degree_max as usize;
        let mut vectors: Vec<T> = vec![T::default(); n * dim];
        let mut neighbors: Vec<u32> = vec![0; n * r];
        let mut degrees: Vec<u16> = vec![0; n];
        // Whole records per block: a block starts on a record's first sector.
        let (records_per_block, block_sectors) = if layout.records_per_sector > 0 {
            (LOAD_BLOCK_SECTORS * layout.records_per_sector as usize, LOAD_BLOCK_SECTORS)
        } else {
            let spr = layout.sectors_per_record as usize;
            let per = (LOAD_BLOCK_SECTORS / spr).max(1);
            (per, per * spr)
        };
        let mut buf = vec![0u8; block_sectors * SECTOR_BYTES];
        let mut header = vec![0u8; SECTOR_BYTES];
        let read_err = |e: std::io::Error| SearchError::Format(FormatError::io(path, "read", e));
        file.read_exact(&mut header).map_err(read_err)?;
        let mut id = 0usize;
        while id < n {
            let m = (n - id).min(records_per_block);
            let sectors = if layout.records_per_sector > 0 {
                m.div_ceil(layout.records_per_sector as usize)
            } else {
                m * layout.sectors_per_record as usize
            };
            let block = &mut buf[..sectors * SECTOR_BYTES];
            file.read_exact(block).map_err(read_err)?;
            for j in 0..m {
                let node = (id + j) as u32;
                let at = if layout.records_per_sector > 0 {
                    (j / layout.records_per_sector as usize) * SECTOR_BYTES
                        + layout.offset_in_sector(node)
                } else {
                    j * layout.sectors_per_record as usize * SECTOR_BYTES
                };
                let bytes = &block[at..at + layout.record_bytes as usize];
                let rec = layout.decode_record(node, bytes, true).map_err(|f| {
                    SearchError::Format(FormatError::corrupt(
                        path,
                        layout.record_offset(node),
                        format!("node {node}: {f}"),
                    ))
                })?;
                let i = id + j;
                rec.vector_into(&mut vectors[i * dim..(i + 1) * dim]);
                let list = &mut neighbors[i * r..(i + 1) * r];
                let mut d = 0;
                for (slot, nb) in list.iter_mut().zip(rec.neighbors()) {
                    *slot = nb;
                    d += 1;
                }
                degrees[i] = d as u16;
            }
            id += m;
        }
        Ok(MemGraph { vectors: Box::new(vectors), neighbors, degrees, degree_max: r, dim })
    }

    fn vectors<T: DistanceElement>(&self) -> &[T] {
        self.vectors
            .downcast_ref::<Vec<T>>()
            .expect("the graph was loaded with the index's element type")
    }

    fn list(&self, id: u32) -> &[u32] {
        let i = id as usize;
        &self.neighbors[i * self.degree_max..i * self.degree_max + self.degrees[i] as usize]
    }

    /// Node `id`'s vector.
    pub(crate) fn vector<T: DistanceElement>(&self, id: u32) -> &[T] {
        let i = id as usize;
        &self.vectors::<T>()[i * self.dim..(i + 1) * self.dim]
    }
}

/// Per-thread scratch of the in-memory search.
#[derive(Default)]
pub(crate) struct MemScratch {
    /// The best L scored nodes by (exact distance, id).
    pool: Vec<Candidate>,
    /// `stamps[id] == epoch`: node `id` was scored in this query (2 bytes a
    /// node per searcher, cleared once every 65,535 queries).
    stamps: Vec<u16>,
    epoch: u16,
    fresh: Vec<u32>,
}

impl MemScratch {
    /// Starts a query over `n` nodes: nothing seen.
    fn begin(&mut self, n: usize) {
        if self.stamps.len() != n {
            self.stamps = vec![0; n];
            self.epoch = 0;
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamps.fill(0);
            self.epoch = 1;
        }
        self.pool.clear();
    }

    /// Marks `id` seen; returns whether it was new.
    #[inline]
    fn mark(&mut self, id: u32) -> bool {
        let slot = &mut self.stamps[id as usize];
        let new = *slot != self.epoch;
        *slot = self.epoch;
        new
    }
}

/// Best-first search of the in-memory graph from `medoid` for the query
/// `qt` (already prepared: normalised for cosine, in the element type):
/// expand the best unexpanded node of the pool of L, score its unseen
/// neighbours exactly, until the best L are expanded. Without an accept
/// hook the answer is the pool's head (it holds the best L of every node
/// scored); with one, the best k accepted of every node scored.
pub(crate) fn search<T: DistanceElement>(
    g: &MemGraph,
    s: &mut MemScratch,
    qt: &[T],
    dist: &Distance<T>,
    medoid: u32,
    params: &SearchParams,
    hooks: &mut SearchHooks<'_>,
) -> Result<SearchResult, SearchError> {
    let started = std::time::Instant::now();
    let mut stats = QueryStats::default();
    let filtered = hooks.accept.is_some();
    let mut best = TopK::new(if filtered { params.k } else { 1 });
    let l = params.list_size;
    s.begin(g.degrees.len());
    let (vectors, dim) = (g.vectors::<T>(), g.dim);
    let vector = |id: u32| &vectors[id as usize * dim..(id as usize + 1) * dim];
    let mut score = |id: u32, stats: &mut QueryStats| -> f32 {
        let v = vector(id);
        let d = dist.eval(qt, v);
        stats.exact_distances += 1;
        if let Some(accept) = hooks.accept
            && accept(id)
        {
            best.push(d, id);
        }
        if let Some(visit) = hooks.visit.as_mut() {
            visit(id, d, &v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>());
        }
        d
    };
    s.mark(medoid);
    let d0 = score(medoid, &mut stats);
    s.pool.push(Candidate { distance: d0, id: medoid, expanded: false });
    // The best unexpanded candidate is at `cursor` or after it.
    let mut cursor = 0;
    while cursor < s.pool.len() {
        s.pool[cursor].expanded = true;
        let id = s.pool[cursor].id;
        stats.rounds += 1;
        s.fresh.clear();
        for &n in g.list(id) {
            if s.mark(n) {
                prefetch(vector(n), PREFETCH_LINES);
                s.fresh.push(n);
            }
        }
        let mut next = cursor + 1;
        for i in 0..s.fresh.len() {
            let n = s.fresh[i];
            let d = score(n, &mut stats);
            if s.pool.len() == l {
                let worst = s.pool[l - 1];
                if (d, n) >= (worst.distance, worst.id) {
                    continue;
                }
            }
            let pos = s.pool.partition_point(|c| (c.distance, c.id) < (d, n));
            s.pool.insert(pos, Candidate { distance: d, id: n, expanded: false });
            s.pool.truncate(l);
            next = next.min(pos);
        }
        cursor = next;
        while cursor < s.pool.len() && s.pool[cursor].expanded {
            cursor += 1;
        }
    }
    let (ids, distances) = if filtered {
        let found = best.into_sorted();
        (found.iter().map(|n| n.id).collect(), found.iter().map(|n| n.distance).collect())
    } else {
        let head = &s.pool[..params.k.min(s.pool.len())];
        (head.iter().map(|c| c.id).collect(), head.iter().map(|c| c.distance).collect())
    };
    stats.cpu_us = started.elapsed().as_micros() as u64;
    Ok(SearchResult { ids, distances, stats })
}
