//! Sector reads for the beam search: one [`SectorReader`] per search thread.
//!
//! Each search round reads a batch of up to `batch_max` node records, each one
//! or more whole [`SECTOR_BYTES`] sectors at a sector-aligned offset of the
//! graph file: [`SectorReader::read`] submits the whole batch at once and
//! returns when every request has completed, after which
//! [`SectorReader::data`] gives the bytes of each request.
//!
//! Two implementations: [`UringReader`] (io_uring, all requests in flight at
//! once, registered buffers when the memlock limit allows) and [`PreadReader`]
//! (one `pread` after another, for kernels or sandboxes without io_uring).
//! [`make_reader_auto`] picks io_uring and falls back to `pread` when the ring
//! cannot be set up, and says why.
//!
//! Invariants and limits:
//! - every transfer uses sector-aligned offsets, lengths and buffer addresses,
//!   so it works on files opened with O_DIRECT ([`open_direct`]);
//! - a reader preallocates `batch_max` slots of `sectors_per_request_max`
//!   sectors and never allocates on the read path; both are bounded by
//!   [`REQUESTS_PER_BATCH_MAX`], [`SECTORS_PER_REQUEST_MAX`] and
//!   [`READER_BUFFER_BYTES_MAX`];
//! - a read either fills every byte of every request or fails: a short read is
//!   retried from where it stopped a bounded number of times
//!   ([`RESUBMITS_PER_REQUEST_MAX`]) and then reported as [`IoError::ShortRead`];
//! - bad requests (misaligned, empty, too large, too many) are errors, never UB.
//!
//! The pipelined interface (the pipelined search's): [`SectorReader::submit`]
//! queues one read into a numbered slot, [`SectorReader::wait`] sends the
//! queue and returns as soon as any read has completed, so a caller keeps a
//! few reads in flight and acts on each as it lands. The same slots and the
//! same retry and error rules serve both interfaces; a batch `read` needs
//! nothing in flight.

mod aligned;
mod pread;
pub(crate) mod uring;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

pub use aligned::AlignedBuf;
pub use pread::PreadReader;
pub use uring::{DROP_REAP_TIMEOUT, UringReader, leaked_buffer_bytes};

use crate::format::SECTOR_BYTES;

/// Most requests one reader accepts per batch (the ring and the slot array are
/// sized from the caller's `batch_max`, which may not exceed this).
pub const REQUESTS_PER_BATCH_MAX: usize = 1024;

/// Most sectors one request may span (1 MiB): node records are a few sectors.
pub const SECTORS_PER_REQUEST_MAX: u32 = 256;

/// Most bytes of slot buffers one reader may preallocate. Also keeps the single
/// registered io_uring buffer under the kernel's 1 GiB limit per buffer.
pub const READER_BUFFER_BYTES_MAX: usize = 256 << 20;

/// How many times one request is resubmitted after a short read or a transient
/// error (EINTR, EAGAIN) before the batch fails.
pub const RESUBMITS_PER_REQUEST_MAX: u32 = 8;

const _: () = assert!(SECTOR_BYTES.is_power_of_two());
// Offsets within a request are tracked in `u32`.
const _: () = assert!((SECTORS_PER_REQUEST_MAX as u64) * (SECTOR_BYTES as u64) <= u32::MAX as u64);
const _: () = assert!(READER_BUFFER_BYTES_MAX <= 1 << 30);

/// Errors of the sector readers.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{path}: open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: read of {len} bytes at offset {offset}: {source}")]
    Read {
        path: PathBuf,
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: short read at offset {offset}: expected {expected} bytes, got {got} (past end of file?)"
    )]
    ShortRead { path: PathBuf, offset: u64, expected: u64, got: u64 },
    #[error("reader setup: {what}: {source}")]
    Setup {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("batch of {requested} read requests exceeds this reader's limit of {max}")]
    BatchTooLarge { requested: usize, max: usize },
    #[error("read of {len} bytes at offset {offset} is not aligned to {SECTOR_BYTES}-byte sectors")]
    Misaligned { offset: u64, len: u64 },
    #[error("read request {index} at offset {offset}: {sectors} sectors is outside 1..={max}")]
    RequestSize { index: usize, offset: u64, sectors: u32, max: u32 },
    #[error("read request {index} at offset {offset}: the offset is beyond any file")]
    OffsetRange { index: usize, offset: u64 },
    #[error("reader configuration: {what}")]
    Config { what: String },
}

/// Which implementation serves sector reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReaderKind {
    Uring,
    Pread,
}

