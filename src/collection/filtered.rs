//! Filtered search: the planner and its two paths, and the other readers
//! that take a filter (count, scroll, delete by filter).
//!
//! Per query, over the disk generation:
//! 1. The payload indexes resolve what they can ([`IdMap::resolve`]): the
//!    exact set of matching slots, a superset (some conditions need the
//!    payload), or nothing. A set larger than [`FilterTuning::resolve_cap`]
//!    is not collected (it is "many").
//! 2. The number of matching points is estimated: the set's size when it
//!    is exact, else the share of a seeded random sample (of the set, or of
//!    every slot) whose payload passes, times what was sampled from.
//! 3. The cheaper path by a cost model ([`FilterTuning`]) is taken:
//!    - **exact** ("prefilter"): every candidate's PQ distance (a payload
//!      check first when the set is not exact; every slot's payload when
//!      there is no set), the `L` best by PQ read from disk and reranked;
//!    - **graph**: the beam search walks the graph as usual but returns
//!      only nodes that pass (set membership and/or payload check: a
//!      non-matching node is walked through, never returned), with `L`
//!      widened to `L / selectivity` (at most `LIST_SIZE_MAX`); while it
//!      finds fewer than `k`, `L` doubles; at `LIST_SIZE_MAX` with still
//!      fewer than `k` the exact path runs: the answer is never short of
//!      `min(k, matches)`.
//!
//! The delta (in memory) is scanned: every live point's payload is
//! checked (parsed once) and the matches scored exactly.

use std::cell::{Cell, RefCell};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use super::filter::Filter;
use super::generation::Generation;
use super::ids::ExternalId;
use super::{Collection, CollectionError, Hit, State, check_vector};
use crate::search::{LIST_SIZE_MAX, QueryStats, SearchHooks, SearchParams};

/// Payloads sampled to estimate a filter's selectivity when the indexes
/// cannot count it.
pub const SAMPLE_POINTS: usize = 256;
/// Passing payloads after which sampling stops (the estimate is then
/// within about 25%: enough to choose a path).
pub const SAMPLE_PASSES: u64 = 16;
/// The cap of the first, cheap resolution of a query.
pub const RESOLVE_PROBE: usize = 4096;
/// Payloads sampled when a condition passes the probe's cap.
pub const PROBE_SAMPLE_POINTS: u64 = 48;
/// The fewest slots one condition may collect from an index per query.
pub const RESOLVE_CAP_MIN: usize = 4096;

/// How a filtered query may be run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterMode {
    /// The planner chooses.
    #[default]
    Auto,
    /// The exact path (PQ over the matches, `L` reranked).
    Prefilter,
    /// The filter-aware graph search (widening, exact fallback).
    Graph,
    /// A plain search for the `L` best, then the filter, the first `k`
    /// kept (what a post-filtering store does; for comparison only: it may
    /// return fewer than `k`).
    Postfilter,
    /// Every matching point scored with its full vector (Qdrant's
    /// `params.exact`): slow and exact.
    Exact,
}

/// The planner's cost model, in microseconds (measured on the 2-core box
/// of bench/README.md, "filtered search"), and its limits.
#[derive(Clone, Copy, Debug)]
pub struct FilterTuning {
    /// One candidate from a payload index and its PQ distance.
    pub candidate_us: f64,
    /// One payload read from the store by id, parsed and checked.
    pub payload_check_us: f64,
    /// One payload of a sequential pass over the store, parsed and checked.
    pub payload_scan_us: f64,
    /// One node read from disk in a beam search (W reads in flight).
    pub read_us: f64,
    /// Most slots collected from the indexes for one condition (the
    /// per-query bound is lower: see `disk_filtered`).
    pub resolve_cap: usize,
}

impl Default for FilterTuning {
    fn default() -> Self {
        FilterTuning {
            candidate_us: 0.5,
            payload_check_us: 4.0,
            payload_scan_us: 1.5,
            read_us: 40.0,
            resolve_cap: 1_000_000,
        }
    }
}

/// What the planner did for one query (in the per-query statistics).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FilterStats {
    /// "exact", "graph", "graph+exact" (the graph fell short), "postfilter",
    /// "exact-all" (every match read), or "none" (no disk generation).
    pub plan: &'static str,
    /// Estimated matching points on disk, and how it was estimated
    /// ("index", "index+sample", "sample").
    pub estimate: u64,
    pub estimate_source: &'static str,
    /// Fields the filter tests without an index (their payloads are read).
    pub unindexed: Vec<String>,
    /// Slots the exact path scored by PQ.
    pub candidates: u64,
    /// Payloads read and checked.
    pub payload_checks: u64,
    /// The graph path's final L and how often it doubled.
    pub list_size: usize,
    pub widenings: u32,
    /// Matching points in the deltas.
    pub delta_matches: u64,
}

