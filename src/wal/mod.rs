//! The write-ahead log: every upsert and delete batch is a record here,
//! durable before it is acknowledged, replayed on open from the LSN the
//! current disk generation includes, and streamed to the standby later.
//!
//! ```text
//! wal/{first_lsn:020}.seg    one segment: header, then records
//!   header (32 B): magic "BASALTWL" | version u32 (1) | reserved u32 (0)
//!                  | first lsn u64 | CRC-32C u32 of bytes 0..24 | reserved u32 (0)
//!   record: len u32 | crc32c u32 | lsn u64 | kind u8 | reserved [u8; 3] | body (len bytes)
//!           crc32c over (len ++ lsn ++ kind ++ reserved ++ body); lsn = previous + 1
//! ```
//!
//! LSNs number records from 1, one apart, across segments, so a reader (or a
//! standby) can ask for "everything after LSN n". A segment holds whole
//! records; a new one starts when the current one would pass
//! `segment_bytes_max`.
//!
//! Writes: [`Wal::append`] returns once the record is durable. Group commit:
//! the first writer to find no flush in progress becomes the leader, writes
//! every record buffered so far in one `write` and one `fdatasync`, then wakes
//! the others; writers arriving meanwhile share the next flush. With
//! `Durability::None` (an explicit opt-in) records are written but never
//! synced. A failed write or sync poisons the log: the kernel may have
//! dropped the dirty pages (the 2018 fsync lesson), so every later append is
//! refused until the log is reopened, and nothing buffered is acknowledged.
//!
//! Recovery ([`Wal::open`]): segments in LSN order, every record checked. In
//! the last segment, a record that is cut short or fails its checksum, with
//! no valid record after it, is a torn tail: it is cut (the file truncated)
//! and reported. A bad record anywhere else, or followed by a valid one, is
//! corruption: the open fails naming the segment and the byte offset.
//!
//! Limits: a record body is at most [`RECORD_BODY_MAX`]; a segment at most
//! `segment_bytes_max` (default [`SEGMENT_BYTES_DEFAULT`]) unless one record
//! alone is larger.

pub mod fs;
pub mod reader;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::format::{crc32c, crc32c_append};
pub use fs::{RealFs, SimFs, WalFile, WalFs};
pub use reader::WalReader;

/// A log sequence number: records are numbered from 1, one apart.
pub type Lsn = u64;

pub const SEGMENT_MAGIC: &[u8; 8] = b"BASALTWL";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 32;
pub const RECORD_HEADER_BYTES: usize = 20;
/// Largest record body (a batch of upserts is cut to fit by its writer).
pub const RECORD_BODY_MAX: usize = 64 << 20;
/// Default size at which a new segment starts.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
const SEGMENT_SUFFIX: &str = ".seg";

/// What a record holds (the collection layer defines the bodies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    UpsertBatch = 1,
    DeleteBatch = 2,
    GenerationSwitch = 3,
    /// A payload index made or dropped (JSON: field, schema or null).
    PayloadIndex = 4,
}

impl RecordKind {
    pub fn from_tag(tag: u8) -> Option<RecordKind> {
        match tag {
            1 => Some(RecordKind::UpsertBatch),
            2 => Some(RecordKind::DeleteBatch),
            3 => Some(RecordKind::GenerationSwitch),
            4 => Some(RecordKind::PayloadIndex),
            _ => None,
        }
    }
}

/// One record read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub kind: RecordKind,
    pub body: Vec<u8>,
}

/// How hard an append works to be durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// fdatasync before an append returns (group commit shares it).
    #[default]
    Fsync,
    /// Written, never synced: an acknowledged write can be lost to a power
    /// loss or a kernel crash. Only by explicit opt-in.
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt WAL at byte offset {offset}: {what}")]
    Corrupt { path: PathBuf, offset: u64, what: String },
    #[error(
        "the write-ahead log is poisoned by an earlier failure ({0}); writes are refused until it is reopened"
    )]
    Poisoned(String),
    #[error("record body of {0} bytes exceeds RECORD_BODY_MAX ({RECORD_BODY_MAX})")]
    TooLarge(usize),
    #[error("a replicated record has lsn {got}; the log expects {want}")]
    Sequence { got: Lsn, want: Lsn },
}

/// Process-wide notice of new durable records (any log): what the
/// replication shipper waits on instead of polling each collection.
pub struct DurableSignal {
    count: Mutex<u64>,
    cv: Condvar,
}

impl DurableSignal {
    fn bump(&self) {
        let mut c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *c = c.wrapping_add(1);
        self.cv.notify_all();
    }

