//! In-memory mode: the whole graph (every full vector and every neighbour
//! list) loaded into RAM once at open, and searched by best-first greedy
//! search, with no sector reads and no PQ. For collections that fit in RAM,
//! where the SSD's round trips are the whole latency of the disk search.
//!
//! [`MemGraph::load`] streams the graph file in blocks of
//! [`LOAD_BLOCK_SECTORS`] sectors (buffered reads, not O_DIRECT: one pass),
//! verifying every record's checksum and neighbour ids as the disk search
//! does; it refuses, before reading anything, a graph whose vectors and
//! lists would not fit the memory the caller allows (named in the error).
//! Vectors sit in one contiguous array in node order, lists in another at a
//! fixed stride of R with their degrees beside them: a node costs
//! `dim x element + 4 R + 2` bytes, plus `dim + 4` with 8-bit steering
//! ([`MemGraph::bytes_for`]).
//!
//! **Steering** ([`MemSteer`]). With `sq8` (the default, for f32 indexes)
//! the load also quantises every vector to 8 bits a dimension, each
//! dimension on its own affine scale (its minimum to its maximum over the
//! index in 255 steps), the codes of a node in one row with the norm of
//! its reconstruction beside them. The search then scores neighbours
//! against the codes, asymmetrically (the query stays f32: a distance is
//! one f32 x u8 dot product plus the row's norm, `dot_f32_u8`), fetching a
//! quarter of the bytes of a full vector; when the pool has converged its
//! L nodes are rescored exactly and the best k returned. A search is
//! memory-latency bound (each neighbour's vector is a cache miss), so the
//! smaller rows are the gain; recall at equal L stays within a few
//! thousandths of exact steering (bench/README.md). With `exact`, or an
//! index of u8 / i8 elements, every distance is exact and the pool's head
//! is the answer.
//!
//! The search ([`search`]) keeps a pool of the best L scored nodes, as the
//! disk search does, but expands one candidate at a time (W = 1: nothing to
//! overlap). Seen nodes are stamped in a per-thread array of 2 bytes a node
//! (no hashing); the neighbours' rows are prefetched before they are scored.

use std::any::Any;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;

use super::{MemSteer, QueryStats, SearchError, SearchHooks, SearchParams, SearchResult};
use crate::distance::{Distance, DistanceElement, Metric, MixedKernel, dot_f32_u8_at, prefetch};
use crate::format::graph::Layout;
use crate::format::{FormatError, SECTOR_BYTES};
use crate::topk::TopK;
use crate::vamana::Candidate;

/// Cache lines of each neighbour's vector prefetched before scoring
/// (the rest stream in as the kernel reads them).
const PREFETCH_LINES: usize = 4;
/// Cache lines of each neighbour's 8-bit row prefetched before scoring.
const PREFETCH_LINES_SQ8: usize = 8;
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
    /// The 8-bit copies that steer the search, if any.
    sq: Option<Sq8>,
}

/// 8-bit scalar-quantised rows of every vector: `code[j] = round((x[j] -
/// lo[j]) / step[j])`, and beside each node's codes (`dim` bytes) one f32:
/// the squared norm of its reconstruction (l2), the inverse norm (cosine),
/// or nothing used (ip).
struct Sq8 {
    lo: Vec<f32>,
    step: Vec<f32>,
    rows: Vec<u8>,
    stride: usize,
    metric: Metric,
    dot: MixedKernel,
}

/// Bytes beside a node's codes in an [`Sq8`] row.
const SQ8_AUX_BYTES: usize = 4;

impl Sq8 {
    /// Quantises the `n x dim` vectors: one pass for each dimension's
    /// range, one to encode (in parallel).
    fn train(vectors: &[f32], dim: usize, metric: Metric) -> Sq8 {
        let mut lo = vec![f32::INFINITY; dim];
        let mut hi = vec![f32::NEG_INFINITY; dim];
        for v in vectors.chunks_exact(dim) {
            for (j, &x) in v.iter().enumerate() {
                lo[j] = lo[j].min(x);
                hi[j] = hi[j].max(x);
            }
        }
        if vectors.is_empty() {
            lo.fill(0.0);
            hi.fill(0.0);
        }
        let step: Vec<f32> = lo.iter().zip(&hi).map(|(l, h)| (h - l) / 255.0).collect();
        let stride = dim + SQ8_AUX_BYTES;
        let mut rows = vec![0u8; vectors.len() / dim.max(1) * stride];
        rows.par_chunks_exact_mut(stride).zip(vectors.par_chunks_exact(dim)).for_each(
            |(row, v)| {
                let mut norm = 0.0f32;
                for j in 0..dim {
                    let c = if step[j] > 0.0 {
                        ((v[j] - lo[j]) / step[j]).round().clamp(0.0, 255.0)
                    } else {
                        0.0
                    };
                    row[j] = c as u8;
                    let x = lo[j] + step[j] * c;
                    norm += x * x;
                }
                let aux = match metric {
                    Metric::L2 => norm,
                    Metric::Cosine if norm > 0.0 => 1.0 / norm.sqrt(),
                    _ => 0.0,
                };
                row[dim..].copy_from_slice(&aux.to_ne_bytes());
            },
        );
        Sq8 {
            lo,
            step,
            rows,
            stride,
            metric,
            dot: dot_f32_u8_at(crate::distance::SimdLevel::detected()),
        }
    }

