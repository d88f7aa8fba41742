//! The merge: the delta and the tombstones become generation N+1 beside N
//! (FreshDiskANN's StreamingMerge), while searches go on over N and the
//! frozen delta.
//!
//! 1. Freeze (write lock, a moment): the active delta becomes the frozen
//!    one, new writes go to a fresh delta; the tombstones so far are the
//!    merge's deletes; the last applied LSN is the new generation's LSN.
//! 2. Slots: deleted slots and N's free slots are reused by the new points,
//!    the rest are appended (slots stay stable, so the id map only changes
//!    for points that changed).
//! 3. Insert phase: each new point is searched over N with the disk beam
//!    search (rayon, a searcher per thread); the records read are its
//!    candidates, with exact vectors, plus its neighbours in the delta's
//!    graph; RobustPrune chooses its out-edges. Then each new point gets
//!    its slot (`assign_slots`: in a packed generation beside its nearest
//!    neighbour with room in its sector; orphans, kept nodes that share no
//!    edge with their sector, move beside their neighbours too, their
//!    edges renumbered in the write pass) and back edges are collected.
//! 4. One sequential pass over N's graph writes N+1: a deleted node's
//!    in-neighbours replace it with its out-neighbours and are re-pruned
//!    (delete phase), nodes with new back edges are re-pruned past R (patch
//!    phase), new points are written in their slots, free slots get empty
//!    records. PQ codes: copied, new points encoded with N's codebook (or
//!    all re-encoded when the codebook is retrained). ids, changes, hot
//!    list (N's minus freed slots), every file fsynced, then the manifest
//!    is switched (rename + directory fsync).
//! 5. Switch (write lock): the id map takes the changes, N+1 is served, N is
//!    retired (its files go when the last search holding it ends), WAL
//!    segments below the new LSN are removed.
//!
//! Prunes in the write pass score old nodes by their PQ reconstructions
//! (their vectors would cost a random read each); the node being pruned and
//! new points are exact. A crash at any moment leaves N and the WAL intact:
//! `remove_stale` deletes the unfinished `gen-{N+1}` at the next open.
//! Memory: the merge holds the deleted nodes' adjacency, the new points'
//! edges and back edges, and a read-ahead buffer: bounded by the delta and
//! the tombstones, not by N (checked against `MERGE_MEMORY_BYTES_MAX`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use super::changes::{self, Changes};
use super::delta::Delta;
use super::generation::Generation;
use super::idfile::IdFileWriter;
use super::idmap::Change;
use super::ids::ExternalId;
use super::{Collection, CollectionError, delta_params};
use crate::distance::{Distance, Metric};
use crate::element::{Element, ElementType};
use crate::format::codes::CodesWriter;
use crate::format::graph::{GraphHeader, GraphWriter};
use crate::format::pq::{PqFileMeta, write_codebook};
use crate::format::{FileIdent, SECTOR_BYTES};
use crate::index::pqspace::PqSpace;
use crate::index::{
    CHANGES_FILE, CODES_FILE, FileEntry, GRAPH_FILE, HOT_FILE, IDS_FILE, LAYOUT_FILES,
    MANIFEST_FILE, Manifest, PQ_FILE,
};
use crate::pq::{Codebook, PqParams};
use crate::search::SearchParams;
use crate::vamana::{PruneRule, PruneScratch, robust_prune_by};
use crate::wal::RecordKind;

/// Memory a merge may use besides what the collection already holds.
pub const MERGE_MEMORY_BYTES_MAX: u64 = 4 << 30;
/// Largest generation (its vectors in the graph's space, f32) whose
/// vectors a merge loads to re-prune exactly; past it, PQ reconstructions.
pub const MERGE_EXACT_VECTORS_BYTES_MAX: u64 = 2 << 30;
/// Beam width of the insert phase's searches.
const INSERT_BEAM_WIDTH: usize = 4;
/// Bytes read ahead by the sequential pass over N's graph.
const READ_AHEAD_BYTES: usize = 8 << 20;
/// Slots the write pass gathers, prunes (in parallel) and writes at a time.
const WRITE_CHUNK_SLOTS: u32 = 4096;
/// Rows the PQ codebook is retrained on, at most.
const RETRAIN_SAMPLE_MAX: usize = 100_000;
/// In a packed generation a merge moves at most this many kept nodes per
/// point it inserts (the orphans, `OrphanFinder`), so the id map entries it
/// rewrites stay bounded by the churn: at most (1 + this) x the new points.
pub const RELOCATE_PER_INSERT: usize = 1;
const PENDING_MANIFEST: &str = ".manifest.pending";

/// Progress of a merge, phase by phase.
pub trait MergeProgress: Sync {
    fn phase(&self, _name: &str, _total: u64) {}
    fn advance(&self, _done: u64) {}
}

pub struct NoProgress;
impl MergeProgress for NoProgress {}

/// Metric: merges finished, by collection and outcome.
pub const METRIC_MERGES: &str = "basalt_merges_total";
/// Metric: duration of successful merges.
pub const METRIC_MERGE_SECONDS: &str = "basalt_merge_duration_seconds";

/// The running merge's progress, readable from other threads (metrics):
/// the fraction done of its current phase.
#[derive(Default)]
pub struct PhaseProgress {
    total: AtomicU64,
    done: AtomicU64,
}

impl PhaseProgress {
    /// Done / total of the current phase (0 when no merge runs).
    pub fn ratio(&self) -> f64 {
        let t = self.total.load(Ordering::Relaxed);
        if t == 0 { 0.0 } else { (self.done.load(Ordering::Relaxed) as f64 / t as f64).min(1.0) }
    }

    fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
    }
}

impl MergeProgress for PhaseProgress {
    fn phase(&self, _name: &str, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }
    fn advance(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
    }
}

/// Reports to two observers (the caller's and the collection's own).
struct Both<'a>(&'a dyn MergeProgress, &'a PhaseProgress);
impl MergeProgress for Both<'_> {
    fn phase(&self, name: &str, total: u64) {
        self.0.phase(name, total);
        self.1.phase(name, total);
    }
    fn advance(&self, done: u64) {
        self.0.advance(done);
        self.1.advance(done);
    }
}

/// What a merge did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct MergeReport {
    /// "nothing to do", "first build" or "streaming".
    pub kind: String,
    pub generation: u64,
    pub lsn: u64,
    pub inserted: u64,
    pub deleted: u64,
    pub slots: u64,
    pub free_slots: u64,
    /// Kept nodes moved beside their neighbours (packed generations).
    pub relocated: u64,
    pub retrained: bool,
    pub seconds: f64,
    pub phases: Vec<(String, f64)>,
}

/// What the merge writes, ready to switch to.
struct Written {
    manifest: Manifest,
    placed: FxHashMap<ExternalId, u32>,
    /// N's slot -> N+1's of the kept nodes that moved.
    moved: FxHashMap<u32, u32>,
    report: MergeReport,
}

