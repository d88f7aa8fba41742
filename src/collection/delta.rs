//! The delta index: points written since the last merge, in an in-memory
//! Vamana graph with their full vectors (FreshDiskANN's TempIndex).
//! Searches see a point as soon as its write is acknowledged. A point is
//! never removed from the graph: a delete or a replacing upsert marks it
//! deleted (still walked through, never returned), and the merge that
//! takes the delta drops it. Only the collection's writer inserts: it
//! plans an insert (the greedy search and the prunes, the costly part)
//! under the collection's read lock and commits the planned edges under
//! the write lock, so searches never wait for a batch's graph work; a frozen delta (being merged) still takes delete marks
//! from `&self`, so the marks are atomic.
//!
//! The graph is built in L2 over the prepared vectors (normalised for
//! cosine), where RobustPrune's alpha rule has its meaning; queries are
//! scored with the collection's metric. Memory is counted per point
//! ([`Delta::bytes`]) against the collection's `delta_bytes_max`.

use std::sync::atomic::{AtomicBool, Ordering};

use rustc_hash::{FxHashMap, FxHashSet};

use super::ids::ExternalId;
use crate::distance::{Distance, Metric};
use crate::vamana::{Candidate, PruneRule, PruneScratch, insert_candidate, robust_prune_by};

/// Bookkeeping bytes per point besides its vector and edges (id, payload
/// pointer, flags, hash map entry), used in the memory estimate.
pub const POINT_OVERHEAD_BYTES: usize = 96;

/// Points whose inserts are planned in parallel at a time: enough to keep
/// a few cores busy, few enough that a group's points missing each other
/// when planned costs the graph little.
pub const PLAN_GROUP_POINTS: usize = 8;

/// One point of the delta.
#[derive(Debug)]
pub struct DeltaPoint {
    pub id: ExternalId,
    pub payload: Option<String>,
    deleted: AtomicBool,
    /// The payload parsed, on the first filter that reads it.
    doc: std::sync::OnceLock<serde_json::Value>,
}

impl DeltaPoint {
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// The payload as JSON (`{}` when none), parsed once.
    pub fn doc(&self) -> &serde_json::Value {
        self.doc.get_or_init(|| {
            self.payload
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_else(|| serde_json::Value::Object(Default::default()))
        })
    }
}

/// How the delta's graph is built and searched.
#[derive(Clone, Copy, Debug)]
pub struct DeltaParams {
    pub dim: usize,
    pub metric: Metric,
    pub degree_max: usize,
    pub list_size: usize,
    pub alpha: f32,
}

/// The in-memory delta index.
pub struct Delta {
    params: DeltaParams,
    /// Prepared vectors (cosine: normalised), `dim` per point.
    vectors: Vec<f32>,
    adjacency: Vec<Vec<u32>>,
    points: Vec<DeltaPoint>,
    /// Live points by external id.
    by_id: FxHashMap<ExternalId, u32>,
    live: usize,
    bytes: usize,
    l2: Distance<f32>,
    query_distance: Distance<f32>,
}

/// An insert's edges, computed before the graph is changed
/// ([`Delta::plan_insert`]).
pub struct InsertPlan {
    /// The delta id the point will get.
    new: u32,
    out: Vec<u32>,
    /// Out-neighbours' new lists (with the back edge, re-pruned if full).
    back: Vec<(u32, Vec<u32>)>,
}

impl Delta {
    pub fn new(params: DeltaParams) -> Delta {
        // Cosine vectors are normalised: 1 - dot is the cosine distance.
        let query_metric = match params.metric {
            Metric::Cosine => Metric::InnerProduct,
            m => m,
        };
        Delta {
            params,
            vectors: Vec::new(),
            adjacency: Vec::new(),
            points: Vec::new(),
            by_id: FxHashMap::default(),
            live: 0,
            bytes: 0,
            l2: Distance::new(Metric::L2),
            query_distance: Distance::new(query_metric),
        }
    }

    pub fn params(&self) -> &DeltaParams {
        &self.params
    }

    /// Points ever inserted (live or deleted).
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Points not deleted.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Estimated memory of the delta.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Estimated memory one point of `payload_bytes` adds.
    pub fn point_bytes(params: &DeltaParams, payload_bytes: usize) -> usize {
        // Edges: R out, plus back edges up to R * SLACK before a re-prune.
        // The payload counts twice: its text and, once a filter read it,
        // its parsed form.
        let edges = (params.degree_max as f32 * crate::vamana::SLACK) as usize;
        params.dim * 4 + edges * 4 + 2 * payload_bytes + POINT_OVERHEAD_BYTES
    }

    pub fn point(&self, i: u32) -> &DeltaPoint {
        &self.points[i as usize]
    }