fn empty_doc() -> Value {
    Value::Object(Default::default())
}

impl Collection {
    /// Whether the disk point in `slot` passes (false for a free or
    /// tombstoned slot).
    fn disk_passes(
        &self,
        st: &State,
        g: &Generation,
        filter: &Filter,
        slot: u32,
    ) -> Result<bool, CollectionError> {
        if st.tombstones.contains(&slot) {
            return Ok(false);
        }
        let Some(id) = g.external_id(slot)? else { return Ok(false) };
        let doc = match self.idmap.payload(&id)? {
            Some(p) => serde_json::from_str(&p).unwrap_or_else(|_| empty_doc()),
            None => empty_doc(),
        };
        Ok(filter.matches(&id, &doc))
    }

    /// The `params.k` nearest live points that pass `filter` (none: every
    /// point), run as `mode` says; with what the disk search and the
    /// planner did.
    pub fn search_filtered(
        &self,
        query: &[f32],
        params: &SearchParams,
        with_payload: bool,
        filter: Option<&Filter>,
        mode: FilterMode,
    ) -> Result<(Vec<Hit>, QueryStats, FilterStats), CollectionError> {
        params.validate()?;
        let q = check_vector(&self.config, query, "query")?;
        let st = self.state.read();
        let mut fs = FilterStats { plan: "none", ..FilterStats::default() };
        let mut stats = QueryStats::default();
        let mut hits: Vec<(f32, ExternalId, Option<String>)> = Vec::new();
        if let Some(g) = &st.generation {
            let found =
                self.disk_filtered(&st, g, &q, params, filter, mode, &mut fs, &mut stats)?;
            for (slot, d) in found {
                if let Some(id) = g.external_id(slot)? {
                    let payload = if with_payload { self.idmap.payload(&id)? } else { None };
                    hits.push((d, id, payload));
                }
            }
        }
        for delta in std::iter::once(&st.active).chain(st.frozen.as_deref()) {
            let found = match (filter, mode) {
                (None, FilterMode::Exact) => delta.scan(&q, params.k, |_| true).0,
                (None, _) => delta.search(&q, params.k, params.list_size),
                (Some(f), _) => {
                    let (found, matched) = delta.scan(&q, params.k, |p| f.matches(&p.id, p.doc()));
                    fs.delta_matches += matched;
                    found
                }
            };
            for (i, d) in found {
                let p = delta.point(i);
                hits.push((d, p.id.clone(), if with_payload { p.payload.clone() } else { None }));
            }
        }
        hits.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        hits.truncate(params.k);
        let out = hits.into_iter().map(|(distance, id, payload)| Hit { id, distance, payload });
        Ok((out.collect(), stats, fs))
    }

