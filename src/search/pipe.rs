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

/// Where an available record is.
#[derive(Clone, Copy, Debug)]
enum Src {
    /// The entry cache.
    Cache,
    /// A reader slot, still holding its read.
    Slot(usize),
    /// A sector the query kept (`Sectors`).
    Kept(u32),
}

/// A record available to expand: from a completed read, the cache, or a
/// kept sector.
#[derive(Clone, Copy, Debug)]
struct Ready {
    id: u32,
    /// PQ distance it was issued with (its pool rank).
    distance: f32,
    src: Src,
    /// Whether it cost a read of its own (for `wasted_reads`).
    read: bool,
}

/// A read in flight: its node, issue distance and sector; whether it was
/// promised a place among the kept sectors.
#[derive(Clone, Copy, Debug, Default)]
struct Flight {
    id: u32,
    distance: f32,
    sector: u64,
    keep: bool,
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
    /// Each slot's read.
    flight: Vec<Flight>,
    landed: Vec<usize>,
    /// Candidates whose sector is in flight for another: (slot, id, distance).
    riders: Vec<(usize, u32, f32)>,
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
        p.flight.clear();
        p.flight.resize(s.reader.slots(), Flight::default());
        p.landed.clear();
        p.riders.clear();
        let kept = &mut s.sectors;
        kept.clear();
        // Sectors are kept when they hold several records.
        let keeping = self.packed_sectors();
        let mut in_flight = 0usize;
        let request =
            |sector: u64| ReadRequest { offset: sector * SECTOR_BYTES as u64, sectors: spr };

        // The entry point's read goes out before the table is filled.
        let start = self.header.medoid;
        let start_slot = if self.cache.contains(start) {
            None
        } else {
            let slot = p.free.pop().expect("a reader has at least one slot");
            let sector = self.layout.sector_of(start);
            s.reader.submit(slot, request(sector))?;
            s.reader.wait(&mut p.landed, false)?;
            in_flight += 1;
            stats.sector_reads += u64::from(spr);
            let keep = keeping && kept.reserve();
            p.flight[slot] = Flight { id: start, distance: 0.0, sector, keep };
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
            Some(slot) => p.flight[slot].distance = d0,
            None => p.ready.push(Ready { id: start, distance: d0, src: Src::Cache, read: false }),
        }

        let mut vec_buf: Vec<T> = vec![T::default(); self.dim()];
        let mut best = TopK::new(params.k);
        let mut deepest_pick = 0usize;
        let (mut landed_in, mut landed_out) = (0u64, 0u64);
        loop {
            let mut progressed = false;
            // 1. Issue one read (or take one record from the cache or a
            // kept sector, or ride on a read in flight for its sector). One
            // a step: issuing up to the width at once measured slower (more
            // wasted reads, picks made before the last expansion's
            // neighbours were scored).
            if in_flight < w
                && !p.free.is_empty()
                && let Some((pos, id, d)) = p.beam.pick()
            {
                deepest_pick = deepest_pick.max(pos);
                progressed = true;
                let sector = self.layout.sector_of(id);
                if self.cache.contains(id) {
                    p.ready.push(Ready { id, distance: d, src: Src::Cache, read: false });
                } else if let Some(k) = keeping.then(|| kept.get(sector)).flatten() {
                    stats.sector_hits += 1;
                    p.ready.push(Ready { id, distance: d, src: Src::Kept(k), read: false });
                } else if let Some(slot) = keeping
                    .then(|| {
                        (0..p.flight.len())
                            .find(|&i| p.flight[i].keep && p.flight[i].sector == sector)
                    })
                    .flatten()
                {
                    stats.sector_hits += 1;
                    p.riders.push((slot, id, d));
                } else {
                    let slot = p.free.pop().expect("checked above");
                    let keep = keeping && kept.reserve();
                    p.flight[slot] = Flight { id, distance: d, sector, keep };
                    s.reader.submit(slot, request(sector))?;
                    in_flight += 1;
                    stats.sector_reads += u64::from(spr);
                }
            }
            // 2. Collect what has landed (the entry point's read may already
            // be in `landed`); block only when nothing else can be done.
            if in_flight > 0 {
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
                    let f = p.flight[slot];
                    // Only reads in flight are marked `keep` (riders look).
                    p.flight[slot].keep = false;
                    if keeping {
                        // The sector's other records into the answer.
                        let data = s.reader.slot(slot);
                        stats.exact_distances += self.rerank_mates(
                            f.sector,
                            data,
                            f.id,
                            qt,
                            dist,
                            &mut vec_buf,
                            &mut best,
                            hooks,
                        )?;
                    }
                    let src = match f.keep {
                        true => {
                            let k = kept.keep(f.sector, s.reader.slot(slot), true);
                            Src::Kept(k.expect("a reserved sector is always kept"))
                        }
                        false => Src::Slot(slot),
                    };
                    if let Src::Kept(k) = src {
                        // The slot is free again; riders take the kept copy.
                        p.free.push(slot);
                        p.riders.retain(|&(rs, id, distance)| {
                            if rs != slot {
                                return true;
                            }
                            p.ready.push(Ready { id, distance, src: Src::Kept(k), read: false });
                            false
                        });
                    }
                    p.ready.push(Ready { id: f.id, distance: f.distance, src, read: true });
                    if f.distance <= worst {
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
            let len = self.layout.record_bytes as usize;
            if keeping && matches!(r.src, Src::Cache) {
                stats.exact_distances +=
                    self.rerank_cached_mates(r.id, kept, qt, dist, &mut vec_buf, &mut best, hooks)?;
            }
            let bytes: &[u8] = match r.src {
                Src::Cache => {
                    stats.cache_hits += 1;
                    self.cache.get(r.id).expect("picked because it is cached")
                }
                Src::Slot(slot) => {
                    let at = self.layout.offset_in_sector(r.id);
                    &s.reader.slot(slot)[at..at + len]
                }
                Src::Kept(k) => kept.record(k, self.layout.offset_in_sector(r.id), len),
            };
            let rec = self.rerank(r.id, bytes, qt, dist, &mut vec_buf, &mut best, hooks)?;
            stats.exact_distances += 1;
            let t_pq = Instant::now();
            times.exact_ns += (t_pq - t_exact).as_nanos();
            if p.beam.holds(r.distance, r.id) {
                stats.pq_distances +=
                    p.beam.score_neighbors(rec.neighbors(), &s.table, &self.codes);
            } else if r.read {
                stats.wasted_reads += 1;
            }
            times.pq_ns += t_pq.elapsed().as_nanos();
            if let Src::Slot(slot) = r.src {
                p.free.push(slot);
            }
        }
        debug_assert_eq!(s.reader.pending(), 0);
        Ok(times.finish(started, best, stats))
    }
}
