//! Live collections: a directory holding generations of the disk index, the
//! WAL (`crate::wal`), the id map and payloads (`idmap.rs`, fjall), and the
//! delta index of fresh points (`delta.rs`). This file is the library API
//! the daemon and the CLI use: create/open, upsert and delete batches that
//! return once durable, get, count, scroll, search (disk generation +
//! deltas, tombstones filtered, merged by exact distance), stats, merge.
//!
//! Concurrency: writers append to the WAL concurrently (group commit) and
//! then apply their batch in LSN order (a sequencer), so memory always
//! reflects a prefix of the log; searches and gets take the state's read
//! lock; a merge takes the write lock only to freeze the delta and to
//! switch generations (`merge.rs`). One process opens a collection at a
//! time (`DIR/lock`, flock).
//!
//! ```text
//! DIR/collection   parameters (config.rs)        DIR/wal/       log segments
//! DIR/manifest     current generation + its LSN  DIR/meta/      id map, payloads
//! DIR/gen-N/       graph pq codes hot ids changes DIR/lock
//! ```

pub mod batch;
pub mod changes;
pub mod config;
pub mod delta;
pub mod filter;
pub mod filtered;
pub mod generation;
pub mod idfile;
pub mod idmap;
pub mod ids;
pub mod import;
pub mod merge;
pub mod pindex;
pub mod snapshot;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};
use rustc_hash::FxHashSet;

use self::batch::{BATCH_POINTS_MAX, BatchError, PAYLOAD_BYTES_MAX, UpsertPoint};
use self::config::{CONFIG_FILE, CollectionConfig};
use self::delta::{Delta, DeltaParams};
use self::generation::Generation;
use self::idmap::{Change, IdMap, IdMapError};
use self::ids::ExternalId;
use crate::distance::{Metric, normalize};
use crate::element::ElementType;
use crate::format::FormatError;
use crate::index::{CHANGES_FILE, IndexError, MANIFEST_FILE};
use crate::search::{OpenOptions, QueryStats, SearchError, SearchParams};
use crate::vecfile::NORM_SQUARED_MAX;
use crate::wal::{Lsn, RealFs, RecordKind, Wal, WalError, WalOptions};

pub const WAL_DIR: &str = "wal";
pub const META_DIR: &str = "meta";
pub const LOCK_FILE: &str = "lock";
/// A random id given at creation (16 hex digits): a replica checks it is
/// following the same collection, not one deleted and made again.
pub const UID_FILE: &str = "uid";
/// Longest a writer waits for the batches logged before it to be applied.
const SEQUENCE_WAIT_MAX: Duration = Duration::from_secs(60);
/// Points per page when scrolling, at most.
pub const SCROLL_LIMIT_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    IdMap(#[from] IdMapError),
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// Bad input: nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The delta is full and no merge made room in time: retry later.
    #[error("busy: {0}")]
    Busy(String),
    #[error("{0}")]
    Locked(String),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("the collection refuses writes until it is reopened: {0}")]
    Poisoned(String),
}

impl CollectionError {
    pub fn io(path: &Path, op: &'static str, source: std::io::Error) -> Self {
        CollectionError::Io { path: path.to_path_buf(), op, source }
    }
}

/// A point to upsert.
#[derive(Clone, Debug)]
pub struct PointIn {
    pub id: ExternalId,
    pub vector: Vec<f32>,
    /// A JSON object, or none.
    pub payload: Option<serde_json::Value>,
}

/// A write made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteAck {
    pub lsn: Lsn,
    /// Points written (upsert) or found and deleted (delete).
    pub points: usize,
}

/// One search hit.
#[derive(Clone, Debug)]
pub struct Hit {
    pub id: ExternalId,
    pub distance: f32,
    pub payload: Option<String>,
}

/// A point read back.
#[derive(Clone, Debug)]
pub struct PointOut {
    pub id: ExternalId,
    /// As stored (cosine: normalised).
    pub vector: Vec<f32>,
    pub payload: Option<String>,
}

/// What `stats` reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Stats {
    pub points: u64,
    pub generation: Option<u64>,
    pub generation_lsn: Lsn,
    pub disk_slots: u64,
    pub disk_free_slots: u64,
    pub tombstones: u64,
    pub delta_points: u64,
    pub delta_bytes: u64,
    pub frozen_delta_points: u64,
    pub merging: bool,
    pub last_lsn: Lsn,
    pub merges_done: u64,
    pub last_merge_error: Option<String>,
}

/// How to open a collection.
#[derive(Clone, Debug, Default)]
pub struct CollectionOptions {
    pub index: OpenOptions,
    /// Never start a background merge (tests and the CLI's one-shot
    /// commands merge explicitly).
    pub no_auto_merge: bool,
    /// Size at which the WAL starts a new segment (`None`: the WAL's
    /// `SEGMENT_BYTES_DEFAULT`). Segments wholly below the generation's LSN
    /// are removed after a merge, so this is also the removal granularity.
    pub wal_segment_bytes_max: Option<u64>,
    /// The filtered-search planner's cost model and limits.
    pub filter_tuning: filtered::FilterTuning,
}

/// Where a live point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Location {
    Active(u32),
    Frozen(u32),
    Disk(u32),
}