    /// The disk generation's part: (slot, distance) best first.
    #[allow(clippy::too_many_arguments)]
    fn disk_filtered(
        &self,
        st: &State,
        g: &Generation,
        q: &[f32],
        params: &SearchParams,
        filter: Option<&Filter>,
        mode: FilterMode,
        fs: &mut FilterStats,
        stats: &mut QueryStats,
    ) -> Result<Vec<(u32, f32)>, CollectionError> {
        let tune = self.opts.filter_tuning;
        let slots = u32::try_from(g.slots()).map_err(|_| {
            CollectionError::Corrupt(format!("a generation of {} slots", g.slots()))
        })?;
        let tomb = &st.tombstones;
        let plain = |params: &SearchParams,
                     accept: &dyn Fn(u32) -> bool|
         -> Result<crate::search::SearchResult, CollectionError> {
            g.with_searcher(|s| {
                let mut hooks = SearchHooks { accept: Some(accept), ..Default::default() };
                Ok(g.index.search_with(s, q, params, &mut hooks)?)
            })
        };
        let pairs = |r: crate::search::SearchResult| -> Vec<(u32, f32)> {
            r.ids.into_iter().zip(r.distances).collect()
        };
        let Some(filter) = filter else {
            if mode == FilterMode::Exact {
                fs.plan = "exact-all";
                let live: Vec<u32> = (0..slots)
                    .filter(|s| !tomb.contains(s))
                    .filter(|&s| g.external_id(s).ok().flatten().is_some())
                    .collect();
                return self.score(g, q, &live, params.k, live.len(), fs, stats);
            }
            let r = plain(params, &|id| !tomb.contains(&id))?;
            *stats = r.stats;
            return Ok(pairs(r));
        };
        if mode == FilterMode::Postfilter {
            fs.plan = "postfilter";
            let check = Checker::default();
            let accept = |id: u32| check.passes(|| self.disk_passes(st, g, filter, id));
            // A post-filter at equal L: the L best of a plain search, then
            // the filter, the first k kept.
            let wide = SearchParams { k: params.list_size, ..*params };
            let r = plain(&wide, &|id| !tomb.contains(&id))?;
            *stats = r.stats;
            let mut out = Vec::new();
            for (id, d) in pairs(r) {
                if out.len() < params.k && accept(id) {
                    out.push((id, d));
                }
            }
            fs.payload_checks = check.checks.get();
            check.result()?;
            return Ok(out);
        }
        // Collecting a set from an index costs about `candidate_us` a slot;
        // past about sqrt(L x N x read_us / candidate_us) slots the graph
        // path is the cheaper one anyway, so larger sets are not collected
        // (sampled instead, and checked by payload).
        let live_slots = (g.slots() - g.free_slots()) as f64;
        let cap = ((params.list_size as f64 * live_slots * tune.read_us / tune.candidate_us).sqrt()
            as usize)
            .clamp(RESOLVE_CAP_MIN, tune.resolve_cap);
        // First with a small cap (collecting costs ~0.3 us a slot, wasted
        // when the cap is passed); when a condition passes it, a sample of
        // payloads says whether the whole filter matches few enough points
        // for the exact path to be worth collecting the full set.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xF17E_u64 ^ u64::from(slots));
        let mut resolved = self.idmap.resolve(filter, slots, cap.min(RESOLVE_PROBE))?;
        if resolved.overflow && cap > RESOLVE_PROBE {
            let (mut taken, mut pass) = (0u64, 0u64);
            while taken < PROBE_SAMPLE_POINTS {
                if self.disk_passes(st, g, filter, rng.random_range(0..slots))? {
                    pass += 1;
                }
                taken += 1;
            }
            fs.payload_checks += taken;
            // Collect when the filter's matches (upper bound of a sample
            // that found few) fit the cap.
            let est = u64::from(slots) * (pass + 2) / taken;
            if est <= cap as u64 {
                resolved = self.idmap.resolve(filter, slots, cap)?;
            }
        }
        fs.unindexed = resolved.unindexed.clone();
        // Estimate the matches.
        // Sample until SAMPLE_PASSES points passed or SAMPLE_POINTS were
        // read: a common filter is estimated from a few dozen payloads.
        let mut sample = |n: u64, pick: &dyn Fn(u32) -> u32| -> Result<u64, CollectionError> {
            let (mut taken, mut pass) = (0u64, 0u64);
            while taken < n.min(SAMPLE_POINTS as u64) && pass < SAMPLE_PASSES {
                let slot = pick(rng.random_range(0..n as u32));
                if self.disk_passes(st, g, filter, slot)? {
                    pass += 1;
                }
                taken += 1;
            }
            fs.payload_checks += taken;
            Ok((n * pass).checked_div(taken).unwrap_or(0))
        };
        let (estimate, source) = match &resolved.set {
            Some(set) if resolved.exact => (set.len(), "index"),
            Some(set) => {
                (sample(set.len(), &|i| set.select(i).expect("in range"))?, "index+sample")
            }
            None => (sample(u64::from(slots), &|i| i)?, "sample"),
        };
        fs.estimate = estimate;
        fs.estimate_source = source;
        let live = live_slots.max(1.0);
        // A sample that found nothing still leaves room for a few matches.
        let selectivity = (estimate.max(1) as f64 / live).min(1.0);
        let check_cost = if resolved.exact { 0.0 } else { tune.payload_check_us };
        let exact_cost = match &resolved.set {
            Some(set) => set.len() as f64 * (tune.candidate_us + check_cost),
            None => u64::from(slots) as f64 * (tune.candidate_us + tune.payload_scan_us),
        } + params.list_size as f64 * tune.read_us;
        let wanted_list = (params.list_size as f64 / selectivity).ceil();
        let graph_list = (wanted_list as usize).clamp(params.list_size, LIST_SIZE_MAX);
        let graph_cost = graph_list as f64 * (tune.read_us + check_cost);
        let use_exact = match mode {
            FilterMode::Prefilter | FilterMode::Exact => true,
            FilterMode::Graph => false,
            // A graph search that would need more than LIST_SIZE_MAX to
            // see L matches loses recall: the exact path then, whatever
            // it costs.
            _ => exact_cost <= graph_cost || wanted_list > LIST_SIZE_MAX as f64,
        };
        let rerank_all = mode == FilterMode::Exact;
        if use_exact {
            return self.exact_path(st, g, q, params, filter, &resolved, rerank_all, fs, stats);
        }
        // The graph path.
        let check = Checker::default();
        let set = resolved.set.as_ref();
        let exact_set = resolved.exact;
        let accept = |id: u32| -> bool {
            if tomb.contains(&id) || set.is_some_and(|s| !s.contains(id)) {
                return false;
            }
            if exact_set {
                return occupied(g, id).unwrap_or(false);
            }
            check.passes(|| self.disk_passes(st, g, filter, id))
        };
        fs.plan = "graph";
        let mut p = SearchParams { list_size: graph_list, ..*params };
        loop {
            let r = plain(&p, &accept)?;
            check.result()?;
            stats.add(&r.stats);
            fs.list_size = p.list_size;
            if r.ids.len() >= params.k || p.list_size >= LIST_SIZE_MAX {
                fs.payload_checks += check.checks.get();
                if r.ids.len() >= params.k {
                    return Ok(pairs(r));
                }
                break;
            }
            fs.widenings += 1;
            p.list_size = (p.list_size * 2).min(LIST_SIZE_MAX);
        }
        // The graph's reachable set at the widest L held fewer than k
        // matches: score them all.
        let found = self.exact_path(st, g, q, params, filter, &resolved, false, fs, stats)?;
        fs.plan = "graph+exact";
        Ok(found)
    }