    pub fn vector(&self, i: u32) -> &[f32] {
        let d = self.params.dim;
        &self.vectors[i as usize * d..(i as usize + 1) * d]
    }

    pub fn neighbors(&self, i: u32) -> &[u32] {
        &self.adjacency[i as usize]
    }

    /// The live point of `id`.
    pub fn find(&self, id: &ExternalId) -> Option<u32> {
        self.by_id.get(id).copied().filter(|&i| !self.points[i as usize].is_deleted())
    }

    /// Live points' ids (unordered).
    pub fn live_ids(&self) -> impl Iterator<Item = (&ExternalId, u32)> {
        self.by_id
            .iter()
            .map(|(e, &i)| (e, i))
            .filter(|&(_, i)| !self.points[i as usize].is_deleted())
    }

    /// Marks the live point of `id` deleted; returns whether there was one.
    /// Works on a frozen delta too (`&self`): its id map keeps the entry,
    /// and [`Self::find`] checks the mark.
    pub fn mark_deleted(&self, id: &ExternalId) -> bool {
        match self.by_id.get(id) {
            Some(&i) => !self.points[i as usize].deleted.swap(true, Ordering::AcqRel),
            None => false,
        }
    }

    /// Deletes the live point of `id` from a delta that is not frozen.
    pub fn delete(&mut self, id: &ExternalId) -> bool {
        if self.mark_deleted(id) {
            self.by_id.remove(id);
            self.live -= 1;
            true
        } else {
            false
        }
    }

    /// Inserts a point (the caller has checked and prepared the vector and
    /// removed any live point of the same id). Returns its delta id.
    pub fn insert(&mut self, id: ExternalId, vector: &[f32], payload: Option<String>) -> u32 {
        let plan = self.plan_insert(vector);
        self.commit_insert(id, vector, payload, plan)
    }

    /// The search and pruning of an insert, from `&self`: the collection
    /// plans under its read lock, so searches run beside it, and takes the
    /// write lock only for [`Self::commit_insert`]. Nothing may insert in
    /// between (the collection's applies are sequenced); a stale plan is a
    /// bug and panics at commit.
    pub fn plan_insert(&self, vector: &[f32]) -> InsertPlan {
        assert_eq!(vector.len(), self.params.dim, "delta vector of the collection's dimension");
        let new = u32::try_from(self.points.len()).expect("delta sizes are bounded far below u32");
        let mut plan = InsertPlan { new, out: Vec::new(), back: Vec::new() };
        if new == 0 {
            return plan;
        }
        let (vectors, l2, dim) = (&self.vectors, self.l2, self.params.dim);
        let at = |a: u32| -> &[f32] {
            if a == new { vector } else { &vectors[a as usize * dim..(a as usize + 1) * dim] }
        };
        let dist = |a: u32, b: u32| l2.eval(at(a), at(b));
        let expanded = self.greedy(vector, self.params.list_size, |a| a);
        let rule = PruneRule {
            alpha: self.params.alpha,
            degree_max: self.params.degree_max,
            saturate: false,
        };
        let mut scratch = PruneScratch::default();
        robust_prune_by(new, expanded, rule, &mut scratch, &mut plan.out, dist);
        // Back edges, re-pruned past R * SLACK as the build does.
        let slack = (self.params.degree_max as f32 * crate::vamana::SLACK) as usize;
        for &j in &plan.out {
            let mut list = self.adjacency[j as usize].clone();
            list.push(new);
            if list.len() > slack {
                let cands: Vec<(u32, f32)> = list.iter().map(|&c| (c, dist(j, c))).collect();
                robust_prune_by(j, cands, rule, &mut scratch, &mut list, dist);
            }
            plan.back.push((j, list));
        }
        plan
    }

