//! Pipelined best-first search (PipeANN, OSDI'25): the disk search without
//! rounds, and several queries interleaved on one thread.
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
//! A query ends when every candidate of its best L has been expanded and
//! nothing of it is in flight.
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
//!
//! **Interleaving.** One query keeps only a few reads in flight (its pool
//! rarely has W good candidates at once), so with one query a thread the
//! device sits at a shallow queue while the thread waits. The driver
//! ([`Index::pipe_drive`]) runs up to [`INTERLEAVE_MAX`] queries on one
//! thread, each in its own *lane*: its own pool, kept sectors, lookup table
//! and a disjoint share of the reader's slots. Each turn every lane issues,
//! one wait collects what landed for all of them (blocking only when no
//! lane can do anything), and every lane expands one record; a lane whose
//! query ends takes the next query at once. Each query's expansions are
//! those it would make alone (only the timing of its reads changes); its
//! latency is measured from its own start.

use std::ops::Range;
use std::time::Instant;

use super::beam::Beam;
use super::sectors::Sectors;
use super::{Index, QueryStats, QueryTimes, SearchError, SearchHooks, SearchParams, SearchResult};
use crate::distance::{Distance, DistanceElement};
use crate::format::SECTOR_BYTES;
use crate::index::pqspace;
use crate::io::{ReadRequest, SectorReader};
use crate::pq::LookupTable;
use crate::topk::TopK;

/// Reads in flight at the start of a query (PipeANN's initial width).
pub const PIPE_WIDTH_START: usize = 4;
/// Pool position of the first unpicked candidate from which the search
/// counts as converging and the width may grow.
pub const CONVERGE_POSITION: usize = 5;
/// Largest share of reads so far whose candidates ended outside the best L
/// at which the width still grows.
pub const OUT_SHARE_MAX: f64 = 0.1;
/// Most queries one thread interleaves (each lane needs its own slots: the
/// reader's [`super::BEAM_WIDTH_MAX`] are shared out).
pub const INTERLEAVE_MAX: usize = 16;

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

/// One lane's scratch (one query at a time), reused across queries.
#[derive(Default)]
pub(super) struct Lane {
    /// Best L candidates by PQ distance and the nodes seen; a candidate
    /// marked expanded here has been picked (issued, available or expanded).
    beam: Beam,
    ready: Vec<Ready>,
    /// The reader's slots this lane uses.
    slots: Range<usize>,
    /// Of `slots`, those not holding a read in flight or a record not yet
    /// expanded.
    free: Vec<usize>,
    /// Each slot's read (indexed by slot; only `slots` are used).
    flight: Vec<Flight>,
    /// This lane's reads that have landed and are not yet taken in.
    landed: Vec<usize>,
    /// Candidates whose sector is in flight for another: (slot, id, distance).
    riders: Vec<(usize, u32, f32)>,
    /// The sectors the query has read.
    sectors: Sectors,
    table: LookupTable,
    /// The query in PQ space.
    pq_query: Vec<f32>,
    /// The prepared query (normalised for cosine).
    pub(super) query: Vec<f32>,
}

/// One thread's pipelined-search scratch: its lanes.
#[derive(Default)]
pub(super) struct PipeScratch {
    pub(super) lanes: Vec<Lane>,
    /// What one wait collected, before it is handed to the lanes.
    landed: Vec<usize>,
}

/// One query's search in progress on a lane.
struct Run<T> {
    /// The caller's number for the query.
    query: usize,
    started: Instant,
    stats: QueryStats,
    times: QueryTimes,
    qt: Vec<T>,
    vec_buf: Vec<T>,
    best: TopK,
    w: usize,
    w_max: usize,
    /// Reads issued and not yet taken in (in flight, or landed in `landed`).
    in_flight: usize,
    deepest_pick: usize,
    landed_in: u64,
    landed_out: u64,
    /// Whether this turn's issue step picked a candidate.
    progressed: bool,
}

/// Where the driver gets queries: fills the lane's query (prepared) and
/// returns the caller's number for it, or `None` when there are no more.
pub(super) type NextQuery<'a> = dyn FnMut(&mut Vec<f32>) -> Result<Option<usize>, SearchError> + 'a;
/// Where the driver hands each answer, with the caller's number.
pub(super) type QueryDone<'a> = dyn FnMut(usize, SearchResult) + 'a;