    fn row(&self, id: u32) -> &[u8] {
        let at = id as usize * self.stride;
        &self.rows[at..at + self.stride]
    }

    /// Prepares `q` (normalised for cosine) for [`Sq8::eval`].
    fn prepare<T: DistanceElement>(&self, q: &[T], out: &mut SqQuery) {
        out.weights.clear();
        out.weights.extend(q.iter().zip(&self.step).map(|(x, s)| x.to_f32() * s));
        out.base = q.iter().zip(&self.lo).map(|(x, l)| x.to_f32() * l).sum();
        out.norm = q.iter().map(|x| x.to_f32() * x.to_f32()).sum();
    }

    /// The distance from the prepared query to node `id`'s reconstruction.
    #[inline]
    fn eval(&self, q: &SqQuery, id: u32) -> f32 {
        let row = self.row(id);
        let (codes, aux) = row.split_at(self.stride - SQ8_AUX_BYTES);
        let aux = f32::from_ne_bytes(aux.try_into().expect("4 bytes"));
        let ip = q.base + (self.dot)(&q.weights, codes);
        match self.metric {
            Metric::L2 => (q.norm + aux - 2.0 * ip).max(0.0),
            Metric::InnerProduct => -ip,
            Metric::Cosine => 1.0 - ip * aux,
        }
    }
}

/// A query prepared for [`Sq8::eval`].
#[derive(Default)]
struct SqQuery {
    weights: Vec<f32>,
    base: f32,
    norm: f32,
}

impl MemGraph {
    /// RAM the in-memory mode takes for a graph of `layout` steered by
    /// `steer`.
    pub(crate) fn bytes_for(layout: &Layout, steer: MemSteer) -> u64 {
        let mut per = u64::from(layout.dim) * u64::from(layout.element_bytes)
            + 4 * u64::from(layout.degree_max)
            + 2;
        if Self::quantises(layout, steer) {
            per += u64::from(layout.dim) + SQ8_AUX_BYTES as u64;
        }
        layout.count.saturating_mul(per)
    }

    /// Whether `steer` makes 8-bit rows for this graph (f32 elements only).
    fn quantises(layout: &Layout, steer: MemSteer) -> bool {
        steer == MemSteer::Sq8 && layout.element_bytes == 4
    }

    /// What steers this graph's search.
    pub(crate) fn steer(&self) -> MemSteer {
        if self.sq.is_some() { MemSteer::Sq8 } else { MemSteer::Exact }
    }