impl ReaderKind {
    pub const fn name(self) -> &'static str {
        match self {
            ReaderKind::Uring => "uring",
            ReaderKind::Pread => "pread",
        }
    }
}

impl fmt::Display for ReaderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ReaderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "uring" | "io_uring" => Ok(ReaderKind::Uring),
            "pread" => Ok(ReaderKind::Pread),
            other => Err(format!("unknown reader {other:?} (expected uring or pread)")),
        }
    }
}

/// One read: `sectors` whole sectors starting at the sector-aligned byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub offset: u64,
    pub sectors: u32,
}

impl ReadRequest {
    /// The length in bytes (at most 1 MiB once validated).
    pub fn len_bytes(&self) -> u64 {
        u64::from(self.sectors) * SECTOR_BYTES as u64
    }
}

/// Reads batches of whole sectors into buffers the reader owns.
pub trait SectorReader: Send {
    /// Reads every request of `reqs` and returns when all have completed.
    /// On success each request's bytes are available through [`Self::data`];
    /// on error no request's bytes are (even those that did complete).
    fn read(&mut self, reqs: &[ReadRequest]) -> Result<(), IoError>;

    /// The bytes of request `i` of the last successful [`Self::read`]:
    /// `sectors * SECTOR_BYTES` long. Panics if `i` is not a request of the
    /// last successful read, which is a bug in the caller.
    fn data(&self, i: usize) -> &[u8];

    /// Which implementation this is.
    fn kind(&self) -> ReaderKind;

    /// Slots of the reader (its `batch_max`): the pipelined interface reads
    /// into slots `0..slots()`.
    fn slots(&self) -> usize;

    /// Pipelined use: queues a read of `req` into `slot`, which must not be
    /// in flight. Nothing reaches the device before the next [`Self::wait`]
    /// (io_uring submits the queue and waits in one system call); the
    /// `pread` reader reads at once. Bad requests are errors, as in
    /// [`Self::read`]; after any error of `submit` or [`Self::wait`] nothing
    /// is pending (what was in flight has been waited for and dropped),
    /// unless the io_uring reader is poisoned (its `io_uring_enter` failed:
    /// every later call fails, and dropping it reaps or leaks its buffer).
    fn submit(&mut self, slot: usize, req: ReadRequest) -> Result<(), IoError>;

    /// Pipelined use: sends what is queued and appends every completed slot
    /// to `done`, in completion order. With `block` it first waits until at
    /// least one has completed (not at all when nothing is pending); without,
    /// it only collects what has already landed (a system call only when
    /// something new was queued). A completed slot's
    /// bytes are [`Self::slot`]'s until it is submitted again. On error
    /// every other read in flight has been waited for and discarded: the
    /// reader then holds nothing in flight.
    fn wait(&mut self, done: &mut Vec<usize>, block: bool) -> Result<(), IoError>;

    /// The bytes of a completed slot. Panics if `slot` has not completed
    /// since its last submission, which is a bug in the caller.
    fn slot(&self, slot: usize) -> &[u8];

    /// Reads submitted or queued and not yet returned by [`Self::wait`].
    fn pending(&self) -> usize;

    /// Waits for every read in flight and discards it (a search that ends
    /// early, or on an error). Errors of those reads are ignored: nobody
    /// wants their bytes.
    fn discard(&mut self);

    /// How long a blocking [`Self::wait`] may spin on completions before
    /// it sleeps (io_uring: the completion queue is shared memory; a sleep
    /// costs a context switch and the scheduler's wake-up on every wait).
    /// Readers that never wait ignore it.
    fn set_spin_wait(&mut self, _spin: std::time::Duration) {}
}

/// Opens `path` read-only with O_DIRECT, so node reads bypass the page cache
/// and the reader's own cache decides what stays in memory. If the filesystem
/// refuses O_DIRECT (EINVAL, e.g. tmpfs) the file is opened buffered instead;
/// the returned flag says which, so the caller can report it.
pub fn open_direct(path: &Path) -> Result<(File, bool), IoError> {
    let direct = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path);
    match direct {
        Ok(file) => Ok((file, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let file = File::open(path)
                .map_err(|source| IoError::Open { path: path.to_path_buf(), source })?;
            Ok((file, false))
        }
        Err(source) => Err(IoError::Open { path: path.to_path_buf(), source }),
    }
}