/// Removes what an interrupted merge left: generation directories other than
/// the manifest's (only the layout's file names) and a pending manifest.
pub fn remove_stale(dir: &Path, current: Option<u64>) -> Result<(), CollectionError> {
    let _ = std::fs::remove_file(dir.join(PENDING_MANIFEST));
    let rd = std::fs::read_dir(dir).map_err(|e| CollectionError::io(dir, "list", e))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_prefix("gen-").and_then(|n| n.parse::<u64>().ok()) else {
            if name.starts_with(".merge-build") {
                remove_build_dir(&e.path());
            }
            continue;
        };
        if Some(n) == current {
            continue;
        }
        let p = e.path();
        for f in LAYOUT_FILES.iter().chain([IDS_FILE, CHANGES_FILE].iter()) {
            let _ = std::fs::remove_file(p.join(f));
        }
        let _ = std::fs::remove_dir(&p);
    }
    Ok(())
}

/// Removes a first build's work directory (its data file and the index
/// the build published there), by name.
fn remove_build_dir(p: &Path) {
    let _ = std::fs::remove_file(p.join("data.bin"));
    let idx = p.join("index");
    if let Ok(rd) = std::fs::read_dir(&idx) {
        for e in rd.flatten() {
            let gp = e.path();
            if gp.is_dir() {
                for f in LAYOUT_FILES.iter().chain([IDS_FILE, CHANGES_FILE].iter()) {
                    let _ = std::fs::remove_file(gp.join(f));
                }
                let _ = std::fs::remove_dir(&gp);
            }
        }
    }
    let _ = std::fs::remove_file(idx.join(MANIFEST_FILE));
    let _ = std::fs::remove_dir(&idx);
    let _ = std::fs::remove_dir(p);
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl Fn(std::io::Error) -> CollectionError + 'a {
    move |e| CollectionError::io(path, op, e)
}