impl Index {
    /// Runs pipelined searches on `lanes` lanes of one thread (module doc)
    /// until `next` has no more queries; `done` gets each answer. One lane
    /// is the plain pipelined search. On an error, reads may be left in
    /// flight: the caller discards them.
    #[allow(clippy::too_many_arguments, reason = "the driver's borrowed state")]
    pub(super) fn pipe_drive<T: DistanceElement>(
        &self,
        reader: &mut dyn SectorReader,
        scratch: &mut PipeScratch,
        lanes: usize,
        params: &SearchParams,
        hooks: &mut SearchHooks<'_>,
        next: &mut NextQuery<'_>,
        done: &mut QueryDone<'_>,
    ) -> Result<(), SearchError> {
        let slots = reader.slots();
        let lanes = lanes.clamp(1, INTERLEAVE_MAX.min(slots));
        let per = slots / lanes;
        let PipeScratch { lanes: lane, landed: shared } = scratch;
        while lane.len() < lanes {
            lane.push(Lane::default());
        }
        shared.clear();
        let dist = Distance::<T>::new(self.header.metric);
        let mut runs: Vec<Option<Run<T>>> = (0..lanes).map(|_| None).collect();
        for i in 0..lanes {
            lane[i].slots = i * per..(i + 1) * per;
            runs[i] = self.pipe_start(reader, lane, i, shared, per, params, next)?;
        }
        loop {
            // 1. Every lane issues (at most one pick each).
            let (mut active, mut progressed, mut busy, mut in_flight) = (false, false, false, 0);
            for (run, l) in runs.iter_mut().zip(lane.iter_mut()) {
                let Some(run) = run else { continue };
                active = true;
                run.progressed = self.pipe_issue(reader, l, run)?;
                progressed |= run.progressed;
                in_flight += run.in_flight;
                busy |= !l.ready.is_empty() || !l.landed.is_empty();
            }
            if !active {
                break;
            }
            // 2. One wait collects for every lane; it blocks only when no
            // lane can do anything else.
            if in_flight > 0 {
                let block = !progressed && !busy;
                let t = Instant::now();
                collect(reader, shared, lane, per, block)?;
                if block {
                    let waited = t.elapsed().as_nanos();
                    for run in runs.iter_mut().flatten().filter(|r| r.in_flight > 0) {
                        run.times.io_ns += waited;
                        run.stats.rounds += 1;
                    }
                }
            }
            // 3. Every lane takes in what landed and expands one record; a
            // lane whose query is over hands it back and starts the next.
            for i in 0..lanes {
                let Some(run) = &mut runs[i] else { continue };
                if run.in_flight == 0 && !run.progressed && lane[i].ready.is_empty() {
                    let run = runs[i].take().expect("matched above");
                    done(run.query, run.times.finish(run.started, run.best, run.stats));
                    runs[i] = self.pipe_start(reader, lane, i, shared, per, params, next)?;
                    continue;
                }
                let l = &mut lane[i];
                self.pipe_take_in(reader, l, run, &dist, hooks)?;
                self.pipe_expand(reader, l, run, &dist, hooks)?;
            }
        }
        debug_assert_eq!(reader.pending(), 0);
        Ok(())
    }