/// Builds a reader of exactly `kind`; an io_uring setup failure is an error.
///
/// The reader preallocates `batch_max` slots of `sectors_per_request_max`
/// sectors each; `path` is only used in error messages.
pub fn make_reader(
    kind: ReaderKind,
    file: Arc<File>,
    path: PathBuf,
    batch_max: usize,
    sectors_per_request_max: u32,
) -> Result<Box<dyn SectorReader>, IoError> {
    Ok(match kind {
        ReaderKind::Uring => {
            Box::new(UringReader::new(file, path, batch_max, sectors_per_request_max)?)
        }
        ReaderKind::Pread => {
            Box::new(PreadReader::new(file, path, batch_max, sectors_per_request_max)?)
        }
    })
}

/// Like [`make_reader`], but when `kind` is [`ReaderKind::Uring`] and the ring
/// cannot be set up (ENOSYS on old kernels, EPERM from
/// `kernel.io_uring_disabled` or seccomp, ENOMEM, missing opcodes) it returns a
/// [`PreadReader`] instead, together with the reason. The caller decides how
/// to report it (once per process, not once per search thread).
pub fn make_reader_auto(
    kind: ReaderKind,
    file: Arc<File>,
    path: PathBuf,
    batch_max: usize,
    sectors_per_request_max: u32,
) -> Result<(Box<dyn SectorReader>, Option<IoError>), IoError> {
    make_reader_auto_with(kind, file, path, batch_max, sectors_per_request_max, |f, p| {
        Ok(Box::new(UringReader::new(f, p, batch_max, sectors_per_request_max)?))
    })
}

/// [`make_reader_auto`] with the io_uring constructor passed in, so tests can
/// make it fail.
fn make_reader_auto_with(
    kind: ReaderKind,
    file: Arc<File>,
    path: PathBuf,
    batch_max: usize,
    sectors_per_request_max: u32,
    make_uring: impl FnOnce(Arc<File>, PathBuf) -> Result<Box<dyn SectorReader>, IoError>,
) -> Result<(Box<dyn SectorReader>, Option<IoError>), IoError> {
    if kind == ReaderKind::Pread {
        let reader = PreadReader::new(file, path, batch_max, sectors_per_request_max)?;
        return Ok((Box::new(reader), None));
    }
    // Bad arguments fail the same way for both readers: report them rather
    // than hide them behind a fallback.
    check_config(batch_max, sectors_per_request_max)?;
    match make_uring(Arc::clone(&file), path.clone()) {
        Ok(reader) => Ok((reader, None)),
        Err(why @ IoError::Setup { .. }) => {
            let reader = PreadReader::new(file, path, batch_max, sectors_per_request_max)?;
            Ok((Box::new(reader), Some(why)))
        }
        Err(other) => Err(other),
    }
}

/// Checks a reader's constructor arguments and returns the bytes of one slot.
fn check_config(batch_max: usize, sectors_per_request_max: u32) -> Result<usize, IoError> {
    if batch_max == 0 || batch_max > REQUESTS_PER_BATCH_MAX {
        return Err(IoError::Config {
            what: format!("batch_max {batch_max} is outside 1..={REQUESTS_PER_BATCH_MAX}"),
        });
    }
    if sectors_per_request_max == 0 || sectors_per_request_max > SECTORS_PER_REQUEST_MAX {
        return Err(IoError::Config {
            what: format!(
                "sectors_per_request_max {sectors_per_request_max} is outside 1..={SECTORS_PER_REQUEST_MAX}"
            ),
        });
    }
    let slot_bytes = sectors_per_request_max as usize * SECTOR_BYTES;
    let total = slot_bytes * batch_max;
    if total > READER_BUFFER_BYTES_MAX {
        return Err(IoError::Config {
            what: format!(
                "{batch_max} slots of {sectors_per_request_max} sectors need {total} bytes, \
                 more than the {READER_BUFFER_BYTES_MAX} allowed per reader"
            ),
        });
    }
    Ok(slot_bytes)
}

/// Checks a batch against a reader's limits before anything is submitted.
/// The bytes of request `i` of the last successful read: slot `i` of a
/// buffer cut into `slot_bytes` slots, `sectors[i]` sectors long. Shared by
/// both readers so they agree on the slot layout.
fn slot_data<'a>(buf: &'a [u8], slot_bytes: usize, sectors: &[u32], i: usize) -> &'a [u8] {
    let n = sectors.get(i).unwrap_or_else(|| {
        panic!("request {i} is not part of the last successful read ({} requests)", sectors.len())
    });
    let start = i * slot_bytes;
    &buf[start..start + *n as usize * SECTOR_BYTES]
}

fn check_batch(
    reqs: &[ReadRequest],
    batch_max: usize,
    sectors_per_request_max: u32,
) -> Result<(), IoError> {
    if reqs.len() > batch_max {
        return Err(IoError::BatchTooLarge { requested: reqs.len(), max: batch_max });
    }
    for (index, req) in reqs.iter().enumerate() {
        check_request(index, req, sectors_per_request_max)?;
    }
    Ok(())
}