    /// Adds a planned point to the graph. Returns its delta id. A plan made
    /// before other points were committed (plans made in parallel) keeps
    /// its out-edges, which point at nodes that still exist, and adds its
    /// back edges to the lists as they are now, re-pruning past R x SLACK;
    /// a plan made on an empty delta is redone.
    pub fn commit_insert(
        &mut self,
        id: ExternalId,
        vector: &[f32],
        payload: Option<String>,
        plan: InsertPlan,
    ) -> u32 {
        assert_eq!(vector.len(), self.params.dim, "delta vector of the collection's dimension");
        assert!(self.find(&id).is_none(), "the caller removes a live point before replacing it");
        let new = u32::try_from(self.points.len()).expect("delta sizes are bounded far below u32");
        assert!(plan.new <= new, "an insert plan made for this delta");
        let plan = if plan.new == 0 && new > 0 { self.plan_insert(vector) } else { plan };
        self.bytes += Self::point_bytes(&self.params, payload.as_ref().map_or(0, |p| p.len()));
        self.vectors.extend_from_slice(vector);
        self.points.push(DeltaPoint {
            id: id.clone(),
            payload,
            deleted: AtomicBool::new(false),
            doc: std::sync::OnceLock::new(),
        });
        self.by_id.insert(id, new);
        self.live += 1;
        if plan.new == new {
            self.adjacency.push(plan.out);
            for (j, list) in plan.back {
                self.adjacency[j as usize] = list;
            }
            return new;
        }
        let out = plan.out;
        self.adjacency.push(out.clone());
        let slack = (self.params.degree_max as f32 * crate::vamana::SLACK) as usize;
        let rule = PruneRule {
            alpha: self.params.alpha,
            degree_max: self.params.degree_max,
            saturate: false,
        };
        let mut scratch = PruneScratch::default();
        for j in out {
            let mut list = std::mem::take(&mut self.adjacency[j as usize]);
            if !list.contains(&new) {
                list.push(new);
            }
            if list.len() > slack {
                let (vectors, l2, dim) = (&self.vectors, self.l2, self.params.dim);
                let at = |a: u32| &vectors[a as usize * dim..(a as usize + 1) * dim];
                let cands: Vec<(u32, f32)> =
                    list.iter().map(|&c| (c, l2.eval(at(j), at(c)))).collect();
                robust_prune_by(j, cands, rule, &mut scratch, &mut list, |a, b| {
                    l2.eval(at(a), at(b))
                });
            }
            self.adjacency[j as usize] = list;
        }
        new
    }

    /// Plans inserts of several points at once, in parallel (rayon), against
    /// the delta as it is: commit them in order with [`Self::commit_insert`].
    /// Points of one group do not see each other when planned (they link
    /// through later inserts), so groups are kept small
    /// ([`PLAN_GROUP_POINTS`]).
    pub fn plan_inserts(&self, vectors: &[&[f32]]) -> Vec<InsertPlan> {
        use rayon::prelude::*;
        vectors.par_iter().map(|v| self.plan_insert(v)).collect()
    }

    /// Greedy search in L2 from point 0; returns every expanded node with
    /// its L2 distance, in expansion order. `map` post-processes the list.
    fn greedy<R>(&self, q: &[f32], l: usize, map: impl FnOnce(Vec<(u32, f32)>) -> R) -> R {
        let (pool, expanded) = self.walk(q, l, |v| self.l2.eval(q, v));
        drop(pool);
        map(expanded)
    }

    /// The beam walk shared by insert and search: returns the final pool and
    /// the expanded nodes with their distances.
    fn walk(
        &self,
        _q: &[f32],
        l: usize,
        dist: impl Fn(&[f32]) -> f32,
    ) -> (Vec<Candidate>, Vec<(u32, f32)>) {
        let mut pool: Vec<Candidate> = Vec::with_capacity(l + 1);
        let mut expanded = Vec::new();
        if self.points.is_empty() {
            return (pool, expanded);
        }
        let mut seen: FxHashSet<u32> = FxHashSet::default();
        seen.insert(0);
        insert_candidate(&mut pool, l, 0, dist(self.vector(0)));
        while let Some(i) = pool.iter().position(|c| !c.expanded) {
            pool[i].expanded = true;
            let Candidate { id, distance, .. } = pool[i];
            expanded.push((id, distance));
            for &n in &self.adjacency[id as usize] {
                if seen.insert(n) {
                    insert_candidate(&mut pool, l, n, dist(self.vector(n)));
                }
            }
        }
        (pool, expanded)
    }

    /// The `k` nearest live points that `accept` takes, by exact distance to
    /// every one of them (a filtered query: the delta is bounded by
    /// `delta_bytes_max`, and its vectors are in memory). Also returns how
    /// many points `accept` took.
    pub fn scan(
        &self,
        q: &[f32],
        k: usize,
        mut accept: impl FnMut(&DeltaPoint) -> bool,
    ) -> (Vec<(u32, f32)>, u64) {
        let cosine = self.params.metric == Metric::Cosine;
        let qd = self.query_distance;
        let mut top = crate::topk::TopK::new(k);
        let mut matched = 0u64;
        for (i, p) in self.points.iter().enumerate() {
            if p.is_deleted() || !accept(p) {
                continue;
            }
            matched += 1;
            let d = qd.eval(q, self.vector(i as u32));
            top.push(if cosine { 1.0 + d } else { d }, i as u32);
        }
        (top.into_sorted().into_iter().map(|n| (n.id, n.distance)).collect(), matched)
    }