    /// The current count (compare with a later one).
    pub fn current(&self) -> u64 {
        *self.count.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the count differs from `seen` or `timeout` passes;
    /// returns the count.
    pub fn wait_change(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        let g = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let (g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |c| *c == seen)
            .unwrap_or_else(|e| e.into_inner());
        *g
    }
}

/// Bumped after every successful flush of any log in the process.
pub static DURABLE: DurableSignal = DurableSignal { count: Mutex::new(0), cv: Condvar::new() };

/// How to open a log.
#[derive(Clone, Debug)]
pub struct WalOptions {
    pub durability: Durability,
    pub segment_bytes_max: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { durability: Durability::Fsync, segment_bytes_max: SEGMENT_BYTES_DEFAULT }
    }
}

/// What recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records read (from every segment, before `from_lsn` filtering).
    pub records: u64,
    /// Last valid LSN (0 for an empty log).
    pub last_lsn: Lsn,
    /// Bytes cut from the end of the last segment (a torn tail), and where.
    pub torn_tail: Option<(PathBuf, u64, u64)>,
}

fn segment_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

fn encode_segment_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends one encoded record to `out`.
pub fn encode_record(lsn: Lsn, kind: RecordKind, body: &[u8], out: &mut Vec<u8>) {
    assert!(body.len() <= RECORD_BODY_MAX, "record body checked by the caller");
    let start = out.len();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(body);
    let crc = record_crc(&out[start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC of an encoded record (its checksum field excluded).
fn record_crc(rec: &[u8]) -> u32 {
    crc32c_append(crc32c(&rec[0..4]), &rec[8..])
}

/// Why a record at some offset is not valid.
enum Bad {
    /// The bytes end before the record does.
    Short,
    /// Present but wrong (checksum, fields).
    Invalid(String),
}

/// Decodes the record at `at` of `b`, expecting LSN `want`; returns it and
/// the offset after it.
fn decode_record_at(b: &[u8], at: usize, want: Lsn) -> Result<(Record, usize), Bad> {
    if b.len() - at < RECORD_HEADER_BYTES {
        return Err(Bad::Short);
    }
    let len = u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize;
    if len > RECORD_BODY_MAX {
        return Err(Bad::Invalid(format!("record length {len} exceeds RECORD_BODY_MAX")));
    }
    let end = at + RECORD_HEADER_BYTES + len;
    if end > b.len() {
        return Err(Bad::Short);
    }
    let rec = &b[at..end];
    let stored = u32::from_le_bytes(rec[4..8].try_into().expect("4 bytes"));
    let computed = record_crc(rec);
    if stored != computed {
        return Err(Bad::Invalid(format!(
            "record checksum {stored:#010x} != computed {computed:#010x}"
        )));
    }
    let lsn = u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes"));
    if lsn != want {
        return Err(Bad::Invalid(format!("record lsn {lsn}, expected {want}")));
    }
    let Some(kind) = RecordKind::from_tag(rec[16]) else {
        return Err(Bad::Invalid(format!("unknown record kind {}", rec[16])));
    };
    if rec[17..20] != [0, 0, 0] {
        return Err(Bad::Invalid("reserved bytes are not zero".into()));
    }
    Ok((Record { lsn, kind, body: rec[RECORD_HEADER_BYTES..].to_vec() }, end))
}

/// Whether a valid record with an LSN above `after` starts anywhere in
/// `b[from..]`: evidence that a bad record before it is not a torn tail.
fn valid_record_after(b: &[u8], from: usize, after: Lsn) -> bool {
    let mut at = from;
    while at + RECORD_HEADER_BYTES <= b.len() {
        let lsn = u64::from_le_bytes(b[at + 8..at + 16].try_into().expect("8 bytes"));
        // Cheap filter first: only a plausible LSN is worth a checksum.
        if lsn > after && lsn - after <= 1 << 32 && decode_record_at(b, at, lsn).is_ok() {
            return true;
        }
        at += 1;
    }
    false
}

/// Metric: seconds of each WAL fdatasync.
pub const METRIC_FSYNC_SECONDS: &str = "basalt_wal_fsync_duration_seconds";
/// Metric: bytes appended to WALs.
pub const METRIC_BYTES: &str = "basalt_wal_bytes_total";

struct Segment {
    path: PathBuf,
    first_lsn: Lsn,
    bytes: u64,
    file: Option<Box<dyn WalFile>>,
}

struct Inner {
    next_lsn: Lsn,
    /// Encoded records not yet written, and the LSN of the last of them.
    buffered: Vec<u8>,
    buffered_last: Lsn,
    /// Every record up to this LSN is acknowledged (durable with Fsync).
    durable_lsn: Lsn,
    flushing: bool,
    /// When the flush in progress began (the watchdog's stall check).
    flush_since: Option<std::time::Instant>,
    poisoned: Option<String>,
    segment: Segment,
    /// First LSN of every segment, oldest first.
    segments: Vec<Lsn>,
}

/// An open write-ahead log. Thread-safe: appends from many threads share
/// flushes (group commit).
pub struct Wal {
    fs: Arc<dyn WalFs>,
    dir: PathBuf,
    opts: WalOptions,
    inner: Mutex<Inner>,
    flushed: Condvar,
}

impl Wal {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A writer that panicked mid-append poisons the mutex; the state it
        // guards is still consistent (records are acknowledged only after a
        // flush), so later callers go on.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens (or creates) the log in `dir`, checks every record, cuts a torn
    /// tail, and calls `replay` with every record whose LSN is above
    /// `after_lsn`, in order.
    pub fn open(
        fs: Arc<dyn WalFs>,
        dir: &Path,
        opts: WalOptions,
        after_lsn: Lsn,
        mut replay: impl FnMut(Record) -> Result<(), WalError>,
    ) -> Result<(Wal, Recovery), WalError> {
        let io = |op, e| WalError::Io { path: dir.to_path_buf(), op, source: e };
        fs.create_dir_all(dir).map_err(|e| io("create", e))?;
        let mut firsts: Vec<Lsn> = fs
            .list(dir)
            .map_err(|e| io("list", e))?
            .iter()
            .filter_map(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .filter_map(|n| n.parse::<u64>().ok())
            .collect();
        firsts.sort_unstable();
        let mut recovery = Recovery::default();
        let mut expected: Option<Lsn> = None;
        let mut last_bytes = 0u64;
        let mut segments: Vec<Lsn> = Vec::new();
        for (i, &first) in firsts.iter().enumerate() {
            let path = dir.join(segment_name(first));
            let is_last = i + 1 == firsts.len();
            let b = fs.read(&path).map_err(|e| WalError::Io {
                path: path.clone(),
                op: "read",
                source: e,
            })?;
            let corrupt =
                |offset: u64, what: String| WalError::Corrupt { path: path.clone(), offset, what };
            let header_ok = b.len() >= SEGMENT_HEADER_BYTES
                && b[..SEGMENT_HEADER_BYTES] == encode_segment_header(first);
            if !header_ok {
                if is_last
                    && b.len() < SEGMENT_HEADER_BYTES
                    && b == encode_segment_header(first)[..b.len()]
                {
                    // A segment whose creation was cut short: nothing in it
                    // was ever acknowledged.
                    fs.remove(&path).map_err(|e| WalError::Io {
                        path: path.clone(),
                        op: "remove",
                        source: e,
                    })?;
                    recovery.torn_tail = Some((path.clone(), 0, b.len() as u64));
                    continue;
                }
                return Err(corrupt(0, "bad segment header".into()));
            }
            if let Some(want) = expected
                && first != want
            {
                return Err(corrupt(16, format!("segment starts at lsn {first}, expected {want}")));
            }
            let mut want = first;
            let mut at = SEGMENT_HEADER_BYTES;
            while at < b.len() {
                match decode_record_at(&b, at, want) {
                    Ok((rec, next)) => {
                        recovery.records += 1;
                        recovery.last_lsn = rec.lsn;
                        if rec.lsn > after_lsn {
                            replay(rec)?;
                        }
                        want += 1;
                        at = next;
                    }
                    Err(bad) => {
                        let what = match bad {
                            Bad::Short => "record cut short".to_string(),
                            Bad::Invalid(w) => w,
                        };
                        if !is_last || valid_record_after(&b, at + 1, want.saturating_sub(1)) {
                            return Err(corrupt(at as u64, what));
                        }
                        // A torn tail: cut it and say so.
                        fs.truncate(&path, at as u64).map_err(|e| WalError::Io {
                            path: path.clone(),
                            op: "truncate",
                            source: e,
                        })?;
                        recovery.torn_tail = Some((path.clone(), at as u64, (b.len() - at) as u64));
                        break;
                    }
                }
            }
            expected = Some(want);
            last_bytes = at.min(b.len()) as u64;
            segments.push(first);
        }
        let next_lsn = recovery.last_lsn + 1;
        let segment = match segments.last() {
            Some(&first) => {
                let path = dir.join(segment_name(first));
                let file = fs.open_append(&path).map_err(|e| WalError::Io {
                    path: path.clone(),
                    op: "open",
                    source: e,
                })?;
                Segment { path, first_lsn: first, bytes: last_bytes, file: Some(file) }
            }
            None => {
                let (seg, first) = create_segment(fs.as_ref(), dir, next_lsn)?;
                segments.push(first);
                seg
            }
        };
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            opts,
            inner: Mutex::new(Inner {
                next_lsn,
                buffered: Vec::new(),
                buffered_last: recovery.last_lsn,
                durable_lsn: recovery.last_lsn,
                flushing: false,
                flush_since: None,
                poisoned: None,
                segment,
                segments,
            }),
            flushed: Condvar::new(),
        };
        Ok((wal, recovery))
    }

    /// Appends one record and returns its LSN once it is durable (or, with
    /// `Durability::None`, written).
    pub fn append(&self, kind: RecordKind, body: &[u8]) -> Result<Lsn, WalError> {
        if body.len() > RECORD_BODY_MAX {
            return Err(WalError::TooLarge(body.len()));
        }
        let mut g = self.lock();
        if let Some(why) = &g.poisoned {
            return Err(WalError::Poisoned(why.clone()));
        }
        let lsn = g.next_lsn;
        g.next_lsn += 1;
        encode_record(lsn, kind, body, &mut g.buffered);
        g.buffered_last = lsn;
        self.wait_durable(g, lsn)
    }

    /// Appends records numbered by another log (a standby's copy of its
    /// primary's): the first must be the next LSN, the rest one apart.
    /// Returns the last LSN once every record is durable (one flush).
    pub fn append_replicated(&self, records: &[Record]) -> Result<Lsn, WalError> {
        let mut g = self.lock();
        if let Some(why) = &g.poisoned {
            return Err(WalError::Poisoned(why.clone()));
        }
        let Some(last) = records.last() else { return Ok(g.durable_lsn) };
        for (i, r) in records.iter().enumerate() {
            if r.body.len() > RECORD_BODY_MAX {
                return Err(WalError::TooLarge(r.body.len()));
            }
            if r.lsn != g.next_lsn + i as u64 {
                return Err(WalError::Sequence { got: r.lsn, want: g.next_lsn + i as u64 });
            }
        }
        for r in records {
            encode_record(r.lsn, r.kind, &r.body, &mut g.buffered);
        }
        g.next_lsn = last.lsn + 1;
        g.buffered_last = last.lsn;
        self.wait_durable(g, last.lsn)
    }

    /// Waits (leading flushes as needed) until `lsn` is durable.
    fn wait_durable<'a>(&'a self, mut g: MutexGuard<'a, Inner>, lsn: Lsn) -> Result<Lsn, WalError> {
        loop {
            if let Some(why) = &g.poisoned {
                return Err(WalError::Poisoned(why.clone()));
            }
            if g.durable_lsn >= lsn {
                return Ok(lsn);
            }
            if g.flushing {
                g = self.flushed.wait(g).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Lead a flush of everything buffered.
            g.flushing = true;
            g.flush_since = Some(std::time::Instant::now());
            let batch = std::mem::take(&mut g.buffered);
            let (first_in_batch, last) = (batch_first_lsn(&batch), g.buffered_last);
            let mut seg = take_segment(&mut g);
            let roll = seg.bytes > SEGMENT_HEADER_BYTES as u64
                && seg.bytes + batch.len() as u64 > self.opts.segment_bytes_max;
            let existing = g.segments.clone();
            drop(g);
            let result = self.flush(&mut seg, &batch, roll, first_in_batch);
            g = self.lock();
            g.flushing = false;
            g.flush_since = None;
            match result {
                Ok(new_first) => {
                    if let Some(f) = new_first
                        && !existing.contains(&f)
                    {
                        g.segments.push(f);
                    }
                    g.durable_lsn = last;
                    DURABLE.bump();
                }
                Err(e) => {
                    g.poisoned = Some(e.to_string());
                }
            }
            g.segment = seg;
            self.flushed.notify_all();
        }
    }

    /// Writes (and syncs) one batch, first starting a new segment when
    /// `roll`. Returns the first LSN of a segment it created.
    fn flush(
        &self,
        seg: &mut Segment,
        batch: &[u8],
        roll: bool,
        first_in_batch: Lsn,
    ) -> Result<Option<Lsn>, WalError> {
        let mut created = None;
        if roll {
            let (new, first) = create_segment(self.fs.as_ref(), &self.dir, first_in_batch)?;
            *seg = new;
            created = Some(first);
        }
        let path = seg.path.clone();
        let io = |op, e| WalError::Io { path: path.clone(), op, source: e };
        let file = seg.file.as_mut().ok_or_else(|| {
            io("write", std::io::Error::other("segment file closed after an earlier failure"))
        })?;
        file.append(batch).map_err(|e| io("write", e))?;
        metrics::counter!(METRIC_BYTES).increment(batch.len() as u64);
        if self.opts.durability == Durability::Fsync {
            let t = std::time::Instant::now();
            file.sync_data().map_err(|e| io("fdatasync", e))?;
            metrics::histogram!(METRIC_FSYNC_SECONDS).record(t.elapsed().as_secs_f64());
        }
        seg.bytes += batch.len() as u64;
        Ok(created)
    }

    /// Syncs the current segment (waiting for a flush in progress): with
    /// `Durability::None`, makes every acknowledged record durable.
    pub fn sync(&self) -> Result<(), WalError> {
        let mut g = self.lock();
        while g.flushing {
            g = self.flushed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        let path = g.segment.path.clone();
        if let Some(f) = g.segment.file.as_mut() {
            f.sync_data().map_err(|e| WalError::Io { path, op: "fdatasync", source: e })?;
        }
        Ok(())
    }

    /// How long the flush in progress has taken (none: no flush running).
    pub fn flush_age(&self) -> Option<std::time::Duration> {
        self.lock().flush_since.map(|t| t.elapsed())
    }

    /// The last acknowledged LSN.
    pub fn last_lsn(&self) -> Lsn {
        self.lock().durable_lsn
    }

    /// Whether the log refuses writes after a failure.
    pub fn poisoned(&self) -> Option<String> {
        self.lock().poisoned.clone()
    }

    pub fn durability(&self) -> Durability {
        self.opts.durability
    }

    /// Removes the oldest segments whose records are all at or below `lsn`
    /// (a generation that includes them is durable), stopping at the current
    /// one and at the first that `retain` wants kept (the standby's hook: it
    /// gets a segment's first LSN). Returns the segments removed.
    pub fn remove_before(
        &self,
        lsn: Lsn,
        retain: impl Fn(Lsn) -> bool,
    ) -> Result<Vec<Lsn>, WalError> {
        let mut g = self.lock();
        let current = g.segment.first_lsn;
        let firsts = g.segments.clone();
        let mut removed = Vec::new();
        for (i, &first) in firsts.iter().enumerate() {
            // A segment's last LSN is the next segment's first minus one.
            let Some(&next_first) = firsts.get(i + 1) else { break };
            // Only a prefix goes: a kept segment keeps every later one, so
            // the log never has a hole.
            if first == current || next_first - 1 > lsn || retain(first) {
                break;
            }
            let path = self.dir.join(segment_name(first));
            self.fs.remove(&path).map_err(|e| WalError::Io { path, op: "remove", source: e })?;
            removed.push(first);
        }
        g.segments.retain(|f| !removed.contains(f));
        drop(g);
        if !removed.is_empty() {
            self.fs.sync_dir(&self.dir).map_err(|e| WalError::Io {
                path: self.dir.clone(),
                op: "fsync",
                source: e,
            })?;
        }
        Ok(removed)
    }

    /// File names of the segments on disk, oldest first.
    pub fn segment_names(&self) -> Vec<String> {
        self.segments().into_iter().map(segment_name).collect()
    }

    /// First LSNs of the segments on disk, oldest first.
    pub fn segments(&self) -> Vec<Lsn> {
        self.lock().segments.clone()
    }
}

fn batch_first_lsn(batch: &[u8]) -> Lsn {
    u64::from_le_bytes(batch[8..16].try_into().expect("a batch holds at least one record"))
}

fn take_segment(g: &mut Inner) -> Segment {
    std::mem::replace(
        &mut g.segment,
        Segment { path: PathBuf::new(), first_lsn: 0, bytes: 0, file: None },
    )
}

/// Creates segment `first_lsn`: header written and synced, directory synced,
/// so a record acknowledged in it cannot vanish with its directory entry.
fn create_segment(fs: &dyn WalFs, dir: &Path, first_lsn: Lsn) -> Result<(Segment, Lsn), WalError> {
    let path = dir.join(segment_name(first_lsn));
    let io = |op, e| WalError::Io { path: path.clone(), op, source: e };
    let mut file = fs.create_new(&path).map_err(|e| io("create", e))?;
    file.append(&encode_segment_header(first_lsn)).map_err(|e| io("write", e))?;
    file.sync_data().map_err(|e| io("fdatasync", e))?;
    fs.sync_dir(dir).map_err(|e| WalError::Io {
        path: dir.to_path_buf(),
        op: "fsync",
        source: e,
    })?;
    Ok((
        Segment { path, first_lsn, bytes: SEGMENT_HEADER_BYTES as u64, file: Some(file) },
        first_lsn,
    ))
}