/// Checks one request (request `index` of a batch, or a pipelined read into
/// slot `index`).
fn check_request(
    index: usize,
    req: &ReadRequest,
    sectors_per_request_max: u32,
) -> Result<(), IoError> {
    if !req.offset.is_multiple_of(SECTOR_BYTES as u64) {
        return Err(IoError::Misaligned { offset: req.offset, len: req.len_bytes() });
    }
    if req.sectors == 0 || req.sectors > sectors_per_request_max {
        return Err(IoError::RequestSize {
            index,
            offset: req.offset,
            sectors: req.sectors,
            max: sectors_per_request_max,
        });
    }
    // The kernel takes offsets as a signed `off_t`; refusing the top half
    // here keeps `offset + len` from overflowing anywhere below.
    if req.offset.checked_add(req.len_bytes()).is_none_or(|end| end > i64::MAX as u64) {
        return Err(IoError::OffsetRange { index, offset: req.offset });
    }
    Ok(())
}

/// Where one slot of a pipelined reader stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// Never read, or discarded.
    Free,
    /// Queued or submitted; the kernel may own its bytes.
    Busy,
    /// Completed with `sectors` sectors: its bytes may be read.
    Done { sectors: u32 },
}

/// The bytes of pipelined slot `slot`, which must be `Done`.
fn done_slot_data<'a>(
    buf: &'a AlignedBuf,
    slot_bytes: usize,
    states: &[SlotState],
    slot: usize,
) -> &'a [u8] {
    match states.get(slot) {
        // Only this slot's bytes: the kernel may be writing others.
        Some(SlotState::Done { sectors }) => {
            buf.range(slot * slot_bytes, *sectors as usize * SECTOR_BYTES)
        }
        other => panic!("slot {slot} has no completed read ({other:?})"),
    }
}

/// The progress of one request: how much has arrived and how many retries it
/// has used. Both readers feed it each transfer's result and follow its answer.
#[derive(Clone, Copy, Debug)]
struct Transfer {
    offset: u64,
    len: u32,
    done: u32,
    resubmits: u32,
}

/// What to do with a request after one of its transfers finished.
#[derive(Debug)]
enum Step {
    /// Every byte has arrived.
    Done,
    /// Read the rest, from `offset + done` into the slot at `done`.
    Again,
    /// The request failed.
    Failed(IoError),
}

impl Transfer {
    fn new(req: &ReadRequest) -> Transfer {
        let len = u32::try_from(req.len_bytes()).expect("validated: a request is at most 1 MiB");
        Transfer { offset: req.offset, len, done: 0, resubmits: 0 }
    }

    /// The file offset the next transfer starts at.
    fn next_offset(&self) -> u64 {
        self.offset + u64::from(self.done)
    }

    /// The bytes still missing.
    fn remaining(&self) -> u32 {
        self.len - self.done
    }

    /// Accounts for one transfer that returned `result` (bytes read or an error).
    fn advance(&mut self, result: io::Result<usize>, path: &Path) -> Step {
        match result {
            Err(e) => {
                let transient =
                    matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock);
                if transient && self.resubmits < RESUBMITS_PER_REQUEST_MAX {
                    self.resubmits += 1;
                    return Step::Again;
                }
                Step::Failed(IoError::Read {
                    path: path.to_path_buf(),
                    offset: self.offset,
                    len: u64::from(self.len),
                    source: e,
                })
            }
            // End of file.
            Ok(0) => Step::Failed(self.short_read(path)),
            Ok(n) => {
                let n = u32::try_from(n).ok().filter(|&n| n <= self.remaining());
                let n = n.expect("the kernel never returns more bytes than were asked for");
                self.done += n;
                if self.done == self.len {
                    Step::Done
                } else if !(self.done as usize).is_multiple_of(SECTOR_BYTES) {
                    // A transfer of whole sectors can only end mid-sector at the
                    // end of the file; reading on from an unaligned offset would
                    // also break O_DIRECT's alignment rules.
                    Step::Failed(self.short_read(path))
                } else if self.resubmits < RESUBMITS_PER_REQUEST_MAX {
                    self.resubmits += 1;
                    Step::Again
                } else {
                    Step::Failed(self.short_read(path))
                }
            }
        }
    }

    fn short_read(&self, path: &Path) -> IoError {
        IoError::ShortRead {
            path: path.to_path_buf(),
            offset: self.offset,
            expected: u64::from(self.len),
            got: u64::from(self.done),
        }
    }
}