/// The manifest's entry for a written file.
fn entry(dir: &Path, name: &str) -> Result<FileEntry, CollectionError> {
    let p = dir.join(name);
    Ok(FileEntry {
        name: name.to_string(),
        bytes: std::fs::metadata(&p).map_err(io(&p, "stat"))?.len(),
        xxh3: crate::index::verify::file_xxh3(&p)?,
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CollectionError> {
    let mut f = File::create(path).map_err(io(path, "create"))?;
    f.write_all(bytes).map_err(io(path, "write"))?;
    f.sync_all().map_err(io(path, "fsync"))
}

impl Collection {
    /// Merges the delta and the tombstones into a new generation now (waits
    /// for a running merge first). Searches and writes go on meanwhile.
    pub fn merge_now(&self, progress: &dyn MergeProgress) -> Result<MergeReport, CollectionError> {
        let _one = self.merge_lock.lock();
        let started = Instant::now();
        let both = Both(progress, &self.merge_progress);
        let r = self.merge_locked(&both);
        self.merge_progress.reset();
        let coll =
            self.dir().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let outcome = match &r {
            Ok(rep) if rep.kind == "nothing to do" => "nothing",
            Ok(_) => "ok",
            Err(_) => "failed",
        };
        metrics::counter!(METRIC_MERGES, "collection" => coll.clone(), "outcome" => outcome)
            .increment(1);
        if outcome == "ok" {
            metrics::histogram!(METRIC_MERGE_SECONDS, "collection" => coll)
                .record(started.elapsed().as_secs_f64());
        }
        r
    }

    fn merge_locked(&self, progress: &dyn MergeProgress) -> Result<MergeReport, CollectionError> {
        let started = Instant::now();
        // Freeze, unless an earlier merge failed after freezing (it left
        // the frozen delta in place: retry exactly that).
        let (frozen, deletes, generation, lsn) = {
            let applied = self.applied.lock();
            let mut st = self.state.write();
            if st.frozen.is_none() {
                if st.active.is_empty() && st.tombstones.is_empty() {
                    return Ok(MergeReport {
                        kind: "nothing to do".into(),
                        ..MergeReport::default()
                    });
                }
                let fresh = Delta::new(delta_params(&self.config));
                st.frozen = Some(Arc::new(std::mem::replace(&mut st.active, fresh)));
                st.frozen_lsn = *applied;
                st.frozen_tombstones = st.tombstones.clone();
                st.tombstones_since_freeze.clear();
                st.frozen_deleted.clear();
            }
            (
                st.frozen.clone().expect("frozen above"),
                st.frozen_tombstones.clone(),
                st.generation.clone(),
                st.frozen_lsn,
            )
        };
        self.signal_room();
        let written = match &generation {
            None if frozen.live() == 0 => {
                // Nothing to write: the frozen delta held only deleted points.
                Ok(None)
            }
            None => self.first_build(&frozen, lsn, progress).map(Some),
            Some(g) => self.streaming(g, &frozen, &deletes, lsn, progress).map(Some),
        };
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(self.dir().join(PENDING_MANIFEST));
                return Err(e);
            }
        };
        let Some(mut w) = written else {
            let applied = self.applied.lock();
            let mut st = self.state.write();
            st.frozen = None;
            st.frozen_deleted.clear();
            drop(applied);
            return Ok(MergeReport { kind: "nothing to do".into(), ..MergeReport::default() });
        };
        self.switch(&w.manifest, &w.placed, &w.moved)?;
        let m = &mut self.merge.lock();
        m.done += 1;
        w.report.seconds = started.elapsed().as_secs_f64();
        Ok(w.report)
    }

    /// Switches to the written generation: manifest rename, id map, state.
    fn switch(
        &self,
        manifest: &Manifest,
        placed: &FxHashMap<ExternalId, u32>,
        moved: &FxHashMap<u32, u32>,
    ) -> Result<(), CollectionError> {
        let dir = self.dir().to_path_buf();
        let pending = dir.join(PENDING_MANIFEST);
        let target = dir.join(MANIFEST_FILE);
        std::fs::rename(&pending, &target).map_err(io(&target, "rename"))?;
        crate::fsutil::sync_dir(&dir).map_err(io(&dir, "fsync"))?;
        // The new generation is the collection's now; failing to serve it
        // from here on needs a reopen.
        let fail = |e: CollectionError| {
            let why = format!(
                "generation {} was written but could not be opened: {e}",
                manifest.generation
            );
            self.poison(why.clone());
            CollectionError::Poisoned(why)
        };
        let g2 = Arc::new(Generation::open(&dir, &self.open_options().index).map_err(fail)?);
        let ch_path = g2.gen_dir.join(CHANGES_FILE);
        let ch_bytes = std::fs::read(&ch_path).map_err(io(&ch_path, "read"))?;
        let ch = changes::decode(&ch_path, &ch_bytes)?;
        {
            let applied = self.applied.lock();
            let mut st = self.state.write();
            self.idmap().apply(&ch.changes, g2.ident).map_err(|e| fail(e.into()))?;
            if let Some(old) = st.generation.replace(g2) {
                old.retire();
            }
            // Kept nodes deleted during the merge, under their N+1 slots.
            let mut t: FxHashSet<u32> = st
                .tombstones_since_freeze
                .iter()
                .map(|s| moved.get(s).copied().unwrap_or(*s))
                .collect();
            for id in &st.frozen_deleted {
                if let Some(&s) = placed.get(id) {
                    t.insert(s);
                }
            }
            st.tombstones = t;
            st.tombstones_since_freeze.clear();
            st.frozen_deleted.clear();
            st.frozen = None;
            st.frozen_tombstones.clear();
            st.generation_lsn = manifest.lsn;
            drop(applied);
        }
        self.signal_room();
        // Tell the log's followers. The switch has happened (the manifest is
        // the authority and replay skips this record), so a log that cannot
        // take it is reported by the write path's poisoning, not here.
        let body = super::batch::encode_switch(&super::batch::GenerationSwitch {
            generation: manifest.generation,
            build_id: manifest.ident().build_id,
            lsn: manifest.lsn,
        });
        // A standby's log is its primary's: the primary logs its own switch.
        if !self.is_follower()
            && let Err(e) = self.append_and_apply(RecordKind::GenerationSwitch, &body)
        {
            eprintln!("warning: generation {} switched but not logged: {e}", manifest.generation);
        }
        // Records a standby has not flushed stay (up to the shipper's cap).
        self.wal().remove_before(manifest.lsn.min(self.wal_keep_after()), |_| false)?;
        Ok(())
    }

    /// An empty collection's first generation: an ordinary build of the
    /// frozen delta's points (slot = their order), with its ids and changes.
    fn first_build(
        &self,
        frozen: &Delta,
        lsn: u64,
        progress: &dyn MergeProgress,
    ) -> Result<Written, CollectionError> {
        let c = self.config().clone();
        let dir = self.dir().to_path_buf();
        let work = dir.join(".merge-build");
        remove_build_dir(&work);
        std::fs::create_dir_all(&work).map_err(io(&work, "create"))?;
        let ext = match c.element {
            ElementType::F32 => "fbin",
            ElementType::U8 => "u8bin",
            ElementType::I8 => "i8bin",
        };
        let data = work.join(format!("data.{ext}"));
        let live: Vec<u32> =
            (0..frozen.len() as u32).filter(|&i| !frozen.point(i).is_deleted()).collect();
        progress.phase("write points", live.len() as u64);
        crate::with_element!(c.element, T => {
            let mut w = crate::vecfile::VectorWriter::<T>::create(&data, c.dim as usize)
                .map_err(|e| CollectionError::Invalid(e.to_string()))?;
            for &i in &live {
                let row: Vec<T> = frozen.vector(i).iter().map(|&x| T::from_f32(x)).collect();
                w.append(&row).map_err(|e| CollectionError::Invalid(e.to_string()))?;
            }
            w.finish().map_err(|e| CollectionError::Invalid(e.to_string()))?;
        });
        let opts = crate::index::build::BuildOptions {
            metric: c.metric,
            graph: crate::vamana::BuildParams {
                degree_max: c.degree_max,
                list_size: c.list_size,
                alpha: c.alpha,
                seed: c.seed,
                ..Default::default()
            },
            pq_chunks: c.pq_chunks,
            placement: crate::format::graph::Placement::Packed,
            ..Default::default()
        };
        let out = work.join("index");
        progress.phase("build", 1);
        let summary = crate::index::build::build_index(&data, &out, &opts, &())?;
        let built = crate::index::read_manifest(&out)?;
        let ident = built.ident();
        let gen_src = out.join(built.generation_dir());
        // ids and changes beside the built files.
        // A packed build numbered its nodes apart from the rows written.
        let rows = crate::index::build::read_row_ids(&gen_src, ident, live.len() as u64)?;
        let mut ids = IdFileWriter::create(&gen_src.join(IDS_FILE), live.len() as u64, ident)?;
        let mut placed = FxHashMap::default();
        let mut list = Vec::with_capacity(live.len());
        for slot in 0..live.len() {
            let row = rows.as_ref().map_or(slot, |r| r[slot] as usize);
            let p = frozen.point(live[row]);
            ids.append(Some(&p.id))?;
            placed.insert(p.id.clone(), slot as u32);
            list.push(Change::Put {
                id: p.id.clone(),
                slot: slot as u32,
                payload: p.payload.clone(),
            });
        }
        ids.finish()?;
        let ch = Changes { base: None, ident, changes: list };
        write_synced(&gen_src.join(CHANGES_FILE), &changes::encode(&ch))?;
        let mut manifest = built.clone();
        manifest.lsn = lsn;
        manifest.files.retain(|f| f.name != IDS_FILE);
        manifest.files.push(entry(&gen_src, IDS_FILE)?);
        manifest.files.push(entry(&gen_src, CHANGES_FILE)?);
        crate::fsutil::sync_dir(&gen_src).map_err(io(&gen_src, "fsync"))?;
        let gen_dst = dir.join(built.generation_dir());
        std::fs::rename(&gen_src, &gen_dst).map_err(io(&gen_dst, "rename"))?;
        crate::fsutil::sync_dir(&dir).map_err(io(&dir, "fsync"))?;
        write_synced(&dir.join(PENDING_MANIFEST), &manifest.encode())?;
        remove_build_dir(&work);
        Ok(Written {
            report: MergeReport {
                kind: "first build".into(),
                generation: manifest.generation,
                lsn,
                inserted: live.len() as u64,
                deleted: 0,
                slots: summary.count,
                free_slots: 0,
                relocated: 0,
                retrained: true,
                seconds: 0.0,
                phases: summary.phases.clone(),
            },
            manifest,
            placed,
            moved: FxHashMap::default(),
        })
    }

    /// The streaming merge of the frozen delta and `deletes` into N+1.
    fn streaming(
        &self,
        g: &Arc<Generation>,
        frozen: &Delta,
        deletes: &FxHashSet<u32>,
        lsn: u64,
        progress: &dyn MergeProgress,
    ) -> Result<Written, CollectionError> {
        let c = self.config().clone();
        let mut phases = Vec::new();
        let mut t = Instant::now();
        let old = g.index.manifest().clone();
        let header = g.index.header().clone();
        let n_old = header.count;
        let r = c.degree_max.min(header.degree_max as usize);
        let rule = PruneRule { alpha: c.alpha, degree_max: r, saturate: false };

        // Slots: N's free slots and the deleted ones are reused, then slots
        // past N's end; which new point takes which is decided after the
        // insert phase (`assign_slots`: in a packed generation, beside its
        // neighbours).
        let mut free: BTreeSet<u32> = deletes.iter().copied().collect();
        if let Some(f) = &g.ids {
            for (slot, id) in f.scan().enumerate() {
                if id?.is_none() {
                    free.insert(slot as u32);
                }
            }
        }
        let ins: Vec<u32> =
            (0..frozen.len() as u32).filter(|&i| !frozen.point(i).is_deleted()).collect();
        let appended = ins.len().saturating_sub(free.len()) as u64;
        // Slot u32::MAX is never handed out (NODES_MAX).
        if n_old + appended > crate::format::NODES_MAX {
            return Err(CollectionError::Invalid(format!(
                "a generation holds at most {} slots (NODES_MAX)",
                crate::format::NODES_MAX
            )));
        }
        let n_new = n_old + appended;
        let still_free_count = free.len().saturating_sub(ins.len()) as u64;
        let mem = (deletes.len() * r * 4 + ins.len() * r * 16 + free.len() * 24) as u64
            + READ_AHEAD_BYTES as u64;
        let within_budget = |mem: u64| {
            if mem > MERGE_MEMORY_BYTES_MAX {
                return Err(CollectionError::Invalid(format!(
                    "the merge would need about {mem} bytes, over MERGE_MEMORY_BYTES_MAX ({MERGE_MEMORY_BYTES_MAX}): merge more often"
                )));
            }
            Ok(())
        };
        within_budget(mem)?;

        // The space the graph's distances live in, and whether to retrain PQ.
        let dim = c.dim as usize;
        let mut norm_max = header.ip_norm_max;
        if c.metric == Metric::InnerProduct {
            for &i in &ins {
                let v = frozen.vector(i);
                norm_max = norm_max.max(v.iter().map(|x| x * x).sum::<f32>().sqrt());
            }
        }
        let over_norm = c.metric == Metric::InnerProduct && norm_max > header.ip_norm_max;
        let trained = old.pq_trained_points.unwrap_or(old.count);
        let live_after = n_new - still_free_count;
        let retrain = over_norm || live_after as f64 > trained as f64 * c.retrain_growth_factor;
        let space = PqSpace::new(c.metric, norm_max);
        let to_space = |v: &[f32]| {
            let mut out = Vec::with_capacity(dim + 1);
            space.push_row(v.iter().copied(), &mut out);
            out
        };
        let old_cb = g.index.codebook();
        let codes = g.index.codes();
        // Re-pruning a node scores its candidates against each other. With
        // PQ reconstructions (32 bytes for 384-d) that costs recall: measured
        // on debian-384, 5% churn took recall@10 at L=60 from 0.959 (fresh
        // build) to 0.884 in one cycle. So while N's vectors fit
        // `MERGE_EXACT_VECTORS_BYTES_MAX`, one sequential pass loads them
        // and every prune is exact; past it the merge falls back to PQ.
        let space_dim = space.dim(dim);
        let exact_bytes = n_old * space_dim as u64 * 4;
        let dead = |s: u32| deletes.contains(&s) || free.contains(&s);
        // In a packed generation, the kept nodes whose sector holds none of
        // their neighbours are placed again with the new points.
        let per_sector = match header.placement {
            crate::format::graph::Placement::Packed => g.index.layout().records_per_sector,
            crate::format::graph::Placement::RowOrder => 0,
        };
        let mut orphans = OrphanFinder::new(per_sector, ins.len() * RELOCATE_PER_INSERT);
        let exact: Option<Vec<f32>> = if exact_bytes + mem <= MERGE_EXACT_VECTORS_BYTES_MAX {
            progress.phase("load vectors", n_old);
            let mut all = Vec::with_capacity((n_old as usize) * space_dim);
            let mut rd = SeqRecords::new(g)?;
            for slot in 0..n_old as u32 {
                let (v, nb) = rd.next_record(slot)?;
                space.push_row(v.iter().copied(), &mut all);
                orphans.push(slot, v, nb, &dead);
            }
            Some(all)
        } else {
            if orphans.wants() {
                progress.phase("find orphans", n_old);
                let mut rd = SeqRecords::new(g)?;
                let mut slot = 0u32;
                while u64::from(slot) < n_old && orphans.wants() {
                    let (v, nb) = rd.next_record(slot)?;
                    orphans.push(slot, v, nb, &dead);
                    slot += 1;
                }
            }
            None
        };
        let orphans = orphans.finish();
        let orphan_bytes: u64 =
            orphans.iter().map(|o| (o.vector.len() + o.nbrs.len()) as u64 * 4 + 64).sum();
        within_budget(mem + orphan_bytes)?;
        let decoded = |s: u32| {
            if let Some(all) = &exact {
                return all[s as usize * space_dim..(s as usize + 1) * space_dim].to_vec();
            }
            let mut out = vec![0.0; old_cb.dim()];
            old_cb.decode(codes.row(s), &mut out);
            if out.len() < dim + usize::from(c.metric == Metric::InnerProduct) {
                out.push(0.0);
            }
            out
        };
        let l2 = Distance::<f32>::new(Metric::L2);

        // Deleted nodes' out-neighbours (the delete phase's replacements).
        progress.phase("read deleted", deletes.len() as u64);
        let mut del_adj: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        for &d in deletes {
            if u64::from(d) < n_old {
                let (_, nb) = g.read_record(d)?;
                del_adj.insert(d, nb);
            }
        }
        phases.push(("read deleted".to_string(), t.elapsed().as_secs_f64()));

        // Insert phase.
        t = Instant::now();
        progress.phase("insert", ins.len() as u64);
        let params =
            SearchParams { k: 1, list_size: c.list_size.max(1), beam_width: INSERT_BEAM_WIDTH };
        let pos_of: FxHashMap<u32, u32> =
            ins.iter().enumerate().map(|(k, &i)| (i, k as u32)).collect();
        let out_refs: Vec<Vec<NodeRef>> = ins
            .par_iter()
            .map(|&i| -> Result<Vec<NodeRef>, CollectionError> {
                let x = to_space(frozen.vector(i));
                let mut seen: Vec<(u32, Vec<f32>)> = Vec::new();
                g.with_searcher(|s| {
                    let mut visit = |id: u32, _d: f32, v: &[f32]| seen.push((id, v.to_vec()));
                    let mut hooks = crate::search::SearchHooks {
                        accept: None,
                        visit: Some(&mut visit),
                        // Deterministic: the standby merges the same log
                        // into the same graph.
                        mode: Some(crate::search::SearchMode::Rounds),
                    };
                    g.index.search_with(s, frozen.vector(i), &params, &mut hooks)?;
                    Ok(())
                })?;
                // Candidates numbered locally (a new point has no slot yet).
                let mut refs: Vec<NodeRef> = Vec::new();
                let mut vecs: Vec<Vec<f32>> = Vec::new();
                let mut local: FxHashMap<NodeRef, u32> = FxHashMap::default();
                let mut cands = Vec::new();
                let mut add = |r: NodeRef, v: Vec<f32>| {
                    let k = refs.len() as u32;
                    if *local.entry(r).or_insert(k) == k {
                        cands.push((k, l2.eval(&x, &v)));
                        refs.push(r);
                        vecs.push(v);
                    }
                };
                for (id, v) in seen {
                    if !dead(id) {
                        add(NodeRef::Old(id), to_space(&v));
                    }
                }
                for &j in frozen.neighbors(i) {
                    if let Some(&k) = pos_of.get(&j) {
                        add(NodeRef::New(k), to_space(frozen.vector(j)));
                    }
                }
                let mut out = Vec::new();
                let mut scratch = PruneScratch::default();
                robust_prune_by(u32::MAX, cands, rule, &mut scratch, &mut out, |a, b| {
                    l2.eval(&vecs[a as usize], &vecs[b as usize])
                });
                Ok(out.iter().map(|&o| refs[o as usize]).collect())
            })
            .collect::<Result<_, _>>()?;
        // An orphan's live neighbours, nearest first (N's lists are in id
        // order).
        let orphan_nbrs: Vec<(u32, Vec<u32>)> = orphans
            .iter()
            .map(|o| {
                let me = to_space(&o.vector);
                let mut by: Vec<(f32, u32)> = o
                    .nbrs
                    .iter()
                    .filter(|&&x| !dead(x))
                    .map(|&x| (l2.eval(&me, &decoded(x)), x))
                    .collect();
                by.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                (o.slot, by.into_iter().map(|(_, x)| x).collect())
            })
            .collect();
        let (slots, moved) = assign_slots(&free, n_old, n_new, per_sector, &out_refs, &orphan_nbrs);
        // N's slot -> N+1's for the kept nodes that moved, and back.
        let remap = |s: u32| moved.get(&s).copied().unwrap_or(s);
        let moved_from: FxHashMap<u32, usize> = orphans
            .iter()
            .enumerate()
            .filter_map(|(k, o)| moved.get(&o.slot).map(|&to| (to, k)))
            .collect();
        let origin = |s: u32| moved_from.get(&s).map_or(s, |&k| orphans[k].slot);
        let slot_of: FxHashMap<u32, u32> = ins.iter().zip(&slots).map(|(&i, &s)| (i, s)).collect();
        let new_at: FxHashMap<u32, u32> = slot_of.iter().map(|(&i, &s)| (s, i)).collect();
        let still_free: FxHashSet<u32> = free
            .iter()
            .copied()
            .chain(moved.keys().copied())
            .filter(|s| !new_at.contains_key(s) && !moved_from.contains_key(s))
            .collect();
        debug_assert_eq!(still_free.len() as u64, still_free_count);
        let out_edges = out_refs.into_iter().zip(&slots).map(|(refs, &me)| {
            let out: Vec<u32> = refs
                .into_iter()
                .map(|r| match r {
                    NodeRef::Old(s) => remap(s),
                    NodeRef::New(k) => slots[k as usize],
                })
                .collect();
            (me, out)
        });
        let mut edges: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        let mut backs: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        for (me, out) in out_edges {
            for &j in &out {
                backs.entry(j).or_default().push(me);
            }
            edges.insert(me, out);
        }
        phases.push(("insert".to_string(), t.elapsed().as_secs_f64()));

        // Retrain the codebook when due (sample: new points, then disk nodes).
        t = Instant::now();
        let new_cb: Option<Codebook> = if retrain {
            progress.phase("retrain pq", 1);
            let mut sample: Vec<f32> = Vec::new();
            let mut rows = 0usize;
            for &i in ins.iter().take(RETRAIN_SAMPLE_MAX) {
                space.push_row(frozen.vector(i).iter().copied(), &mut sample);
                rows += 1;
            }
            let want = RETRAIN_SAMPLE_MAX.saturating_sub(rows);
            let step = (n_old as usize / want.max(1)).max(1);
            let mut s = 0u64;
            while s < n_old && rows < RETRAIN_SAMPLE_MAX {
                let slot = s as u32;
                if !dead(slot) {
                    let v = g.read_vector(slot)?;
                    space.push_row(v.iter().copied(), &mut sample);
                    rows += 1;
                }
                s += step as u64;
            }
            let cb = Codebook::train(&sample, space.dim(dim), &PqParams::new(c.pq_chunks, c.seed))
                .map_err(|e| CollectionError::Invalid(e.to_string()))?;
            Some(cb)
        } else {
            None
        };
        phases.push(("retrain".to_string(), t.elapsed().as_secs_f64()));

        // The sequential pass writing N+1.
        t = Instant::now();
        progress.phase("write", n_new);
        let ident = FileIdent::new_random(old.generation + 1);
        let gen_dir = self.dir().join(format!("gen-{}", ident.generation));
        remove_stale(self.dir(), Some(old.generation))?;
        std::fs::create_dir_all(&gen_dir).map_err(io(&gen_dir, "create"))?;
        let mut medoid = header.medoid;
        if dead(medoid) {
            medoid = del_adj
                .get(&medoid)
                .and_then(|nb| nb.iter().copied().find(|&s| !dead(s)))
                .or_else(|| (0..n_old as u32).find(|&s| !dead(s)))
                .or_else(|| edges.keys().min().copied())
                // Every point deleted: a generation of free slots, entered
                // at a free slot (searches find nothing; the next merge
                // picks a live medoid).
                .unwrap_or(medoid);
        }
        let medoid = remap(medoid);
        let new_header = GraphHeader {
            count: n_new,
            medoid,
            ident,
            ip_norm_max: if c.metric == Metric::InnerProduct { norm_max } else { 0.0 },
            ..header.clone()
        };
        let cb: &Codebook = new_cb.as_ref().unwrap_or(old_cb);
        let mut gw = GraphWriter::create(&gen_dir.join(GRAPH_FILE), &new_header)?;
        let mut cw = CodesWriter::create(&gen_dir.join(CODES_FILE), cb.chunks(), n_new, ident)?;
        let mut iw = IdFileWriter::create(&gen_dir.join(IDS_FILE), n_new, ident)?;
        let mut old_ids = g.ids.as_ref().map(|f| f.scan());
        let mut reader = SeqRecords::new(g)?;
        let mut code = vec![0u8; cb.chunks()];
        let mut pq_row = Vec::with_capacity(dim + 1);
        let zero = vec![0.0f32; dim];
        let mut changes_list = Vec::new();
        let mut removed: Vec<ExternalId> = Vec::new();
        let mut placed = FxHashMap::default();
        // Chunks of slots: gather each slot's record and candidate edges in
        // order, re-prune the chunk's changed nodes in parallel (the pass's
        // cost: a prune is R x candidates distances), then write in order.
        // A kept node's edges in N+1 (N's slot `was`, N+1's `now`): deleted
        // neighbours replaced by theirs, moved ones renumbered, back edges
        // added; re-pruned when over R. Tried and not kept (100K x 96
        // synthetic, bench/README.md): re-pruning every node whose deleted
        // neighbours were replaced (FreshDiskANN's delete phase) or every
        // node that changed: neither brought reads closer to a fresh
        // build's, the second raised them from cycle 1.
        let kept_edges = |was: u32, now: u32, nb: &[u32]| -> (Vec<u32>, bool) {
            let mut nbrs = Vec::with_capacity(nb.len());
            let mut changed = false;
            for &n in nb {
                if deletes.contains(&n) {
                    changed = true;
                    if let Some(rep) = del_adj.get(&n) {
                        nbrs.extend(
                            rep.iter()
                                .copied()
                                .filter(|&x| x != was && !deletes.contains(&x))
                                .map(remap),
                        );
                    }
                } else {
                    nbrs.push(remap(n));
                }
            }
            if let Some(b) = backs.get(&now) {
                nbrs.extend_from_slice(b);
                changed = true;
            }
            nbrs.sort_unstable();
            nbrs.dedup();
            let prune = changed && nbrs.len() > r;
            (nbrs, prune)
        };
        // The moved nodes' ids and payloads (the map holds N's).
        let mut moved_ids: Vec<Option<(ExternalId, Option<String>)>> = vec![None; orphans.len()];
        for &k in moved_from.values() {
            let slot = orphans[k].slot;
            let id = g.external_id(slot)?.ok_or_else(|| {
                CollectionError::Corrupt(format!(
                    "generation {}: live slot {slot} has no id",
                    old.generation
                ))
            })?;
            let payload = self.idmap().payload(&id)?;
            moved_ids[k] = Some((id, payload));
        }
        let mut jobs: Vec<SlotJob> = Vec::with_capacity(WRITE_CHUNK_SLOTS as usize);
        let mut s0 = 0u32;
        while u64::from(s0) < n_new {
            let s1 = (u64::from(s0) + u64::from(WRITE_CHUNK_SLOTS)).min(n_new) as u32;
            jobs.clear();
            for s in s0..s1 {
                let old_id = match old_ids.as_mut() {
                    Some(it) if u64::from(s) < n_old => it.next().transpose()?.flatten(),
                    None if u64::from(s) < n_old => Some(ExternalId::Num(u64::from(s))),
                    _ => None,
                };
                let old_rec =
                    if u64::from(s) < n_old { Some(reader.next_record(s)?) } else { None };
                let mut nbrs = Vec::new();
                let job = if let Some(&i) = new_at.get(&s) {
                    // A new point: its edges and the back edges it got.
                    nbrs.extend_from_slice(&edges[&s]);
                    nbrs.extend(backs.get(&s).into_iter().flatten().copied());
                    nbrs.sort_unstable();
                    nbrs.dedup();
                    let prune = nbrs.len() > r;
                    SlotJob { slot: s, old_id, what: SlotWhat::New(i), nbrs, prune }
                } else if let Some(&k) = moved_from.get(&s) {
                    // An orphan moved here: a kept node under a new slot.
                    let o = &orphans[k];
                    let (nbrs, prune) = kept_edges(o.slot, s, &o.nbrs);
                    let (id, payload) =
                        moved_ids[k].take().expect("each moved node's id read once above");
                    let what = SlotWhat::Moved(o.vector.clone(), id, payload);
                    SlotJob { slot: s, old_id, what, nbrs, prune }
                } else if let (false, Some((v, nb))) = (still_free.contains(&s), old_rec) {
                    let (nbrs, prune) = kept_edges(s, s, &nb);
                    SlotJob { slot: s, old_id, what: SlotWhat::Kept(v), nbrs, prune }
                } else {
                    SlotJob { slot: s, old_id, what: SlotWhat::Free, nbrs, prune: false }
                };
                jobs.push(job);
            }
            jobs.par_iter_mut().filter(|j| j.prune).for_each_init(
                || (PruneScratch::default(), Vec::new(), Vec::new()),
                |(scratch, buf, out), j| {
                    let me = match &j.what {
                        SlotWhat::New(i) => to_space(frozen.vector(*i)),
                        SlotWhat::Kept(v) | SlotWhat::Moved(v, ..) => to_space(v),
                        SlotWhat::Free => unreachable!("free slots have no edges to prune"),
                    };
                    prune_approx(&me, &j.nbrs, rule, scratch, buf, out, &l2, space_dim, |x| {
                        new_vector(x, &new_at, frozen, &to_space)
                            .unwrap_or_else(|| decoded(origin(x)))
                    });
                    std::mem::swap(&mut j.nbrs, out);
                },
            );
            for j in jobs.drain(..) {
                let s = j.slot;
                let (vector, id): (Vec<f32>, Option<ExternalId>) = match j.what {
                    SlotWhat::New(i) => {
                        let p = frozen.point(i);
                        if let Some(old) = &j.old_id {
                            removed.push(old.clone());
                        }
                        changes_list.push(Change::Put {
                            id: p.id.clone(),
                            slot: s,
                            payload: p.payload.clone(),
                        });
                        placed.insert(p.id.clone(), s);
                        (frozen.vector(i).to_vec(), Some(p.id.clone()))
                    }
                    SlotWhat::Kept(v) => (v, j.old_id),
                    SlotWhat::Moved(v, id, payload) => {
                        if deletes.contains(&s)
                            && let Some(old) = j.old_id
                        {
                            removed.push(old);
                        }
                        changes_list.push(Change::Put { id: id.clone(), slot: s, payload });
                        placed.insert(id.clone(), s);
                        (v, Some(id))
                    }
                    SlotWhat::Free => {
                        if deletes.contains(&s)
                            && let Some(old) = j.old_id
                        {
                            removed.push(old);
                        }
                        (zero.clone(), None)
                    }
                };
                crate::with_element!(c.element, T => {
                    let row: Vec<T> = vector.iter().map(|&x| T::from_f32(x)).collect();
                    gw.append(&row, &j.nbrs)?;
                });
                // Codes.
                if id.is_none() {
                    code.fill(0);
                } else if new_cb.is_some() || new_at.contains_key(&s) {
                    pq_row.clear();
                    space.push_row(vector.iter().copied(), &mut pq_row);
                    cb.encode(&pq_row, &mut code);
                } else {
                    code.copy_from_slice(codes.row(origin(s)));
                }
                cw.append(&code)?;
                iw.append(id.as_ref())?;
            }
            progress.advance(u64::from(s1));
            s0 = s1;
        }
        gw.finish()?;
        cw.finish()?;
        iw.finish()?;
        let meta = PqFileMeta { ident, metric: c.metric, ip_norm_max: new_header.ip_norm_max };
        write_codebook(&gen_dir.join(PQ_FILE), cb, &meta)?;
        let hot_path = g.gen_dir.join(HOT_FILE);
        let hot_bytes = std::fs::read(&hot_path).map_err(io(&hot_path, "read"))?;
        let (_, hot) = crate::format::hot::decode_hot(&hot_path, &hot_bytes)?;
        // N's list renumbered; a moved node may land on a listed slot
        // (once each, first place kept).
        let mut listed = FxHashSet::default();
        let hot: Vec<u32> = hot
            .into_iter()
            .map(remap)
            .filter(|&s| !still_free.contains(&s) && listed.insert(s))
            .collect();
        write_synced(&gen_dir.join(HOT_FILE), &crate::format::hot::encode_hot(&hot, ident))?;
        // Removals first, and never of an id this merge placed again (an
        // upsert of an existing id moves it to a new slot).
        let mut all: Vec<Change> = removed
            .into_iter()
            .filter(|id| !placed.contains_key(id))
            .map(|id| Change::Remove { id })
            .collect();
        all.extend(changes_list);
        let ch = Changes { base: Some(g.ident), ident, changes: all };
        write_synced(&gen_dir.join(CHANGES_FILE), &changes::encode(&ch))?;
        crate::fsutil::sync_dir(&gen_dir).map_err(io(&gen_dir, "fsync"))?;
        phases.push(("write".to_string(), t.elapsed().as_secs_f64()));

        let mut files = Vec::new();
        for name in LAYOUT_FILES.iter().chain([IDS_FILE, CHANGES_FILE].iter()) {
            files.push(entry(&gen_dir, name)?);
        }
        let manifest = Manifest {
            build_id: ident.build_id_hex(),
            generation: ident.generation,
            lsn,
            count: n_new,
            ip_norm_max: new_header.ip_norm_max,
            files,
            pq_trained_points: Some(if retrain { live_after } else { trained }),
            ..old.clone()
        };
        write_synced(&self.dir().join(PENDING_MANIFEST), &manifest.encode())?;
        Ok(Written {
            report: MergeReport {
                kind: "streaming".into(),
                generation: ident.generation,
                lsn,
                inserted: ins.len() as u64,
                deleted: deletes.len() as u64,
                slots: n_new,
                free_slots: still_free.len() as u64,
                relocated: moved.len() as u64,
                retrained: retrain,
                seconds: 0.0,
                phases,
            },
            manifest,
            placed,
            moved,
        })
    }
}

/// A candidate edge of a new point while slots are not yet assigned: a
/// node of generation N (its slot) or a new point (its position in the
/// merge's list of new points).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum NodeRef {
    Old(u32),
    New(u32),
}

