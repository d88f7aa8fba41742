//! The io_uring sector reader: a whole batch in flight at once.
//!
//! Each reader owns one ring with at least `batch_max` submission entries and
//! one [`AlignedBuf`] of `batch_max` slots; request `i` of a batch reads into
//! slot `i` and carries `i` as its `user_data`. A read pushes one SQE per
//! request, submits them with one `io_uring_enter`, waits for all of them, and
//! checks every completion: errors end the request (EINTR and EAGAIN are
//! retried), short reads are resubmitted for the remainder, both bounded by
//! [`RESUBMITS_PER_REQUEST_MAX`](super::RESUBMITS_PER_REQUEST_MAX).
//!
//! Ownership rule: a slot belongs to the kernel from the push of its SQE until
//! its completion is reaped. `read` therefore never returns while operations
//! are in flight: after the first error it stops submitting, drains every
//! outstanding completion, and only then reports the error. The one exception
//! is a failing `io_uring_enter` itself, after which completions may never be
//! seen: the reader is then poisoned (every later read fails) and its buffer is
//! leaked on drop rather than freed under the kernel's feet.
//!
//! The slot buffer is registered with the ring when RLIMIT_MEMLOCK allows, so
//! reads use `IORING_OP_READ_FIXED` and skip per-I/O page pinning; otherwise
//! plain `IORING_OP_READ` ([`UringReader::registered`] says which). The file is
//! registered too when possible, to skip the per-I/O file table lookup.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use io_uring::{IoUring, Probe, opcode, squeue, types};

use super::{
    AlignedBuf, IoError, ReadRequest, ReaderKind, SectorReader, Step, Transfer, check_batch,
    check_config, slot_data,
};

/// How many times one `io_uring_enter` is retried after EINTR, EAGAIN or EBUSY
/// before the reader gives up and poisons itself.
const ENTER_RETRIES_MAX: u32 = 1024;

/// Reads sectors through io_uring, a whole batch in flight at once.
pub struct UringReader {
    // Declared before `buf`: fields drop in declaration order, so the ring, and
    // with it the kernel's registration of `buf`, goes before the memory does.
    ring: IoUring,
    /// `batch_max` slots of `slot_bytes`; request `i` of a batch lands in slot `i`.
    buf: AlignedBuf,
    // Kept open for as long as the ring may read from it.
    file: Arc<File>,
    path: PathBuf,
    batch_max: usize,
    sectors_per_request_max: u32,
    slot_bytes: usize,
    /// `buf` is registered as fixed buffer 0: reads use `ReadFixed`.
    registered: bool,
    /// Why registering `buf` failed, for operators (usually ENOMEM: RLIMIT_MEMLOCK).
    registration_error: Option<io::Error>,
    /// The file is registered as fixed file 0.
    file_registered: bool,
    /// Progress of each request of the current batch.
    transfers: Vec<Transfer>,
    /// Requests of the current batch waiting for a submission queue entry.
    pending: Vec<usize>,
    /// Sectors of each request of the last successful read; empty after a failure.
    sectors: Vec<u32>,
    /// The errno of a failed `io_uring_enter` that left reads in flight.
    poisoned: Option<i32>,
}

impl UringReader {
    /// A reader of `file` (which may be opened with O_DIRECT) with room for
    /// `batch_max` requests of up to `sectors_per_request_max` sectors each.
    ///
    /// Fails with [`IoError::Setup`] when this kernel or sandbox does not
    /// offer a usable io_uring; [`super::make_reader_auto`] then falls back to
    /// `pread`.
    pub fn new(
        file: Arc<File>,
        path: PathBuf,
        batch_max: usize,
        sectors_per_request_max: u32,
    ) -> Result<UringReader, IoError> {
        let entries = u32::try_from(batch_max.next_power_of_two())
            .expect("batch_max is at most REQUESTS_PER_BATCH_MAX");
        let options = RingOptions { entries, register_buffers: true };
        Self::with_options(file, path, batch_max, sectors_per_request_max, options)
    }