    /// The exact path: candidates (the set, checked by payload unless
    /// exact; or every slot checked), PQ, the `L` best reranked.
    #[allow(clippy::too_many_arguments)]
    fn exact_path(
        &self,
        st: &State,
        g: &Generation,
        q: &[f32],
        params: &SearchParams,
        filter: &Filter,
        resolved: &super::pindex::Resolved,
        rerank_all: bool,
        fs: &mut FilterStats,
        stats: &mut QueryStats,
    ) -> Result<Vec<(u32, f32)>, CollectionError> {
        fs.plan = if rerank_all { "exact-all" } else { "exact" };
        let mut matches: Vec<u32> = Vec::new();
        let mut check = |slot: u32| -> Result<(), CollectionError> {
            if resolved.exact {
                // An exact set may hold free slots (a must_not complement,
                // an empty filter): they hold no point.
                if !st.tombstones.contains(&slot) && occupied(g, slot)? {
                    matches.push(slot);
                }
            } else {
                fs.payload_checks += 1;
                if self.disk_passes(st, g, filter, slot)? {
                    matches.push(slot);
                }
            }
            Ok(())
        };
        match &resolved.set {
            Some(set) => {
                for slot in set.iter() {
                    check(slot)?;
                }
            }
            None if resolved.exact => {
                for slot in 0..g.slots() as u32 {
                    check(slot)?;
                }
            }
            None => {
                // Every payload, in one sequential pass over the map.
                let mut checked = 0u64;
                self.idmap.scan(|id, slot, payload| {
                    checked += 1;
                    if st.tombstones.contains(&slot) {
                        return Ok(());
                    }
                    let doc = payload
                        .and_then(|p| serde_json::from_slice(p).ok())
                        .unwrap_or_else(empty_doc);
                    if filter.matches(&id, &doc) {
                        matches.push(slot);
                    }
                    Ok(())
                })?;
                fs.payload_checks += checked;
            }
        }
        fs.candidates = matches.len() as u64;
        let rerank = if rerank_all { matches.len() } else { params.list_size.max(params.k) };
        self.score(g, q, &matches, params.k, rerank, fs, stats)
    }

    #[allow(clippy::too_many_arguments)]
    fn score(
        &self,
        g: &Generation,
        q: &[f32],
        slots: &[u32],
        k: usize,
        rerank: usize,
        fs: &mut FilterStats,
        stats: &mut QueryStats,
    ) -> Result<Vec<(u32, f32)>, CollectionError> {
        fs.candidates = slots.len() as u64;
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let r = g.with_searcher(|s| Ok(g.index.search_slots(s, q, slots, k, rerank)?))?;
        stats.add(&r.stats);
        Ok(r.ids.into_iter().zip(r.distances).collect())
    }