    /// Starts lane `i`'s next query, if there is one: the entry point's
    /// read goes out (and to the kernel) before the table is filled.
    #[allow(clippy::too_many_arguments, reason = "the driver's borrowed state")]
    fn pipe_start<T: DistanceElement>(
        &self,
        reader: &mut dyn SectorReader,
        lanes: &mut [Lane],
        i: usize,
        shared: &mut Vec<usize>,
        per: usize,
        params: &SearchParams,
        next: &mut NextQuery<'_>,
    ) -> Result<Option<Run<T>>, SearchError> {
        let Some(query) = next(&mut lanes[i].query)? else { return Ok(None) };
        let started = Instant::now();
        let mut stats = QueryStats::default();
        let mut times = QueryTimes::default();
        let keeping = self.packed_sectors();
        let p = &mut lanes[i];
        let w_max = params.beam_width.min(p.slots.len());
        p.ready.clear();
        p.free.clear();
        p.free.extend(p.slots.clone().rev());
        p.flight.resize(reader.slots(), Flight::default());
        for f in &mut p.flight[p.slots.clone()] {
            *f = Flight::default();
        }
        p.landed.clear();
        p.riders.clear();
        p.sectors.clear();
        let mut in_flight = 0;
        let start = self.header.medoid;
        let start_slot = if self.cache.contains(start) {
            None
        } else {
            let slot = p.free.pop().expect("a lane has at least one slot");
            let sector = self.layout.sector_of(start);
            reader.submit(slot, self.request(sector))?;
            in_flight += 1;
            stats.sector_reads += u64::from(self.layout.sectors_per_record);
            let keep = keeping && p.sectors.reserve();
            p.flight[slot] = Flight { id: start, distance: 0.0, sector, keep };
            collect(reader, shared, lanes, per, false)?;
            Some(slot)
        };
        let p = &mut lanes[i];
        let t_table = Instant::now();
        self.space.query(&p.query, &mut p.pq_query);
        self.codebook.fill_lookup_table(&p.pq_query, pqspace::TABLE_METRIC, &mut p.table);
        times.table_ns = t_table.elapsed().as_nanos();
        let d0 = p.table.distance(self.codes.row(start));
        stats.pq_distances += 1;
        p.beam.start(params.list_size, w_max, start, d0);
        p.beam.pick();
        match start_slot {
            Some(slot) => p.flight[slot].distance = d0,
            None => p.ready.push(Ready { id: start, distance: d0, src: Src::Cache, read: false }),
        }
        Ok(Some(Run {
            query,
            started,
            stats,
            times,
            qt: p.query.iter().map(|&x| T::from_f32(x)).collect(),
            vec_buf: vec![T::default(); self.dim()],
            best: TopK::new(params.k),
            w: PIPE_WIDTH_START.min(w_max),
            w_max,
            in_flight,
            deepest_pick: 0,
            landed_in: 0,
            landed_out: 0,
            progressed: false,
        }))
    }

    /// The read of sector number `sector`.
    fn request(&self, sector: u64) -> ReadRequest {
        ReadRequest {
            offset: sector * SECTOR_BYTES as u64,
            sectors: self.layout.sectors_per_record,
        }
    }

    /// Step 1: picks one candidate when the width allows (a read, or a
    /// record from the cache or a kept sector, or a ride on a read in
    /// flight for its sector). One a step: issuing up to the width at once
    /// measured slower (more wasted reads, picks made before the last
    /// expansion's neighbours were scored). Returns whether it picked.
    fn pipe_issue<T: DistanceElement>(
        &self,
        reader: &mut dyn SectorReader,
        p: &mut Lane,
        run: &mut Run<T>,
    ) -> Result<bool, SearchError> {
        if run.in_flight >= run.w || p.free.is_empty() {
            return Ok(false);
        }
        let Some((pos, id, d)) = p.beam.pick() else { return Ok(false) };
        let keeping = self.packed_sectors();
        run.deepest_pick = run.deepest_pick.max(pos);
        let sector = self.layout.sector_of(id);
        if self.cache.contains(id) {
            p.ready.push(Ready { id, distance: d, src: Src::Cache, read: false });
        } else if let Some(k) = keeping.then(|| p.sectors.get(sector)).flatten() {
            run.stats.sector_hits += 1;
            p.ready.push(Ready { id, distance: d, src: Src::Kept(k), read: false });
        } else if let Some(slot) = keeping
            .then(|| p.slots.clone().find(|&i| p.flight[i].keep && p.flight[i].sector == sector))
            .flatten()
        {
            run.stats.sector_hits += 1;
            p.riders.push((slot, id, d));
        } else {
            let slot = p.free.pop().expect("checked above");
            let keep = keeping && p.sectors.reserve();
            p.flight[slot] = Flight { id, distance: d, sector, keep };
            reader.submit(slot, self.request(sector))?;
            run.in_flight += 1;
            run.stats.sector_reads += u64::from(self.layout.sectors_per_record);
        }
        Ok(true)
    }