/// The slot of each new point (by position in `out`, the new points' edges),
/// and the kept nodes that move (N's slot -> N+1's): `free` slots first,
/// then `n_old..n_new`. In a packed generation (`per_sector` >= 2 records a
/// sector) a new point takes a free slot in the sector of its nearest
/// neighbour that has one, so a merge keeps what the packed build gave
/// (neighbours read with one sector); then each orphan (`orphans`: its slot
/// and live neighbours, nearest first) moves to a free slot in the sector
/// of its nearest neighbour that has one, freeing its own; the new points
/// left take a neighbour's sector freed so, or else the lowest slot left,
/// as every point of a row-order generation does. Deterministic: the
/// standby merges into the same graph.
fn assign_slots(
    free: &BTreeSet<u32>,
    n_old: u64,
    n_new: u64,
    per_sector: u32,
    out: &[Vec<NodeRef>],
    orphans: &[(u32, Vec<u32>)],
) -> (Vec<u32>, FxHashMap<u32, u32>) {
    let mut avail: BTreeSet<u32> = free.clone();
    avail.extend((n_old..n_new).map(|s| s as u32));
    let mut slot: Vec<Option<u32>> = vec![None; out.len()];
    let mut moved: FxHashMap<u32, u32> = FxHashMap::default();
    let room = |avail: &BTreeSet<u32>, a: u32| -> Option<u32> {
        let base = a - a % per_sector;
        avail.range(base..=base.saturating_add(per_sector - 1)).next().copied()
    };
    let near = |avail: &BTreeSet<u32>,
                slot: &[Option<u32>],
                moved: &FxHashMap<u32, u32>,
                k: usize|
     -> Option<u32> {
        if per_sector < 2 {
            return None;
        }
        // The nearest neighbour's sector with room (`out` is in the
        // prune's order). Tried and not kept: the sector holding the most
        // neighbours (100K x 96, 10 cycles: 39.9 reads against 40.0).
        out[k].iter().find_map(|r| {
            let a = match *r {
                NodeRef::Old(s) => moved.get(&s).copied().unwrap_or(s),
                NodeRef::New(j) => slot[j as usize]?,
            };
            room(avail, a)
        })
    };
    // First every point with a neighbour's sector to go to, then the
    // orphans, then the rest (whose neighbours may have slots by then).
    for k in 0..out.len() {
        if let Some(s) = near(&avail, &slot, &moved, k) {
            avail.remove(&s);
            slot[k] = Some(s);
        }
    }
    if per_sector >= 2 {
        for (me, nbrs) in orphans {
            let own = me - me % per_sector;
            for &x in nbrs {
                let a = moved.get(&x).copied().unwrap_or(x);
                if a - a % per_sector == own {
                    // A neighbour has joined it: no orphan now.
                    break;
                }
                if let Some(s) = room(&avail, a) {
                    avail.remove(&s);
                    avail.insert(*me);
                    moved.insert(*me, s);
                    break;
                }
            }
        }
    }
    for k in 0..out.len() {
        if slot[k].is_none() {
            let s = near(&avail, &slot, &moved, k)
                .or_else(|| avail.first().copied())
                .expect("n_new leaves a slot for every new point");
            avail.remove(&s);
            slot[k] = Some(s);
        }
    }
    (slot.into_iter().map(|s| s.expect("every new point placed")).collect(), moved)
}