    /// [`Self::new`] with chosen ring options; tests use them to reach the
    /// queue-full path and the unregistered-buffer path on any machine.
    pub(super) fn with_options(
        file: Arc<File>,
        path: PathBuf,
        batch_max: usize,
        sectors_per_request_max: u32,
        options: RingOptions,
    ) -> Result<UringReader, IoError> {
        let slot_bytes = check_config(batch_max, sectors_per_request_max)?;
        let ring = IoUring::new(options.entries)
            .map_err(|source| IoError::Setup { what: "create an io_uring", source })?;
        check_opcodes(&ring)?;

        let mut buf = AlignedBuf::zeroed(slot_bytes * batch_max)?;
        let iovec = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // Failure (typically ENOMEM from RLIMIT_MEMLOCK, which io_uring charges
        // per user, across processes) only means plain `Read` instead of `ReadFixed`.
        let registration = if options.register_buffers {
            // SAFETY: the iovec covers exactly `buf`'s allocation. `buf` moves
            // into the returned reader together with the ring; its heap memory
            // never moves or shrinks, and it outlives the ring: the ring is
            // dropped first (field order), or, if the reader is poisoned, `buf`
            // is leaked.
            unsafe { ring.submitter().register_buffers(&[iovec]) }
        } else {
            Err(io::Error::other("buffer registration disabled"))
        };
        let registered = registration.is_ok();
        let registration_error = registration.err();
        let file_registered = ring.submitter().register_files(&[file.as_raw_fd()]).is_ok();

        Ok(UringReader {
            ring,
            buf,
            file,
            path,
            batch_max,
            sectors_per_request_max,
            slot_bytes,
            registered,
            registration_error,
            file_registered,
            transfers: Vec::with_capacity(batch_max),
            pending: Vec::with_capacity(batch_max),
            sectors: Vec::with_capacity(batch_max),
            poisoned: None,
        })
    }

    /// Whether the slot buffer is registered with the ring (reads use
    /// `READ_FIXED`); false when RLIMIT_MEMLOCK or the kernel refused it.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Why the slot buffer is not registered, if it is not.
    pub fn registration_error(&self) -> Option<&io::Error> {
        self.registration_error.as_ref()
    }

    /// Whether the file is registered with the ring.
    pub fn file_registered(&self) -> bool {
        self.file_registered
    }

    /// Pushes as many pending requests as the submission queue has room for
    /// and returns how many it pushed. The rest stay pending for the next
    /// round, after `io_uring_enter` has emptied the queue.
    fn push_pending(&mut self) -> usize {
        let target = Target { fixed_file: self.file_registered, fd: self.file.as_raw_fd() };
        let base = self.buf.as_mut_ptr();
        let mut sq = self.ring.submission();
        let mut pushed = 0;
        while let Some(&i) = self.pending.last() {
            let transfer = &self.transfers[i];
            let at = i * self.slot_bytes + transfer.done as usize;
            let len = transfer.remaining();
            // Validation bounds every request by its slot; this keeps the
            // pointer handed to the kernel inside `buf` even if that broke.
            assert!(
                transfer.len as usize <= self.slot_bytes && at + len as usize <= self.buf.len(),
                "request {i} does not fit its slot"
            );
            let dst = base.wrapping_add(at);
            let entry = if self.registered {
                target.read_fixed(dst, len, transfer.next_offset())
            } else {
                target.read(dst, len, transfer.next_offset())
            }
            .user_data(i as u64);
            // SAFETY: `dst..dst + len` lies inside slot `i` of `buf` (asserted
            // above), which stays allocated and untouched by Rust code until
            // this operation's completion is reaped: `read` does not return
            // while operations are in flight, and `buf` outlives the ring or is
            // leaked. With `ReadFixed`, the range is inside registered buffer 0.
            if unsafe { sq.push(&entry) }.is_err() {
                break;
            }
            self.pending.pop();
            pushed += 1;
        }
        pushed
    }

    /// Submits what is queued and waits until `in_flight` completions are
    /// available. Transient failures are retried; anything else poisons the
    /// reader, since completions of operations in flight may never arrive.
    fn enter(&mut self, in_flight: usize) -> Result<(), IoError> {
        let mut failures = 0;
        loop {
            match self.ring.submit_and_wait(in_flight) {
                Ok(_) => return Ok(()),
                Err(e) if is_transient_enter_error(&e) && failures < ENTER_RETRIES_MAX => {
                    failures += 1;
                    if e.raw_os_error() != Some(libc::EINTR) {
                        // The kernel is short of memory or CQ room; let it drain.
                        std::thread::yield_now();
                    }
                }
                Err(source) => {
                    self.poisoned = Some(source.raw_os_error().unwrap_or(libc::EIO));
                    return Err(IoError::Setup {
                        what: "io_uring_enter failed with reads in flight",
                        source,
                    });
                }
            }
        }
    }
}