    /// Step 2, per lane: takes in the reads that landed (a packed sector's
    /// other records reranked and the sector kept, riders released) and
    /// grows the width while the search converges.
    fn pipe_take_in<T: DistanceElement>(
        &self,
        reader: &mut dyn SectorReader,
        p: &mut Lane,
        run: &mut Run<T>,
        dist: &Distance<T>,
        hooks: &mut SearchHooks<'_>,
    ) -> Result<(), SearchError> {
        if p.landed.is_empty() {
            return Ok(());
        }
        let keeping = self.packed_sectors();
        run.in_flight -= p.landed.len();
        let worst = p.beam.worst();
        for &slot in &p.landed {
            let f = p.flight[slot];
            // Only reads in flight are marked `keep` (riders look).
            p.flight[slot].keep = false;
            if keeping {
                // The sector's other records into the answer.
                let data = reader.slot(slot);
                run.stats.exact_distances += self.rerank_mates(
                    f.sector,
                    data,
                    f.id,
                    &run.qt,
                    dist,
                    &mut run.vec_buf,
                    &mut run.best,
                    hooks,
                )?;
            }
            let src = match f.keep {
                true => {
                    let k = p.sectors.keep(f.sector, reader.slot(slot), true);
                    Src::Kept(k.expect("a reserved sector is always kept"))
                }
                false => Src::Slot(slot),
            };
            if let Src::Kept(k) = src {
                // The slot is free again; riders take the kept copy.
                p.free.push(slot);
                let ready = &mut p.ready;
                p.riders.retain(|&(rs, id, distance)| {
                    if rs != slot {
                        return true;
                    }
                    ready.push(Ready { id, distance, src: Src::Kept(k), read: false });
                    false
                });
            }
            p.ready.push(Ready { id: f.id, distance: f.distance, src, read: true });
            if f.distance <= worst {
                run.landed_in += 1;
            } else {
                run.landed_out += 1;
            }
        }
        let total = (run.landed_in + run.landed_out) as f64;
        if run.deepest_pick >= CONVERGE_POSITION && (run.landed_out as f64) <= OUT_SHARE_MAX * total
        {
            run.w = (run.w + 1).min(run.w_max);
        }
        p.landed.clear();
        Ok(())
    }

    /// Step 3: expands the available record best placed in the pool.
    fn pipe_expand<T: DistanceElement>(
        &self,
        reader: &mut dyn SectorReader,
        p: &mut Lane,
        run: &mut Run<T>,
        dist: &Distance<T>,
        hooks: &mut SearchHooks<'_>,
    ) -> Result<(), SearchError> {
        let Some(i) = p
            .ready
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.distance.total_cmp(&b.1.distance).then(a.1.id.cmp(&b.1.id)))
            .map(|(i, _)| i)
        else {
            return Ok(());
        };
        let r = p.ready.swap_remove(i);
        let t_exact = Instant::now();
        let len = self.layout.record_bytes as usize;
        let stats = &mut run.stats;
        if self.packed_sectors() && matches!(r.src, Src::Cache) {
            stats.exact_distances += self.rerank_cached_mates(
                r.id,
                &mut p.sectors,
                &run.qt,
                dist,
                &mut run.vec_buf,
                &mut run.best,
                hooks,
            )?;
        }
        let bytes: &[u8] = match r.src {
            Src::Cache => {
                stats.cache_hits += 1;
                self.cache.get(r.id).expect("picked because it is cached")
            }
            Src::Slot(slot) => {
                let at = self.layout.offset_in_sector(r.id);
                &reader.slot(slot)[at..at + len]
            }
            Src::Kept(k) => p.sectors.record(k, self.layout.offset_in_sector(r.id), len),
        };
        let rec =
            self.rerank(r.id, bytes, &run.qt, dist, &mut run.vec_buf, &mut run.best, hooks)?;
        stats.exact_distances += 1;
        let t_pq = Instant::now();
        run.times.exact_ns += (t_pq - t_exact).as_nanos();
        if p.beam.holds(r.distance, r.id) {
            stats.pq_distances += p.beam.score_neighbors(rec.neighbors(), &p.table, &self.codes);
        } else if r.read {
            stats.wasted_reads += 1;
        }
        run.times.pq_ns += t_pq.elapsed().as_nanos();
        if let Src::Slot(slot) = r.src {
            p.free.push(slot);
        }
        Ok(())
    }
}

/// Collects what has landed (blocking for at least one read when `block`)
/// and hands each slot to the lane that owns it.
fn collect(
    reader: &mut dyn SectorReader,
    shared: &mut Vec<usize>,
    lanes: &mut [Lane],
    per: usize,
    block: bool,
) -> Result<(), SearchError> {
    reader.wait(shared, block)?;
    for &slot in shared.iter() {
        lanes[slot / per].landed.push(slot);
    }
    shared.clear();
    Ok(())
}