/// The exact vector (in the graph's space) of slot `x` if a new point holds it.
fn new_vector(
    x: u32,
    new_at: &FxHashMap<u32, u32>,
    frozen: &Delta,
    to_space: &impl Fn(&[f32]) -> Vec<f32>,
) -> Option<Vec<f32>> {
    new_at.get(&x).map(|&i| to_space(frozen.vector(i)))
}

/// One slot of the write pass.
struct SlotJob {
    slot: u32,
    /// The id the slot held in N.
    old_id: Option<ExternalId>,
    what: SlotWhat,
    /// Its edges (candidates until pruned).
    nbrs: Vec<u32>,
    /// Whether the edges must be re-pruned to R.
    prune: bool,
}

enum SlotWhat {
    /// A new point: the frozen delta's point.
    New(u32),
    /// A node kept from N, with its vector.
    Kept(Vec<f32>),
    /// A node kept from N that moved here (an orphan), with its vector,
    /// id and payload.
    Moved(Vec<f32>, ExternalId, Option<String>),
    /// A freed or still-free slot.
    Free,
}

/// RobustPrune of a node (vector `me`, in the graph's space) over `nbrs`,
/// scoring candidates by `vector_of` (exact, or PQ reconstructions past
/// the exact-vector budget). The candidates' vectors go into `buf`, one
/// row each, and the prune runs on row numbers: no lookups in its loop.
#[allow(clippy::too_many_arguments)]
fn prune_approx(
    me: &[f32],
    nbrs: &[u32],
    rule: PruneRule,
    scratch: &mut PruneScratch,
    buf: &mut Vec<f32>,
    out: &mut Vec<u32>,
    l2: &Distance<f32>,
    space_dim: usize,
    vector_of: impl Fn(u32) -> Vec<f32>,
) {
    buf.clear();
    for &x in nbrs {
        let v = vector_of(x);
        debug_assert_eq!(v.len(), space_dim);
        buf.extend_from_slice(&v);
    }
    let row = |k: u32| &buf[k as usize * space_dim..(k as usize + 1) * space_dim];
    let cands = (0..nbrs.len() as u32).map(|k| (k, l2.eval(me, row(k))));
    // The node itself is no row: u32::MAX stands for it.
    robust_prune_by(u32::MAX, cands, rule, scratch, out, |a, b| l2.eval(row(a), row(b)));
    for k in out.iter_mut() {
        *k = nbrs[*k as usize];
    }
}