    /// The `k` nearest live points to a prepared query (cosine: normalised),
    /// with distances in the collection's metric, best first. `k <= l`.
    pub fn search(&self, q: &[f32], k: usize, l: usize) -> Vec<(u32, f32)> {
        let cosine = self.params.metric == Metric::Cosine;
        let qd = self.query_distance;
        let (_, expanded) = self.walk(q, l.max(k), |v| {
            let d = qd.eval(q, v);
            if cosine { 1.0 + d } else { d }
        });
        let mut out: Vec<(u32, f32)> =
            expanded.into_iter().filter(|&(i, _)| !self.points[i as usize].is_deleted()).collect();
        out.sort_unstable_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        out.truncate(k);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn params(metric: Metric) -> DeltaParams {
        DeltaParams { dim: 8, metric, degree_max: 16, list_size: 32, alpha: 1.2 }
    }

    /// The delta finds the exact nearest neighbours of most queries, never
    /// returns a deleted point, and replaces on re-insert.
    #[test]
    fn delta_search_recall_and_deletes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut d = Delta::new(params(Metric::L2));
        let n = 600;
        let mut data = Vec::new();
        for i in 0..n {
            let v: Vec<f32> = (0..8).map(|_| rng.random::<f32>()).collect();
            d.insert(ExternalId::Num(i), &v, None);
            data.push(v);
        }
        let l2 = Distance::<f32>::new(Metric::L2);
        let mut hits = 0;
        for q in data.iter().take(100) {
            let mut exact: Vec<(usize, f32)> =
                data.iter().enumerate().map(|(i, v)| (i, l2.eval(q, v))).collect();
            exact.sort_by(|a, b| a.1.total_cmp(&b.1));
            let got = d.search(q, 10, 40);
            let want: FxHashSet<u32> = exact.iter().take(10).map(|x| x.0 as u32).collect();
            hits += got.iter().filter(|x| want.contains(&x.0)).count();
        }
        assert!(hits >= 950, "recall@10 of the delta {hits}/1000");
        // Delete half; none comes back.
        for i in (0..n).step_by(2) {
            assert!(d.delete(&ExternalId::Num(i)));
        }
        assert!(!d.delete(&ExternalId::Num(0)), "a second delete finds nothing");
        assert_eq!(d.live(), n as usize / 2);
        for q in data.iter().take(50) {
            for (i, _) in d.search(q, 10, 40) {
                assert_eq!(i % 2, 1, "deleted point {i} returned");
            }
        }
        // Re-insert of a deleted id is a new live point.
        let id = d.insert(ExternalId::Num(0), &data[0], None);
        assert_eq!(d.find(&ExternalId::Num(0)), Some(id));
        assert_eq!(d.search(&data[0], 1, 20)[0], (id, 0.0));
    }

    /// Inserts planned in parallel groups (the live write path) build a
    /// graph as good as one-at-a-time inserts, with degrees within bounds.
    #[test]
    fn grouped_plans_match_sequential_inserts() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let n = 2000;
        let data: Vec<Vec<f32>> =
            (0..n).map(|_| (0..8).map(|_| rng.random::<f32>()).collect()).collect();
        let mut seq = Delta::new(params(Metric::L2));
        let mut grouped = Delta::new(params(Metric::L2));
        for (i, v) in data.iter().enumerate() {
            seq.insert(ExternalId::Num(i as u64), v, None);
        }
        for (g, chunk) in data.chunks(PLAN_GROUP_POINTS).enumerate() {
            let refs: Vec<&[f32]> = chunk.iter().map(Vec::as_slice).collect();
            let plans = grouped.plan_inserts(&refs);
            for (k, (v, plan)) in chunk.iter().zip(plans).enumerate() {
                let id = ExternalId::Num((g * PLAN_GROUP_POINTS + k) as u64);
                grouped.commit_insert(id, v, None, plan);
            }
        }
        let slack = (16.0 * crate::vamana::SLACK) as usize;
        for i in 0..n as u32 {
            assert!(grouped.neighbors(i).len() <= slack, "node {i} over R x SLACK");
            assert!(i == 0 || !grouped.neighbors(i).is_empty(), "node {i} has no edges");
        }
        let l2 = Distance::<f32>::new(Metric::L2);
        let hits = |d: &Delta| {
            let mut h = 0;
            for q in data.iter().step_by(10) {
                let mut exact: Vec<(u32, f32)> =
                    data.iter().enumerate().map(|(i, v)| (i as u32, l2.eval(q, v))).collect();
                exact.sort_by(|a, b| a.1.total_cmp(&b.1));
                let want: FxHashSet<u32> = exact.iter().take(10).map(|x| x.0).collect();
                h += d.search(q, 10, 40).iter().filter(|x| want.contains(&x.0)).count();
            }
            h
        };
        let (hs, hg) = (hits(&seq), hits(&grouped));
        assert!(hg + 20 >= hs, "grouped {hg} against sequential {hs} of 2000");
        assert!(hg >= 1900, "grouped recall@10 {hg}/2000");
    }
}