    /// Loads every record of the graph file at `path` (the file `file`),
    /// checked as the disk search checks it, unless it needs more than
    /// `budget` bytes.
    pub(crate) fn load<T: DistanceElement>(
        path: &Path,
        mut file: File,
        layout: &Layout,
        budget: u64,
        steer: MemSteer,
        metric: Metric,
    ) -> Result<MemGraph, SearchError> {
        let need = Self::bytes_for(layout, steer);
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
        let sq = if Self::quantises(layout, steer) {
            (&vectors as &dyn Any).downcast_ref::<Vec<f32>>().map(|v| Sq8::train(v, dim, metric))
        } else {
            None
        };
        Ok(MemGraph { vectors: Box::new(vectors), neighbors, degrees, degree_max: r, dim, sq })
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
    sq_query: SqQuery,
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
/// neighbours (against their 8-bit rows when the graph has them, else
/// exactly), until the best L are expanded. Without an accept hook the
/// answer is the pool's head, rescored exactly first when it was steered
/// by 8-bit rows; with one, the best k accepted of every node scored, each
/// accepted node scored exactly.
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
    let sq = g.sq.as_ref();
    let mut sq_query = std::mem::take(&mut s.sq_query);
    if let Some(sq) = sq {
        sq.prepare(qt, &mut sq_query);
    }
    let exact = |id: u32, stats: &mut QueryStats| {
        stats.exact_distances += 1;
        dist.eval(qt, vector(id))
    };
    // The distance that ranks node `id` in the pool.
    let steer = |id: u32, stats: &mut QueryStats| match sq {
        Some(sq) => {
            stats.pq_distances += 1;
            sq.eval(&sq_query, id)
        }
        None => exact(id, stats),
    };
    // `steer` with the hooks, which see the node's exact distance.
    let plain = hooks.accept.is_none() && hooks.visit.is_none();
    let mut hooked = |id: u32, stats: &mut QueryStats| -> f32 {
        let d = steer(id, stats);
        let mut cached = None;
        let mut exact_d = |stats: &mut QueryStats| match sq {
            None => d,
            Some(_) => *cached.get_or_insert_with(|| exact(id, stats)),
        };
        if let Some(accept) = hooks.accept
            && accept(id)
        {
            best.push(exact_d(stats), id);
        }
        if let Some(visit) = hooks.visit.as_mut() {
            let e = exact_d(stats);
            visit(id, e, &vector(id).iter().map(|x| x.to_f32()).collect::<Vec<f32>>());
        }
        d
    };
    s.mark(medoid);
    let d0 = hooked(medoid, &mut stats);
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
                match sq {
                    Some(sq) => prefetch(sq.row(n), PREFETCH_LINES_SQ8),
                    None => prefetch(vector(n), PREFETCH_LINES),
                }
                s.fresh.push(n);
            }
        }
        let mut next = cursor + 1;
        for i in 0..s.fresh.len() {
            let n = s.fresh[i];
            let d = if plain { steer(n, &mut stats) } else { hooked(n, &mut stats) };
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
    s.sq_query = sq_query;
    let (ids, distances) = if filtered {
        let found = best.into_sorted();
        (found.iter().map(|n| n.id).collect(), found.iter().map(|n| n.distance).collect())
    } else {
        if sq.is_some() {
            // The pool was ranked by 8-bit distances: rescore it exactly.
            for c in s.pool.iter_mut() {
                c.distance = dist.eval(qt, vector(c.id));
            }
            stats.exact_distances += s.pool.len() as u64;
            s.pool.sort_unstable_by(|a, b| a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id)));
        }
        let head = &s.pool[..params.k.min(s.pool.len())];
        (head.iter().map(|c| c.id).collect(), head.iter().map(|c| c.distance).collect())
    };
    stats.cpu_us = started.elapsed().as_micros() as u64;
    Ok(SearchResult { ids, distances, stats })
}

#[cfg(test)]
mod sq8_tests {
    use super::*;

    /// An 8-bit distance is the exact distance to the node's reconstruction
    /// under every metric, and within the quantisation error of the exact
    /// distance to the node itself.
    #[test]
    fn sq8_distances_are_those_of_the_reconstruction() {
        let (n, dim) = (200, 37);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32
        };
        // Dimensions of different ranges and offsets, one of them constant.
        let vectors: Vec<f32> = (0..n * dim)
            .map(|i| if i % dim == 5 { 0.25 } else { (next() - 0.3) * (1 + i % dim) as f32 })
            .collect();
        let query: Vec<f32> = (0..dim).map(|j| (next() - 0.5) * (1 + j) as f32).collect();
        for metric in [Metric::L2, Metric::InnerProduct, Metric::Cosine] {
            // Searches normalise a cosine query; the rows carry their own
            // norm, so the stored vectors need not be unit length.
            let mut q = query.clone();
            if metric == Metric::Cosine {
                crate::distance::normalize(&mut q);
            }
            let sq = Sq8::train(&vectors, dim, metric);
            let mut prepared = SqQuery::default();
            sq.prepare(&q, &mut prepared);
            let dist = Distance::<f32>::new(metric);
            let mut worst = 0.0f32;
            for id in 0..n as u32 {
                let codes = &sq.row(id)[..dim];
                let rebuilt: Vec<f32> =
                    (0..dim).map(|j| sq.lo[j] + sq.step[j] * f32::from(codes[j])).collect();
                let v = &vectors[id as usize * dim..(id as usize + 1) * dim];
                for (j, (&r, &x)) in rebuilt.iter().zip(v).enumerate() {
                    assert!((r - x).abs() <= sq.step[j] * 0.5 + 1e-6, "{metric} node {id} dim {j}");
                }
                let got = sq.eval(&prepared, id);
                let want = dist.eval(&q, &rebuilt);
                assert!(
                    (got - want).abs() <= 1e-3 * want.abs().max(1.0),
                    "{metric}: {got} vs {want}"
                );
                // Relative to the vectors' scale (ip and cosine pass 0).
                let scale = crate::distance::norm_squared(&q) + crate::distance::norm_squared(v);
                worst = worst.max((got - dist.eval(&q, v)).abs() / scale);
            }
            assert!(worst < 0.01, "{metric}: error {worst} of the vectors' scale");
        }
    }
}