impl SectorReader for UringReader {
    fn read(&mut self, reqs: &[ReadRequest]) -> Result<(), IoError> {
        self.sectors.clear();
        if let Some(errno) = self.poisoned {
            return Err(IoError::Setup {
                what: "an earlier io_uring_enter failed with reads in flight; reader unusable",
                source: io::Error::from_raw_os_error(errno),
            });
        }
        check_batch(reqs, self.batch_max, self.sectors_per_request_max)?;
        self.transfers.clear();
        self.transfers.extend(reqs.iter().map(Transfer::new));
        self.pending.clear();
        // Popped from the end, so requests are submitted in batch order.
        self.pending.extend((0..reqs.len()).rev());

        let mut first_error = None;
        let mut in_flight = 0usize;
        loop {
            in_flight += self.push_pending();
            if in_flight == 0 {
                break;
            }
            self.enter(in_flight)?;
            for cqe in self.ring.completion() {
                in_flight -= 1;
                let i = usize::try_from(cqe.user_data()).unwrap_or(usize::MAX);
                assert!(i < reqs.len(), "completion for unknown request {}", cqe.user_data());
                let res = cqe.result();
                let result = if res < 0 {
                    Err(io::Error::from_raw_os_error(res.wrapping_neg()))
                } else {
                    Ok(res as usize)
                };
                match self.transfers[i].advance(result, &self.path) {
                    Step::Done => {}
                    Step::Again => {
                        if first_error.is_none() {
                            self.pending.push(i);
                        }
                    }
                    Step::Failed(e) => {
                        if first_error.is_none() {
                            first_error = Some(e);
                            // The batch has failed: submit nothing more, but
                            // keep draining what is already in flight.
                            self.pending.clear();
                        }
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        self.sectors.extend(reqs.iter().map(|r| r.sectors));
        Ok(())
    }

    fn data(&self, i: usize) -> &[u8] {
        slot_data(&self.buf, self.slot_bytes, &self.sectors, i)
    }

    fn kind(&self) -> ReaderKind {
        ReaderKind::Uring
    }
}

impl Drop for UringReader {
    fn drop(&mut self) {
        if self.poisoned.is_some() {
            // Reads may still be in flight into `buf`, and closing the ring does
            // not wait for them: leak the memory rather than let the kernel
            // write into freed (and maybe reused) heap.
            std::mem::forget(std::mem::replace(&mut self.buf, AlignedBuf::empty()));
        }
    }
}

/// How to set up a reader's ring.
#[derive(Clone, Copy, Debug)]
pub(super) struct RingOptions {
    /// Submission queue entries (the kernel rounds up to a power of two).
    pub(super) entries: u32,
    /// Try to register the slot buffer (else always plain `Read`).
    pub(super) register_buffers: bool,
}

/// Where SQEs read from: the registered file slot or the raw descriptor.
#[derive(Clone, Copy)]
struct Target {
    fixed_file: bool,
    fd: i32,
}

impl Target {
    fn read(self, dst: *mut u8, len: u32, offset: u64) -> squeue::Entry {
        if self.fixed_file {
            opcode::Read::new(types::Fixed(0), dst, len).offset(offset).build()
        } else {
            opcode::Read::new(types::Fd(self.fd), dst, len).offset(offset).build()
        }
    }

    fn read_fixed(self, dst: *mut u8, len: u32, offset: u64) -> squeue::Entry {
        if self.fixed_file {
            opcode::ReadFixed::new(types::Fixed(0), dst, len, 0).offset(offset).build()
        } else {
            opcode::ReadFixed::new(types::Fd(self.fd), dst, len, 0).offset(offset).build()
        }
    }
}

/// Refuses rings whose kernel lacks `IORING_OP_READ` (before 5.6): there the
/// SQEs would fail one by one, so it is better to fall back to `pread` now.
fn check_opcodes(ring: &IoUring) -> Result<(), IoError> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|source| IoError::Setup { what: "probe io_uring opcodes", source })?;
    if !probe.is_supported(opcode::Read::CODE) || !probe.is_supported(opcode::ReadFixed::CODE) {
        return Err(IoError::Setup {
            what: "the kernel's io_uring lacks IORING_OP_READ",
            source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        });
    }
    Ok(())
}

fn is_transient_enter_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY))
}