    /// Live points passing `filter` (exact: indexes where they answer,
    /// payloads elsewhere, the deltas scanned).
    pub fn count_filtered(&self, filter: &Filter) -> Result<u64, CollectionError> {
        let st = self.state.read();
        let mut n = 0u64;
        if let Some(g) = &st.generation {
            let slots = g.slots() as u32;
            let r = self.idmap.resolve(filter, slots, usize::MAX)?;
            match (&r.set, r.exact) {
                (Some(set), true) => {
                    for s in set.iter() {
                        n += u64::from(!st.tombstones.contains(&s) && occupied(g, s)?);
                    }
                }
                (Some(set), false) => {
                    for s in set.iter() {
                        n += u64::from(self.disk_passes(&st, g, filter, s)?);
                    }
                }
                (None, true) => {
                    for s in 0..slots {
                        n += u64::from(!st.tombstones.contains(&s) && occupied(g, s)?);
                    }
                }
                (None, false) => {
                    self.idmap.scan(|id, slot, payload| {
                        if !st.tombstones.contains(&slot) {
                            let doc = payload
                                .and_then(|p| serde_json::from_slice(p).ok())
                                .unwrap_or_else(empty_doc);
                            n += u64::from(filter.matches(&id, &doc));
                        }
                        Ok(())
                    })?;
                }
            }
        }
        for delta in std::iter::once(&st.active).chain(st.frozen.as_deref()) {
            n += delta
                .live_ids()
                .filter(|&(_, i)| {
                    let p = delta.point(i);
                    filter.matches(&p.id, p.doc())
                })
                .count() as u64;
        }
        Ok(n)
    }

    /// Whether the live point `id` passes `filter`.
    pub fn passes(&self, id: &ExternalId, filter: &Filter) -> Result<bool, CollectionError> {
        Ok(match self.get_with(id, false)? {
            None => false,
            Some(p) => {
                let doc = p
                    .payload
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or_else(empty_doc);
                filter.matches(id, &doc)
            }
        })
    }

    /// Up to `limit` live ids passing `filter`, in id order after `after`
    /// (a scroll page; reads pages of ids and checks each).
    pub fn scroll_filtered(
        &self,
        after: Option<&ExternalId>,
        limit: usize,
        filter: &Filter,
    ) -> Result<Vec<ExternalId>, CollectionError> {
        let mut out = Vec::with_capacity(limit);
        let mut cursor = after.cloned();
        let page = limit.clamp(64, super::SCROLL_LIMIT_MAX);
        while out.len() < limit {
            let ids = self.scroll(cursor.as_ref(), page)?;
            let Some(last) = ids.last() else { break };
            cursor = Some(last.clone());
            for id in ids {
                if self.passes(&id, filter)? {
                    out.push(id);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes every live point passing `filter`, in batches of
    /// `BATCH_POINTS_MAX` (each durable on its own: a crash between two
    /// leaves the rest, and running it again finishes the job). Returns the
    /// last batch's acknowledgement and the points deleted.
    pub fn delete_by_filter(
        self: &std::sync::Arc<Self>,
        filter: &Filter,
    ) -> Result<Option<super::WriteAck>, CollectionError> {
        let mut last: Option<super::WriteAck> = None;
        let mut total = 0usize;
        let mut cursor: Option<ExternalId> = None;
        loop {
            let ids =
                self.scroll_filtered(cursor.as_ref(), super::batch::BATCH_POINTS_MAX, filter)?;
            let Some(end) = ids.last() else { break };
            cursor = Some(end.clone());
            let ack = self.delete(&ids)?;
            total += ack.points;
            last = Some(super::WriteAck { lsn: ack.lsn, points: total });
        }
        Ok(last)
    }
}

/// Payload checks made inside a search's `accept` hook, which cannot
/// return an error: the first error is kept and returned after.
#[derive(Default)]
struct Checker {
    checks: Cell<u64>,
    failed: RefCell<Option<CollectionError>>,
}

impl Checker {
    fn passes(&self, check: impl FnOnce() -> Result<bool, CollectionError>) -> bool {
        self.checks.set(self.checks.get() + 1);
        match check() {
            Ok(b) => b,
            Err(e) => {
                self.failed.borrow_mut().get_or_insert(e);
                false
            }
        }
    }

    fn result(&self) -> Result<(), CollectionError> {
        match self.failed.borrow_mut().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Whether `slot` holds a point (a generation's free slots hold none).
fn occupied(g: &Generation, slot: u32) -> Result<bool, CollectionError> {
    Ok(g.free_slots() == 0 || g.external_id(slot)?.is_some())
}