/// Everything a write changes, behind one lock.
pub(crate) struct State {
    pub(crate) generation: Option<Arc<Generation>>,
    pub(crate) active: Delta,
    pub(crate) frozen: Option<Arc<Delta>>,
    /// Disk slots of the generation whose point was deleted or replaced.
    pub(crate) tombstones: FxHashSet<u32>,
    /// While a merge runs: tombstones added since the freeze (they outlive
    /// the switch), and ids of frozen points deleted or replaced since.
    pub(crate) tombstones_since_freeze: Vec<u32>,
    pub(crate) frozen_deleted: Vec<ExternalId>,
    /// The frozen delta's last LSN and the tombstones at the freeze (the
    /// merge's deletes).
    pub(crate) frozen_lsn: Lsn,
    pub(crate) frozen_tombstones: FxHashSet<u32>,
    /// The generation's LSN: every record up to it is in the generation.
    pub(crate) generation_lsn: Lsn,
}

/// Merge bookkeeping.
#[derive(Default)]
pub(crate) struct MergeStatus {
    pub(crate) running: bool,
    pub(crate) done: u64,
    pub(crate) last_error: Option<String>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

/// An open collection. Thread-safe; used through `Arc`.
pub struct Collection {
    dir: PathBuf,
    config: CollectionConfig,
    wal: Wal,
    idmap: IdMap,
    opts: CollectionOptions,
    pub(crate) state: RwLock<State>,
    /// Highest LSN applied to memory, and its condition (the sequencer).
    applied: Mutex<Lsn>,
    applied_cv: Condvar,
    /// Signalled when a merge freezes or switches (room in the delta).
    room: Mutex<()>,
    room_cv: Condvar,
    pub(crate) merge: Mutex<MergeStatus>,
    /// One merge at a time (explicit or background).
    pub(crate) merge_lock: Mutex<()>,
    pub(crate) merge_progress: merge::PhaseProgress,
    poisoned: Mutex<Option<String>>,
    uid: u64,
    /// A standby's copy: its log is numbered by the primary, so its own
    /// merges do not log generation switches.
    follower: std::sync::atomic::AtomicBool,
    /// WAL records above this LSN are kept through merges (a standby has
    /// not flushed them yet); `u64::MAX`: nobody waits.
    wal_keep_after: std::sync::atomic::AtomicU64,
    _lock: File,
}

/// Reads `DIR/uid`, writing a new one if there is none.
fn read_or_make_uid(dir: &Path) -> Result<u64, CollectionError> {
    let path = dir.join(UID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => u64::from_str_radix(t.trim(), 16).map_err(|_| {
            CollectionError::Corrupt(format!("{}: not 16 hex digits", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let uid: u64 = rand::random();
            let (pending, mut f) = crate::fsutil::PendingFile::create(&path)
                .map_err(|e| CollectionError::io(&path, "create", e))?;
            std::io::Write::write_all(&mut f, format!("{uid:016x}\n").as_bytes())
                .map_err(|e| CollectionError::io(&path, "write", e))?;
            pending.commit(f).map_err(|e| CollectionError::io(&path, "commit", e))?;
            Ok(uid)
        }
        Err(e) => Err(CollectionError::io(&path, "read", e)),
    }
}

fn delta_params(c: &CollectionConfig) -> DeltaParams {
    DeltaParams {
        dim: c.dim as usize,
        metric: c.metric,
        degree_max: c.degree_max,
        list_size: c.list_size,
        alpha: c.alpha,
    }
}

/// Takes the collection's process lock, or says who holds it.
fn lock_dir(dir: &Path) -> Result<File, CollectionError> {
    let path = dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| CollectionError::io(&path, "open", e))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
        CollectionError::Locked(format!(
            "{}: the collection is open in another process (it holds {})",
            dir.display(),
            path.display()
        ))
    })?;
    Ok(f)
}

/// Checks a vector against the collection's shape and element type and
/// prepares it (cosine: normalised).
pub fn check_vector(
    c: &CollectionConfig,
    v: &[f32],
    what: &str,
) -> Result<Vec<f32>, CollectionError> {
    if v.len() != c.dim as usize {
        return Err(CollectionError::Invalid(format!(
            "{what}: dimension {} does not match the collection's {}",
            v.len(),
            c.dim
        )));
    }
    for (i, &x) in v.iter().enumerate() {
        c.element
            .check_f32(x)
            .map_err(|why| CollectionError::Invalid(format!("{what}: value {i} is {x}: {why}")))?;
    }
    let norm_sq: f64 = v.iter().map(|&x| f64::from(x).powi(2)).sum();
    if norm_sq > NORM_SQUARED_MAX {
        return Err(CollectionError::Invalid(format!(
            "{what}: squared norm {norm_sq:e} is over {NORM_SQUARED_MAX:e} (NORM_SQUARED_MAX)"
        )));
    }
    let mut out = v.to_vec();
    if c.metric == Metric::Cosine {
        if norm_sq == 0.0 {
            return Err(CollectionError::Invalid(format!("{what}: a zero vector has no cosine")));
        }
        normalize(&mut out);
    }
    Ok(out)
}

/// The element bytes of a checked vector.
fn element_bytes(element: ElementType, v: &[f32]) -> Vec<u8> {
    match element {
        ElementType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ElementType::U8 => v.iter().map(|&x| x as u8).collect(),
        ElementType::I8 => v.iter().map(|&x| x as i8 as u8).collect(),
    }
}

/// The f32 vector of element bytes (from the WAL).
fn bytes_to_f32(element: ElementType, b: &[u8]) -> Vec<f32> {
    match element {
        ElementType::F32 => {
            b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
        }
        ElementType::U8 => b.iter().map(|&x| f32::from(x)).collect(),
        ElementType::I8 => b.iter().map(|&x| f32::from(x as i8)).collect(),
    }
}

impl Collection {
    /// Creates an empty collection at `dir` (absent or an empty directory).
    pub fn create(dir: &Path, config: &CollectionConfig) -> Result<(), CollectionError> {
        config.validate().map_err(CollectionError::Invalid)?;
        if dir.exists() {
            let mut it = std::fs::read_dir(dir).map_err(|e| CollectionError::io(dir, "list", e))?;
            if it.next().is_some() {
                return Err(CollectionError::Invalid(format!(
                    "{}: exists and is not empty; a collection is created in a new directory",
                    dir.display()
                )));
            }
        } else {
            std::fs::create_dir_all(dir).map_err(|e| CollectionError::io(dir, "create", e))?;
        }
        write_config(dir, config)?;
        read_or_make_uid(dir)?;
        Ok(())
    }