/// A kept node of a packed generation that shares no edge (either way)
/// with the other live nodes of its sector: a sector read for it brings
/// nothing the search will use. Earlier merges leave such nodes behind
/// (their sector-mates deleted, or a new point placed where no neighbour
/// had room); the merge places them again beside their neighbours, as it
/// places new points. Tried and not kept (100K x 96, 10 cycles of 5%):
/// also moving nodes that share one edge, to a sector holding two of their
/// neighbours or more: 39.1 reads at cycle 10 against 39.0.
struct Orphan {
    slot: u32,
    /// Its vector (as stored) and its neighbours (N's numbering).
    vector: Vec<f32>,
    nbrs: Vec<u32>,
}

/// Finds orphans while N's records pass by in slot order, one sector's
/// records at a time, up to `max` (the lowest slots first: deterministic).
struct OrphanFinder {
    per_sector: u32,
    max: usize,
    sector: Vec<SectorRecord>,
    found: Vec<Orphan>,
}

/// A live node of the sector being read: slot, vector, neighbours, and
/// whether any neighbour is live.
type SectorRecord = (u32, Vec<f32>, Vec<u32>, bool);

impl OrphanFinder {
    fn new(per_sector: u32, max: usize) -> OrphanFinder {
        OrphanFinder { per_sector, max, sector: Vec::new(), found: Vec::new() }
    }

