//! Pipelined best-first search (PipeANN, OSDI'25): the disk search without
//! rounds.
//!
//! The round-based beam search issues W reads, waits for the slowest, and
//! only then expands all W records and picks the next W; the device idles
//! while the CPU works and the CPU idles while the slowest read finishes.
//! Here every step does three small things instead, and blocks only when
//! none of them can be done:
//! 1. issue: while fewer than `w` reads are in flight, read the best
//!    candidate of the pool not yet picked (one a step, so the choice sees
//!    the neighbours scored by the step before); a cached record is
//!    available at once;
//! 2. collect: take every read that has landed (no system call unless a
//!    read was just queued: the completion queue is shared memory);
//! 3. expand one: of the records available, the one best placed in the pool
//!    (PQ distance at issue): its exact distance (the rerank), then its
//!    neighbours scored by PQ into the pool. A record whose candidate has
//!    meanwhile been pushed out of the best L is only reranked, not
//!    expanded (a *wasted* read: the price of speculation).
//!
//! The search ends when every candidate of the best L has been expanded and
//! nothing is in flight.
//!
//! The width adapts as PipeANN's does: early hops walk a near-straight line
//! towards the query, where extra reads in flight are mostly wasted, so `w`
//! starts at [`PIPE_WIDTH_START`] (or the caller's W if smaller). The search
//! is converging once the first unpicked candidate has been seen at pool
//! position [`CONVERGE_POSITION`] or deeper; from then on, after any step
//! where reads landed, `w` grows by one (up to the caller's W) while at
//! most [`OUT_SHARE_MAX`] of all reads so far were issued for candidates
//! that ended outside the best L.
//!
//! The first read (the entry point's record, unless cached) is submitted
//! before the query's PQ lookup table is filled, so the table costs no
//! latency.

use std::time::Instant;

use super::beam::Beam;
use super::{
    Index, QueryStats, QueryTimes, SearchError, SearchHooks, SearchParams, SearchResult, Searcher,
};
use crate::distance::{Distance, DistanceElement};
use crate::format::SECTOR_BYTES;
use crate::index::pqspace;
use crate::io::ReadRequest;
use crate::topk::TopK;

/// Reads in flight at the start of a query (PipeANN's initial width).
pub const PIPE_WIDTH_START: usize = 4;
/// Pool position of the first unpicked candidate from which the search
/// counts as converging and the width may grow.
pub const CONVERGE_POSITION: usize = 5;
/// Largest share of reads so far whose candidates ended outside the best L
/// at which the width still grows.
pub const OUT_SHARE_MAX: f64 = 0.1;

/// A record available to expand: from a completed read or the cache.
#[derive(Clone, Copy, Debug)]
struct Ready {
    id: u32,
    /// PQ distance it was issued with (its pool rank).
    distance: f32,
    /// The reader slot holding it; `None`: in the entry cache.
    slot: Option<usize>,
}

/// One thread's pipelined-search scratch, reused across queries.
#[derive(Default)]
pub(super) struct PipeScratch {
    /// Best L candidates by PQ distance and the nodes seen; a candidate
    /// marked expanded here has been picked (issued, available or expanded).
    beam: Beam,
    ready: Vec<Ready>,
    /// Slots not holding a read in flight or a record not yet expanded.
    free: Vec<usize>,
    /// The node and issue distance of each slot's read.
    slot_node: Vec<(u32, f32)>,
    landed: Vec<usize>,
}