    /// Opens the collection at `dir`: its generation, the id map (caught up
    /// to the generation), and the WAL replayed into the delta.
    pub fn open(dir: &Path, opts: CollectionOptions) -> Result<Arc<Collection>, CollectionError> {
        let lock = lock_dir(dir)?;
        let (config, adopted) = read_or_adopt_config(dir)?;
        let uid = read_or_make_uid(dir)?;
        let manifest = match std::fs::symlink_metadata(dir.join(MANIFEST_FILE)) {
            Ok(_) => Some(crate::index::read_manifest(dir)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(CollectionError::io(&dir.join(MANIFEST_FILE), "stat", e)),
        };
        if let Some(m) = &manifest
            && (m.dim != config.dim || m.metric != config.metric || m.element != config.element)
        {
            {
                return Err(CollectionError::Corrupt(format!(
                    "{}: the generation's shape ({} {:?} {:?}) is not the collection's ({} {:?} {:?})",
                    dir.display(),
                    m.dim,
                    m.metric,
                    m.element,
                    config.dim,
                    config.metric,
                    config.element
                )));
            }
        }
        merge::remove_stale(dir, manifest.as_ref().map(|m| m.generation))?;
        let generation = match &manifest {
            Some(_) => Some(Arc::new(Generation::open(dir, &opts.index)?)),
            None => None,
        };
        let idmap = IdMap::open(&dir.join(META_DIR))?;
        catch_up_map(&idmap, generation.as_deref(), adopted)?;
        if adopted {
            // Written once the id map is caught up: a crash before this
            // adopts the index again from scratch.
            write_config(dir, &config)?;
        }
        let generation_lsn = manifest.as_ref().map_or(0, |m| m.lsn);
        let state = State {
            generation,
            active: Delta::new(delta_params(&config)),
            frozen: None,
            tombstones: FxHashSet::default(),
            tombstones_since_freeze: Vec::new(),
            frozen_deleted: Vec::new(),
            frozen_lsn: 0,
            frozen_tombstones: FxHashSet::default(),
            generation_lsn,
        };
        let mut wal_opts = WalOptions { durability: config.durability(), ..WalOptions::default() };
        if let Some(b) = opts.wal_segment_bytes_max {
            wal_opts.segment_bytes_max = b;
        }
        let mut st = state;
        let mut replay_err: Option<CollectionError> = None;
        let (wal, _recovery) =
            Wal::open(Arc::new(RealFs), &dir.join(WAL_DIR), wal_opts, generation_lsn, |rec| {
                if replay_err.is_none()
                    && let Err(e) = apply_record(&config, &idmap, &mut st, rec.kind, &rec.body)
                {
                    replay_err = Some(e);
                }
                Ok(())
            })?;
        if let Some(e) = replay_err {
            return Err(e);
        }
        if wal.last_lsn() < generation_lsn {
            return Err(CollectionError::Corrupt(format!(
                "{}: the WAL ends at LSN {} before the generation's LSN {generation_lsn}",
                dir.display(),
                wal.last_lsn()
            )));
        }
        let last = wal.last_lsn();
        Ok(Arc::new(Collection {
            dir: dir.to_path_buf(),
            config,
            wal,
            idmap,
            opts,
            state: RwLock::new(st),
            applied: Mutex::new(last),
            applied_cv: Condvar::new(),
            room: Mutex::new(()),
            room_cv: Condvar::new(),
            merge: Mutex::new(MergeStatus::default()),
            merge_lock: Mutex::new(()),
            merge_progress: merge::PhaseProgress::default(),
            poisoned: Mutex::new(None),
            uid,
            follower: std::sync::atomic::AtomicBool::new(false),
            wal_keep_after: std::sync::atomic::AtomicU64::new(u64::MAX),
            _lock: lock,
        }))
    }

    /// Waits for a background merge to finish, then drops the collection.
    pub fn close(self: Arc<Self>) {
        let t = self.merge.lock().thread.take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    /// Makes every acknowledged write durable (with `durability: none`
    /// they may still be in the page cache; with `fsync` they already are).
    pub fn sync(&self) -> Result<(), CollectionError> {
        Ok(self.wal.sync()?)
    }

    /// How long the WAL's flush in progress has taken (the watchdog's
    /// check that writes make progress).
    pub fn wal_flush_age(&self) -> Option<Duration> {
        self.wal.flush_age()
    }

    /// Fraction done of the running merge's current phase (0 when idle).
    pub fn merge_progress(&self) -> f64 {
        self.merge_progress.ratio()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &CollectionConfig {
        &self.config
    }

    pub(crate) fn wal(&self) -> &Wal {
        &self.wal
    }

    /// The collection's random id (see [`UID_FILE`]).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// The WAL directory (the replication shipper reads it).
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join(WAL_DIR)
    }

    /// The last durable LSN.
    pub fn last_lsn(&self) -> Lsn {
        self.wal.last_lsn()
    }

    /// LSN of the oldest record the WAL still holds (0: none).
    pub fn first_lsn(&self) -> Lsn {
        self.wal.segments().first().copied().unwrap_or(0)
    }

    /// Marks the collection as a standby's copy (or a primary's again).
    pub fn set_follower(&self, on: bool) {
        self.follower.store(on, std::sync::atomic::Ordering::Release);
    }

    pub fn is_follower(&self) -> bool {
        self.follower.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Keeps WAL records above `lsn` through merges (`u64::MAX`: none).
    pub fn keep_wal_after(&self, lsn: Lsn) {
        self.wal_keep_after.store(lsn, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn wal_keep_after(&self) -> Lsn {
        self.wal_keep_after.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Bytes of WAL segments holding records above `lsn`.
    pub fn wal_bytes_after(&self, lsn: Lsn) -> u64 {
        let firsts = self.wal.segments();
        let dir = self.wal_dir();
        let mut total = 0;
        for (i, &first) in firsts.iter().enumerate() {
            let last = firsts.get(i + 1).map_or(u64::MAX, |n| n - 1);
            if last > lsn {
                let name = dir.join(format!("{first:020}.seg"));
                total += std::fs::metadata(&name).map_or(0, |m| m.len());
            }
        }
        total
    }

    /// Logs and applies records received from the primary (one flush for
    /// all), numbered by its log: the first must follow this log's last.
    /// Returns the last LSN, durable and applied.
    pub fn apply_replicated(
        self: &Arc<Self>,
        records: &[crate::wal::Record],
    ) -> Result<Lsn, CollectionError> {
        self.check_writable()?;
        let last = self.wal.append_replicated(records)?;
        for r in records {
            self.apply_in_order(r.lsn, r.kind, &r.body)?;
        }
        self.maybe_merge();
        Ok(last)
    }

    pub(crate) fn idmap(&self) -> &IdMap {
        &self.idmap
    }

    pub(crate) fn open_options(&self) -> &CollectionOptions {
        &self.opts
    }

    pub(crate) fn poison(&self, why: String) {
        *self.poisoned.lock() = Some(why);
    }

    fn check_writable(&self) -> Result<(), CollectionError> {
        if let Some(p) = self.poisoned.lock().clone() {
            return Err(CollectionError::Poisoned(p));
        }
        Ok(())
    }

    /// Upserts a batch: returns once it is durable (and visible).
    pub fn upsert(self: &Arc<Self>, points: &[PointIn]) -> Result<WriteAck, CollectionError> {
        self.check_writable()?;
        if points.is_empty() || points.len() > BATCH_POINTS_MAX {
            return Err(CollectionError::Invalid(format!(
                "a batch holds 1..={BATCH_POINTS_MAX} points (BATCH_POINTS_MAX), not {}",
                points.len()
            )));
        }
        let c = &self.config;
        let mut ups = Vec::with_capacity(points.len());
        let mut need = 0usize;
        for (i, p) in points.iter().enumerate() {
            let v = check_vector(c, &p.vector, &format!("point {i} ({})", p.id))?;
            let payload = match &p.payload {
                None => None,
                Some(serde_json::Value::Object(m)) => {
                    let s = serde_json::to_string(m).expect("JSON serialises");
                    if s.len() > PAYLOAD_BYTES_MAX {
                        return Err(CollectionError::Invalid(format!(
                            "point {i} ({}): payload of {} bytes exceeds PAYLOAD_BYTES_MAX ({PAYLOAD_BYTES_MAX})",
                            p.id,
                            s.len()
                        )));
                    }
                    Some(s)
                }
                Some(_) => {
                    return Err(CollectionError::Invalid(format!(
                        "point {i} ({}): a payload is a JSON object",
                        p.id
                    )));
                }
            };
            need += Delta::point_bytes(&delta_params(c), payload.as_ref().map_or(0, |s| s.len()));
            ups.push(UpsertPoint {
                id: p.id.clone(),
                vector: element_bytes(c.element, &v),
                payload,
            });
        }
        let body = batch::encode_upsert(c.element, c.dim as usize, &ups)?;
        self.wait_for_room(need as u64)?;
        let lsn = self.wal.append(RecordKind::UpsertBatch, &body)?;
        self.apply_in_order(lsn, RecordKind::UpsertBatch, &body)?;
        self.maybe_merge();
        Ok(WriteAck { lsn, points: points.len() })
    }

    /// Deletes the points of `ids` (ids not present are no error): returns
    /// once durable, with the number found.
    pub fn delete(self: &Arc<Self>, ids: &[ExternalId]) -> Result<WriteAck, CollectionError> {
        self.check_writable()?;
        if ids.is_empty() || ids.len() > BATCH_POINTS_MAX {
            return Err(CollectionError::Invalid(format!(
                "a batch holds 1..={BATCH_POINTS_MAX} ids (BATCH_POINTS_MAX), not {}",
                ids.len()
            )));
        }
        let body = batch::encode_delete(ids)?;
        let found = {
            let st = self.state.read();
            ids.iter().filter(|id| self.locate(&st, id).ok().flatten().is_some()).count()
        };
        let lsn = self.wal.append(RecordKind::DeleteBatch, &body)?;
        self.apply_in_order(lsn, RecordKind::DeleteBatch, &body)?;
        self.maybe_merge();
        Ok(WriteAck { lsn, points: found })
    }

    /// Logs a record and applies it in order (the write path's two steps).
    pub(crate) fn append_and_apply(
        &self,
        kind: RecordKind,
        body: &[u8],
    ) -> Result<Lsn, CollectionError> {
        let lsn = self.wal.append(kind, body)?;
        self.apply_in_order(lsn, kind, body)?;
        Ok(lsn)
    }

    /// Applies a logged record once every earlier one is applied, so memory
    /// always reflects a prefix of the log (replay gives the same state).
    fn apply_in_order(
        &self,
        lsn: Lsn,
        kind: RecordKind,
        body: &[u8],
    ) -> Result<(), CollectionError> {
        let deadline = Instant::now() + SEQUENCE_WAIT_MAX;
        let mut applied = self.applied.lock();
        while *applied + 1 != lsn {
            if self.applied_cv.wait_until(&mut applied, deadline).timed_out() {
                let why = format!(
                    "record {lsn} waited {SEQUENCE_WAIT_MAX:?} for record {}",
                    *applied + 1
                );
                self.poison(why.clone());
                return Err(CollectionError::Poisoned(why));
            }
        }
        let r = self.apply_live(kind, body);
        if let Err(e) = &r {
            // Logged but not applied: memory no longer matches the log.
            self.poison(format!("applying logged record {lsn}: {e}"));
        }
        *applied = lsn;
        self.applied_cv.notify_all();
        r
    }

    /// [`apply_record`] for a live write: an upsert's graph work is planned
    /// under the read lock (a few points at a time, in parallel) and
    /// committed point by point under the write lock, so searches run beside a batch's insertion (and may see part
    /// of a batch not yet acknowledged, never a point half inserted). The
    /// caller holds the sequencer, so no other apply or freeze intervenes.
    fn apply_live(&self, kind: RecordKind, body: &[u8]) -> Result<(), CollectionError> {
        if kind != RecordKind::UpsertBatch {
            return apply_record(&self.config, &self.idmap, &mut self.state.write(), kind, body);
        }
        let (element, points) = decode_upsert_checked(&self.config, body)?;
        let mut points = points.into_iter();
        loop {
            let group: Vec<_> = points.by_ref().take(delta::PLAN_GROUP_POINTS).collect();
            if group.is_empty() {
                return Ok(());
            }
            let vs: Vec<Vec<f32>> =
                group.iter().map(|p| bytes_to_f32(element, &p.vector)).collect();
            let refs: Vec<&[f32]> = vs.iter().map(Vec::as_slice).collect();
            let plans = self.state.read().active.plan_inserts(&refs);
            for ((p, v), plan) in group.into_iter().zip(&vs).zip(plans) {
                let mut st = self.state.write();
                remove_live(&self.idmap, &mut st, &p.id)?;
                st.active.commit_insert(p.id, v, p.payload, plan);
            }
        }
    }

    /// Waits (bounded) until the active delta has room for `need` bytes.
    fn wait_for_room(self: &Arc<Self>, need: u64) -> Result<(), CollectionError> {
        let max = self.config.delta_bytes_max;
        if need > max {
            return Err(CollectionError::Invalid(format!(
                "a batch of {need} bytes in memory exceeds delta_bytes_max ({max}): send smaller batches"
            )));
        }
        let deadline = Instant::now() + Duration::from_millis(self.config.write_wait_ms_max);
        loop {
            let used = self.state.read().active.bytes() as u64;
            if used + need <= max {
                return Ok(());
            }
            self.start_merge();
            let mut g = self.room.lock();
            if self
                .room_cv
                .wait_until(&mut g, deadline.min(Instant::now() + Duration::from_millis(100)))
                .timed_out()
                && Instant::now() >= deadline
            {
                return Err(CollectionError::Busy(format!(
                    "the delta holds {used} of delta_bytes_max {max} bytes and no merge made room in {} ms",
                    self.config.write_wait_ms_max
                )));
            }
        }
    }

    pub(crate) fn signal_room(&self) {
        let _g = self.room.lock();
        self.room_cv.notify_all();
    }

    /// Starts a background merge when a threshold is passed.
    fn maybe_merge(self: &Arc<Self>) {
        if self.opts.no_auto_merge || !self.config.auto_merge {
            return;
        }
        if self.merge_due() {
            self.start_merge();
        }
    }

    /// Whether a threshold for a background merge is passed.
    fn merge_due(&self) -> bool {
        let st = self.state.read();
        st.active.len() as u64 >= self.config.delta_points_merge
            || st.tombstones.len() as u64 >= self.config.tombstones_merge
    }

    /// Starts a background merge unless one runs.
    fn start_merge(self: &Arc<Self>) {
        if self.opts.no_auto_merge || !self.config.auto_merge {
            return;
        }
        let mut m = self.merge.lock();
        if m.running {
            return;
        }
        m.running = true;
        if let Some(t) = m.thread.take() {
            let _ = t.join();
        }
        let me = Arc::clone(self);
        m.thread = Some(std::thread::spawn(move || {
            // Writes that arrive during a merge only queue up: when it is
            // done, merge again while a threshold is still passed (a failed
            // merge stops here; the next write retries it).
            loop {
                let r = me.merge_now(&merge::NoProgress);
                let mut m = me.merge.lock();
                let failed = r.is_err();
                match r {
                    Ok(_) => m.last_error = None,
                    Err(e) => m.last_error = Some(e.to_string()),
                }
                // Checked under the merge lock: a writer that found us
                // running has already applied its points, so they count here.
                if failed || !me.merge_due() {
                    m.running = false;
                    break;
                }
            }
        }));
    }

    /// Where the live point `id` is.
    fn locate(&self, st: &State, id: &ExternalId) -> Result<Option<Location>, CollectionError> {
        locate(&self.idmap, st, id)
    }

    /// The point `id`, if live.
    pub fn get(&self, id: &ExternalId) -> Result<Option<PointOut>, CollectionError> {
        self.get_with(id, true)
    }

    /// The point `id`, if live; its vector only if `with_vector` (a disk
    /// point's vector is a read), else empty.
    pub fn get_with(
        &self,
        id: &ExternalId,
        with_vector: bool,
    ) -> Result<Option<PointOut>, CollectionError> {
        let st = self.state.read();
        Ok(match self.locate(&st, id)? {
            None => None,
            Some(Location::Active(i)) => Some(delta_point(&st.active, i)),
            Some(Location::Frozen(i)) => {
                Some(delta_point(st.frozen.as_ref().expect("located in the frozen delta"), i))
            }
            Some(Location::Disk(slot)) => {
                let g = st.generation.as_ref().expect("located on disk");
                Some(PointOut {
                    id: id.clone(),
                    vector: if with_vector { g.read_vector(slot)? } else { Vec::new() },
                    payload: self.idmap.payload(id)?,
                })
            }
        })
    }

    /// Live points.
    pub fn count(&self) -> u64 {
        let st = self.state.read();
        count(&st)
    }

    /// Up to `limit` live ids in order after `after` (a cursor: the last id
    /// of the previous page). Numbers first, in numeric order, then strings.
    pub fn scroll(
        &self,
        after: Option<&ExternalId>,
        limit: usize,
    ) -> Result<Vec<ExternalId>, CollectionError> {
        if limit == 0 || limit > SCROLL_LIMIT_MAX {
            return Err(CollectionError::Invalid(format!(
                "limit {limit} outside 1..={SCROLL_LIMIT_MAX} (SCROLL_LIMIT_MAX)"
            )));
        }
        let st = self.state.read();
        let key_after = after.map(idmap::key);
        let mut delta_ids: Vec<(Vec<u8>, ExternalId)> = st
            .active
            .live_ids()
            .map(|(e, _)| e)
            .chain(st.frozen.iter().flat_map(|f| f.live_ids().map(|(e, _)| e)))
            .map(|e| (idmap::key(e), e.clone()))
            .filter(|(k, _)| key_after.as_ref().is_none_or(|a| k > a))
            .collect();
        delta_ids.sort();
        delta_ids.truncate(limit);
        let mut disk: Vec<(Vec<u8>, ExternalId)> = Vec::new();
        let mut cursor = after.cloned();
        while disk.len() < limit {
            let page = self.idmap.scroll(cursor.as_ref(), limit)?;
            let Some(last) = page.last() else { break };
            cursor = Some(last.0.clone());
            for (e, slot) in page {
                // A disk entry is live unless tombstoned or superseded by a delta point.
                if !st.tombstones.contains(&slot)
                    && self.locate(&st, &e)? == Some(Location::Disk(slot))
                {
                    disk.push((idmap::key(&e), e));
                }
            }
        }
        let mut all = delta_ids;
        all.extend(disk);
        all.sort();
        all.dedup_by(|a, b| a.0 == b.0);
        all.truncate(limit);
        Ok(all.into_iter().map(|(_, e)| e).collect())
    }

    /// The `params.k` nearest live points to `query` that pass `filter`:
    /// the disk generation (tombstones walked, never returned) and the
    /// deltas, merged by exact distance (`filtered.rs` plans a filtered one).
    pub fn search(
        &self,
        query: &[f32],
        params: &SearchParams,
        with_payload: bool,
        filter: Option<&filter::Filter>,
    ) -> Result<Vec<Hit>, CollectionError> {
        Ok(self.search_stats(query, params, with_payload, filter)?.0)
    }

    /// [`Self::search`], with what the disk part of the search cost.
    pub fn search_stats(
        &self,
        query: &[f32],
        params: &SearchParams,
        with_payload: bool,
        filter: Option<&filter::Filter>,
    ) -> Result<(Vec<Hit>, QueryStats), CollectionError> {
        let (hits, stats, _) =
            self.search_filtered(query, params, with_payload, filter, filtered::FilterMode::Auto)?;
        Ok((hits, stats))
    }

    /// Makes a payload index of `field` (logged, so a replay and a standby
    /// make it too); returns its LSN. Building it reads every point on
    /// disk's payload under the write lock: searches wait for it.
    pub fn create_payload_index(
        self: &Arc<Self>,
        field: &str,
        schema: pindex::Schema,
    ) -> Result<WriteAck, CollectionError> {
        self.check_writable()?;
        pindex::check_field(field)
            .map_err(|e| CollectionError::Invalid(format!("field_name: {e}")))?;
        let defs = self.idmap.indexes();
        if defs.len() >= pindex::INDEXES_MAX && !defs.iter().any(|(f, _)| f == field) {
            return Err(CollectionError::Invalid(format!(
                "a collection has at most {} payload indexes (INDEXES_MAX)",
                pindex::INDEXES_MAX
            )));
        }
        let body =
            serde_json::to_vec(&serde_json::json!({"field": field, "schema": schema.name()}))
                .expect("JSON");
        let lsn = self.append_and_apply(RecordKind::PayloadIndex, &body)?;
        Ok(WriteAck { lsn, points: 0 })
    }

    /// Removes the payload index of `field` (logged).
    pub fn drop_payload_index(self: &Arc<Self>, field: &str) -> Result<WriteAck, CollectionError> {
        self.check_writable()?;
        let body =
            serde_json::to_vec(&serde_json::json!({"field": field, "schema": null})).expect("JSON");
        let lsn = self.append_and_apply(RecordKind::PayloadIndex, &body)?;
        Ok(WriteAck { lsn, points: 0 })
    }

    /// The payload indexes: field, schema, and entries (counted up to `cap`).
    pub fn payload_indexes(
        &self,
        cap: usize,
    ) -> Result<Vec<(String, pindex::Schema, usize)>, CollectionError> {
        let mut out = Vec::new();
        for (f, s) in self.idmap.indexes() {
            let n = self.idmap.index_entries(&f, cap)?;
            out.push((f, s, n));
        }
        Ok(out)
    }

    pub fn stats(&self) -> Stats {
        let st = self.state.read();
        let m = self.merge.lock();
        Stats {
            points: count(&st),
            generation: st.generation.as_ref().map(|g| g.ident.generation),
            generation_lsn: st.generation_lsn,
            disk_slots: st.generation.as_ref().map_or(0, |g| g.slots()),
            disk_free_slots: st.generation.as_ref().map_or(0, |g| g.free_slots()),
            tombstones: st.tombstones.len() as u64,
            delta_points: st.active.live() as u64,
            delta_bytes: st.active.bytes() as u64,
            frozen_delta_points: st.frozen.as_ref().map_or(0, |f| f.live() as u64),
            merging: m.running || st.frozen.is_some(),
            last_lsn: self.wal.last_lsn(),
            merges_done: m.done,
            last_merge_error: m.last_error.clone(),
        }
    }
}

fn delta_point(d: &Delta, i: u32) -> PointOut {
    let p = d.point(i);
    PointOut { id: p.id.clone(), vector: d.vector(i).to_vec(), payload: p.payload.clone() }
}

fn count(st: &State) -> u64 {
    let disk = st.generation.as_ref().map_or(0, |g| g.slots() - g.free_slots());
    let frozen = st.frozen.as_ref().map_or(0, |f| f.live() as u64);
    disk - st.tombstones.len() as u64 + st.active.live() as u64 + frozen
        - st.frozen_deleted.len() as u64
}

fn locate(idmap: &IdMap, st: &State, id: &ExternalId) -> Result<Option<Location>, CollectionError> {
    if let Some(i) = st.active.find(id) {
        return Ok(Some(Location::Active(i)));
    }
    if let Some(f) = &st.frozen
        && let Some(i) = f.find(id)
    {
        return Ok(Some(Location::Frozen(i)));
    }
    if st.generation.is_some()
        && let Some(slot) = idmap.get(id)?
        && !st.tombstones.contains(&slot)
    {
        return Ok(Some(Location::Disk(slot)));
    }
    Ok(None)
}

/// Removes the live point `id` wherever it is (a delete, or the old point
/// of an upsert). Returns whether there was one.
fn remove_live(idmap: &IdMap, st: &mut State, id: &ExternalId) -> Result<bool, CollectionError> {
    match locate(idmap, st, id)? {
        None => Ok(false),
        Some(Location::Active(_)) => Ok(st.active.delete(id)),
        Some(Location::Frozen(_)) => {
            let f = st.frozen.as_ref().expect("located in the frozen delta");
            f.mark_deleted(id);
            st.frozen_deleted.push(id.clone());
            Ok(true)
        }
        Some(Location::Disk(slot)) => {
            st.tombstones.insert(slot);
            if st.frozen.is_some() {
                st.tombstones_since_freeze.push(slot);
            }
            Ok(true)
        }
    }
}

/// A logged upsert batch, refused if its vectors do not fit the collection.
fn decode_upsert_checked(
    c: &CollectionConfig,
    body: &[u8],
) -> Result<(ElementType, Vec<UpsertPoint>), CollectionError> {
    let (element, dim, points) = batch::decode_upsert(body)?;
    if element != c.element || dim != c.dim as usize {
        return Err(CollectionError::Corrupt(format!(
            "a logged upsert of {dim}-d {element:?} vectors in a {}-d {:?} collection",
            c.dim, c.element
        )));
    }
    Ok((element, points))
}

/// Applies one logged record to memory (replay; live writes go through
/// `Collection::apply_live`, which does the same in smaller steps).
fn apply_record(
    c: &CollectionConfig,
    idmap: &IdMap,
    st: &mut State,
    kind: RecordKind,
    body: &[u8],
) -> Result<(), CollectionError> {
    match kind {
        RecordKind::UpsertBatch => {
            let (element, points) = decode_upsert_checked(c, body)?;
            for p in points {
                remove_live(idmap, st, &p.id)?;
                let v = bytes_to_f32(element, &p.vector);
                st.active.insert(p.id, &v, p.payload);
            }
        }
        RecordKind::DeleteBatch => {
            for id in batch::decode_delete(body)? {
                remove_live(idmap, st, &id)?;
            }
        }
        RecordKind::PayloadIndex => {
            let v: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| CollectionError::Corrupt(format!("payload index record: {e}")))?;
            let field = v["field"].as_str().ok_or_else(|| {
                CollectionError::Corrupt("payload index record without a field".into())
            })?;
            match v["schema"].as_str() {
                None => {
                    idmap.drop_index(field)?;
                }
                Some(s) => {
                    let schema = pindex::Schema::parse(s).ok_or_else(|| {
                        CollectionError::Corrupt(format!("payload index record: schema {s:?}"))
                    })?;
                    idmap.create_index(field, schema)?;
                }
            }
        }
        RecordKind::GenerationSwitch => {
            // The manifest says which generation is current; the record is
            // for followers of the log. Checked, so a damaged one is seen.
            batch::decode_switch(body)?;
        }
    }
    Ok(())
}

/// Writes `DIR/collection` durably.
pub(crate) fn write_config(dir: &Path, c: &CollectionConfig) -> Result<(), CollectionError> {
    let path = dir.join(CONFIG_FILE);
    let (pending, mut f) = crate::fsutil::PendingFile::create(&path)
        .map_err(|e| CollectionError::io(&path, "create", e))?;
    std::io::Write::write_all(&mut f, &c.encode())
        .map_err(|e| CollectionError::io(&path, "write", e))?;
    pending.commit(f).map_err(|e| CollectionError::io(&path, "commit", e))?;
    Ok(())
}

/// Reads `DIR/collection`; an index made by `basalt build` (a manifest and
/// no collection file) is adopted with parameters from its manifest (the
/// `true`: the caller writes the file once the id map is made).
fn read_or_adopt_config(dir: &Path) -> Result<(CollectionConfig, bool), CollectionError> {
    let path = dir.join(CONFIG_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok((CollectionConfig::decode(&path, &b)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let m = crate::index::read_manifest(dir).map_err(|_| {
                CollectionError::Invalid(format!(
                    "{}: no collection here (neither a collection file nor an index manifest)",
                    dir.display()
                ))
            })?;
            let mut c = CollectionConfig::new(m.dim, m.metric, m.element);
            c.degree_max = m.build.degree_max;
            c.list_size = m.build.list_size;
            c.alpha = m.build.alpha;
            c.pq_chunks = m.build.pq_chunks;
            c.seed = m.build.seed;
            c.validate().map_err(CollectionError::Invalid)?;
            Ok((c, true))
        }
        Err(e) => Err(CollectionError::io(&path, "read", e)),
    }
}

/// Brings the id map to the generation: its `changes` file when the map is
/// at the generation before, or every row (an index made by `basalt build`
/// being `adopted`, whose ids are its row numbers: node = row, or a packed
/// build's ids file).
fn catch_up_map(
    idmap: &IdMap,
    g: Option<&Generation>,
    adopted: bool,
) -> Result<(), CollectionError> {
    let applied = idmap.applied()?;
    let Some(g) = g else {
        if applied.is_some() {
            return Err(CollectionError::Corrupt(
                "the id map reflects a generation, but the collection has none".into(),
            ));
        }
        return Ok(());
    };
    if applied == Some(g.ident) {
        return Ok(());
    }
    if g.index.manifest().entry(CHANGES_FILE).is_some() {
        let path = g.gen_dir.join(CHANGES_FILE);
        let b = std::fs::read(&path).map_err(|e| CollectionError::io(&path, "read", e))?;
        let ch = changes::decode(&path, &b)?;
        if ch.ident != g.ident {
            return Err(FormatError::Foreign { path, found: ch.ident, expected: g.ident }.into());
        }
        if ch.base != applied {
            return Err(CollectionError::Corrupt(format!(
                "the id map reflects {:?}, but generation {} applies on top of {:?}",
                applied, g.ident, ch.base
            )));
        }
        idmap.apply(&ch.changes, g.ident)?;
        return Ok(());
    }
    if applied.is_some() || (g.ids.is_some() && !adopted) {
        return Err(CollectionError::Corrupt(format!(
            "the id map reflects {applied:?}, and generation {} has no changes to catch it up",
            g.ident
        )));
    }
    // An index built by `basalt build`: external id = row number (a packed
    // build's ids file maps its nodes to rows).
    let n = g.slots();
    let mut chunk = Vec::with_capacity(idmap::APPLY_BATCH_CHANGES);
    let mut scan = g.ids.as_ref().map(|f| f.scan());
    for slot in 0..n {
        let id = match scan.as_mut() {
            Some(it) => it.next().transpose()?.flatten().ok_or_else(|| {
                CollectionError::Corrupt(format!("generation {}: node {slot} has no id", g.ident))
            })?,
            None => ExternalId::Num(slot),
        };
        chunk.push(Change::Put { id, slot: slot as u32, payload: None });
        if chunk.len() == idmap::APPLY_BATCH_CHANGES {
            idmap.apply_chunk(&chunk)?;
            chunk.clear();
        }
    }
    idmap.apply_chunk(&chunk)?;
    idmap.set_applied(g.ident)?;
    Ok(())
}

#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod tests;