    fn wants(&self) -> bool {
        self.per_sector >= 2 && self.found.len() < self.max
    }

    /// The record of `slot` (slots in increasing order); `dead` tells the
    /// deleted and free slots.
    fn push(&mut self, slot: u32, v: Vec<f32>, nb: Vec<u32>, dead: &impl Fn(u32) -> bool) {
        if !self.wants() {
            return;
        }
        let base = |s: u32| s - s % self.per_sector;
        if self.sector.first().is_some_and(|f| base(f.0) != base(slot)) {
            self.flush();
        }
        if !dead(slot) {
            let live = nb.iter().any(|&x| !dead(x));
            self.sector.push((slot, v, nb, live));
        }
    }

    fn flush(&mut self) {
        let sector = std::mem::take(&mut self.sector);
        let orphan: Vec<bool> = sector
            .iter()
            .enumerate()
            .map(|(i, (slot, _, nbrs, _))| {
                !sector.iter().enumerate().any(|(j, (mate, _, mate_nbrs, _))| {
                    j != i && (nbrs.contains(mate) || mate_nbrs.contains(slot))
                })
            })
            .collect();
        for ((slot, vector, nbrs, live), o) in sector.into_iter().zip(orphan) {
            // A node with no live neighbour has nowhere to go.
            if o && live && self.found.len() < self.max {
                self.found.push(Orphan { slot, vector, nbrs });
            }
        }
    }