impl Index {
    /// The pipelined search (module doc); the round-based one is
    /// `beam_search`. On an error, reads may be left in flight: the caller
    /// discards them.
    pub(super) fn pipe_search<T: DistanceElement>(
        &self,
        s: &mut Searcher,
        q: &[f32],
        qt: &[T],
        dist: &Distance<T>,
        params: &SearchParams,
        hooks: &mut SearchHooks<'_>,
    ) -> Result<SearchResult, SearchError> {
        let started = Instant::now();
        let mut stats = QueryStats::default();
        let mut times = QueryTimes::default();
        let l = params.list_size;
        let w_max = params.beam_width.min(s.reader.slots());
        let mut w = PIPE_WIDTH_START.min(w_max);
        let spr = self.layout.sectors_per_record;
        let p = &mut s.pipe;
        p.ready.clear();
        p.free.clear();
        p.free.extend((0..s.reader.slots()).rev());
        p.slot_node.clear();
        p.slot_node.resize(s.reader.slots(), (0, 0.0));
        p.landed.clear();
        let mut in_flight = 0usize;
        let request = |id: u32| ReadRequest {
            offset: self.layout.sector_of(id) * SECTOR_BYTES as u64,
            sectors: spr,
        };

        // The entry point's read goes out before the table is filled.
        let start = self.header.medoid;
        let start_slot = if self.cache.contains(start) {
            None
        } else {
            let slot = p.free.pop().expect("a reader has at least one slot");
            s.reader.submit(slot, request(start))?;
            s.reader.wait(&mut p.landed, false)?;
            in_flight += 1;
            stats.sector_reads += u64::from(spr);
            Some(slot)
        };
        let t_table = Instant::now();
        self.space.query(q, &mut s.pq_query);
        self.codebook.fill_lookup_table(&s.pq_query, pqspace::TABLE_METRIC, &mut s.table);
        times.table_ns = t_table.elapsed().as_nanos();
        let d0 = s.table.distance(self.codes.row(start));
        stats.pq_distances += 1;
        p.beam.start(l, w_max, start, d0);
        p.beam.pick();
        match start_slot {
            Some(slot) => p.slot_node[slot] = (start, d0),
            None => p.ready.push(Ready { id: start, distance: d0, slot: None }),
        }

        let mut vec_buf: Vec<T> = vec![T::default(); self.dim()];
        let mut best = TopK::new(params.k);
        let mut deepest_pick = 0usize;
        let (mut landed_in, mut landed_out) = (0u64, 0u64);
        loop {
            let mut progressed = false;
            // 1. Issue one read (or take one record from the cache). One a
            // step: issuing up to the width at once measured slower (more
            // wasted reads, picks made before the last expansion's
            // neighbours were scored).
            if in_flight < w
                && !p.free.is_empty()
                && let Some((pos, id, d)) = p.beam.pick()
            {
                deepest_pick = deepest_pick.max(pos);
                progressed = true;
                if self.cache.contains(id) {
                    p.ready.push(Ready { id, distance: d, slot: None });
                } else {
                    let slot = p.free.pop().expect("checked above");
                    p.slot_node[slot] = (id, d);
                    s.reader.submit(slot, request(id))?;
                    in_flight += 1;
                    stats.sector_reads += u64::from(spr);
                }
            }
            // 2. Collect what has landed (the entry point's read may already
            // be in `landed`); block only when nothing else can be done.
            if in_flight > 0 {
                // (The entry point's read may have landed already.)
                let block = !progressed && p.ready.is_empty() && p.landed.is_empty();
                let t = Instant::now();
                s.reader.wait(&mut p.landed, block)?;
                if block {
                    times.io_ns += t.elapsed().as_nanos();
                    stats.rounds += 1;
                }
            } else if !progressed && p.ready.is_empty() {
                // Nothing to pick, nothing in flight, nothing to expand.
                break;
            }
            if !p.landed.is_empty() {
                in_flight -= p.landed.len();
                let worst = p.beam.worst();
                for &slot in &p.landed {
                    let (id, distance) = p.slot_node[slot];
                    p.ready.push(Ready { id, distance, slot: Some(slot) });
                    if distance <= worst {
                        landed_in += 1;
                    } else {
                        landed_out += 1;
                    }
                }
                let total = (landed_in + landed_out) as f64;
                if deepest_pick >= CONVERGE_POSITION && (landed_out as f64) <= OUT_SHARE_MAX * total
                {
                    w = (w + 1).min(w_max);
                }
                p.landed.clear();
            }
            // 3. Expand the available record best placed in the pool.
            let Some(i) = p
                .ready
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.distance.total_cmp(&b.1.distance).then(a.1.id.cmp(&b.1.id)))
                .map(|(i, _)| i)
            else {
                continue;
            };
            let r = p.ready.swap_remove(i);
            let t_exact = Instant::now();
            let bytes: &[u8] = match r.slot {
                None => {
                    stats.cache_hits += 1;
                    self.cache.get(r.id).expect("picked because it is cached")
                }
                Some(slot) => {
                    let at = self.layout.offset_in_sector(r.id);
                    &s.reader.slot(slot)[at..at + self.layout.record_bytes as usize]
                }
            };
            let rec = self.rerank(r.id, bytes, qt, dist, &mut vec_buf, &mut best, hooks)?;
            stats.exact_distances += 1;
            let t_pq = Instant::now();
            times.exact_ns += (t_pq - t_exact).as_nanos();
            if p.beam.holds(r.distance, r.id) {
                stats.pq_distances +=
                    p.beam.score_neighbors(rec.neighbors(), &s.table, &self.codes);
            } else if r.slot.is_some() {
                stats.wasted_reads += 1;
            }
            times.pq_ns += t_pq.elapsed().as_nanos();
            if let Some(slot) = r.slot {
                p.free.push(slot);
            }
        }
        debug_assert_eq!(s.reader.pending(), 0);
        Ok(times.finish(started, best, stats))
    }
}