    fn finish(mut self) -> Vec<Orphan> {
        self.flush();
        self.found
    }
}

/// Reads N's graph records in slot order through a read-ahead buffer.
struct SeqRecords<'a> {
    g: &'a Generation,
    file: File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_at: u64,
    path: std::path::PathBuf,
}

impl<'a> SeqRecords<'a> {
    fn new(g: &'a Generation) -> Result<SeqRecords<'a>, CollectionError> {
        let path = g.gen_dir.join(GRAPH_FILE);
        let file = File::open(&path).map_err(io(&path, "open"))?;
        Ok(SeqRecords { g, file, buf: Vec::new(), buf_at: 0, path })
    }

    /// The vector and neighbours of `slot` (called in increasing order).
    fn next_record(&mut self, slot: u32) -> Result<(Vec<f32>, Vec<u32>), CollectionError> {
        let layout = self.g.index.layout();
        let at = layout.record_offset(slot);
        let len = layout.record_bytes as usize;
        if at < self.buf_at || at + len as u64 > self.buf_at + self.buf.len() as u64 {
            let start = at - at % SECTOR_BYTES as u64;
            let file_len = layout.file_bytes();
            let want = (READ_AHEAD_BYTES as u64)
                .max(len as u64 + SECTOR_BYTES as u64)
                .min(file_len - start);
            self.buf.resize(want as usize, 0);
            self.file.read_exact_at(&mut self.buf, start).map_err(io(&self.path, "read"))?;
            self.buf_at = start;
        }
        let off = (at - self.buf_at) as usize;
        decode_record(self.g, slot, &self.buf[off..off + len], &self.path)
    }
}

fn decode_record(
    g: &Generation,
    slot: u32,
    bytes: &[u8],
    path: &Path,
) -> Result<(Vec<f32>, Vec<u32>), CollectionError> {
    let layout = g.index.layout();
    let rec = layout
        .decode_record(slot, bytes, true)
        .map_err(|f| CollectionError::Corrupt(format!("{}: node {slot}: {f}", path.display())))?;
    let dim = g.index.dim();
    let v = crate::with_element!(g.index.element_type(), T => {
        let mut v = vec![T::default(); dim];
        rec.vector_into(&mut v);
        v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>()
    });
    Ok((v, rec.neighbors().collect()))
}

impl Generation {
    /// The vector and neighbours of `slot` (one read).
    pub fn read_record(&self, slot: u32) -> Result<(Vec<f32>, Vec<u32>), CollectionError> {
        let layout = self.index.layout();
        let mut buf = vec![0u8; layout.record_bytes as usize];
        let path = self.gen_dir.join(GRAPH_FILE);
        let f = File::open(&path).map_err(io(&path, "open"))?;
        f.read_exact_at(&mut buf, layout.record_offset(slot)).map_err(io(&path, "read"))?;
        decode_record(self, slot, &buf, &path)
    }
}

#[allow(dead_code)]
fn _element_used<T: Element>() {}

#[cfg(test)]
mod assign_tests {
    use super::*;

    /// Row order takes the free slots in ascending order, then appends;
    /// packed takes a free slot beside the nearest neighbour with room
    /// (an old node's sector, or a new point's once it has a slot), and
    /// the lowest slot left otherwise.
    #[test]
    fn slots_go_beside_neighbours_in_packed_generations() {
        use NodeRef::{New, Old};
        let free: BTreeSet<u32> = [3, 9, 14].into_iter().collect();
        let out =
            vec![vec![Old(13), Old(1)], vec![Old(5)], vec![New(0), Old(2)], vec![New(1), Old(6)]];
        assert_eq!(assign_slots(&free, 16, 17, 0, &out, &[]).0, vec![3, 9, 14, 16]);
        // 4 a sector: 14 is beside 13; 5's sector (4..8) has no room; New(0)
        // sits in sector 3 (full now), so 2's sector gives 3; point 1 takes
        // the lowest left (9), then point 3 finds sector 2 full and takes 16.
        assert_eq!(assign_slots(&free, 16, 17, 4, &out, &[]).0, vec![14, 9, 3, 16]);
    }

    /// Orphans move after the new points that found a neighbour's sector:
    /// each to the nearest neighbour's sector with room, freeing its slot
    /// for the new points placed last; one whose neighbour has joined its
    /// sector stays, as does one with no room anywhere near.
    #[test]
    fn orphans_move_beside_their_neighbours() {
        use NodeRef::Old;
        let free: BTreeSet<u32> = [2, 9].into_iter().collect();
        // New point 0 goes beside 1 (slot 2); new point 1 has no neighbour
        // sector with room and waits.
        let out = vec![vec![Old(1)], vec![Old(12)]];
        let orphans = vec![
            // 5 (sector 4..8): nearest 0 (sector full after point 0), then
            // 10 (sector 8..12, room at 9): moves to 9, frees 5.
            (5, vec![0, 10]),
            // 6: its neighbour 5 has left; 11's sector is full now; stays.
            (6, vec![5, 11]),
            // 13: neighbour 15 shares its sector: no orphan, stays.
            (13, vec![15, 9]),
        ];
        let (slots, moved) = assign_slots(&free, 16, 16, 4, &out, &orphans);
        assert_eq!(slots, vec![2, 5], "point 1 takes the slot the orphan freed");
        assert_eq!(moved.into_iter().collect::<Vec<_>>(), vec![(5, 9)]);
        // Row order: nothing moves.
        let (slots, moved) = assign_slots(&free, 16, 16, 0, &out, &orphans);
        assert_eq!(slots, vec![2, 9]);
        assert!(moved.is_empty());
    }
}
