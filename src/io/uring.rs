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
//! its completion is reaped. The reader counts the operations it has pushed
//! and not reaped (`in_flight`, a field, not a local, so that it is still
//! right when a panic unwinds out of `read`). `read` normally returns only
//! with nothing in flight: after the first error it stops submitting and
//! drains every outstanding completion before it reports the error. Two
//! things can leave operations in flight: a failing `io_uring_enter` (the
//! reader is then poisoned: every later read fails) and a panic between a
//! submission and its completion. Whatever the reason, `Drop` first asks the
//! kernel to cancel what it still holds, then reaps completions for at most
//! [`DROP_REAP_TIMEOUT`]; if anything is still in flight after that, the slot
//! buffer is leaked (counted in [`leaked_buffer_bytes`]) rather than freed
//! under the kernel's feet. A drop therefore never hangs and never frees
//! memory the kernel may still write.
//!
//! The slot buffer is registered with the ring when RLIMIT_MEMLOCK allows, so
//! reads use `IORING_OP_READ_FIXED` and skip per-I/O page pinning; otherwise
//! plain `IORING_OP_READ` ([`UringReader::registered`] says which). The file is
//! registered too when possible, to skip the per-I/O file table lookup.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, Probe, opcode, squeue, types};

use super::{
    AlignedBuf, IoError, ReadRequest, ReaderKind, SectorReader, SlotState, Step, Transfer,
    check_batch, check_config, check_request, done_slot_data, slot_data,
};

/// How many times one `io_uring_enter` is retried after EINTR, EAGAIN or EBUSY
/// before the reader gives up and poisons itself.
const ENTER_RETRIES_MAX: u32 = 1024;

/// Longest a dropped reader waits for operations still in flight before it
/// leaks their buffer instead. Disk reads finish in milliseconds and blocked
/// ones are cancelled first, so this bound is reached only when the kernel
/// neither completes nor cancels (a hung device).
pub const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(2);

/// One wait of the drop-time reaping loop (it re-checks its deadline after each).
const DROP_REAP_WAIT: Duration = Duration::from_millis(20);

/// `user_data` of the cancel request pushed on drop; batch requests use
/// their index, which is below `REQUESTS_PER_BATCH_MAX`.
const CANCEL_USER_DATA: u64 = u64::MAX;
/// `user_data` of the timeout requests of the drop-time wait on kernels
/// without IORING_ENTER_EXT_ARG.
const TIMEOUT_USER_DATA: u64 = u64::MAX - 1;

/// Bytes of slot buffers leaked by dropped readers whose reads the kernel
/// still held (process-wide; the daemon exports it as a metric).
static LEAKED_BUFFER_BYTES: AtomicU64 = AtomicU64::new(0);

/// Bytes of slot buffers leaked so far by readers dropped with reads in flight.
pub fn leaked_buffer_bytes() -> u64 {
    LEAKED_BUFFER_BYTES.load(Ordering::Relaxed)
}

/// How a dropped reader parted with its slot buffer (kept for tests).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct DropOutcome {
    /// Operations in flight when the drop began.
    pub(super) in_flight_at_drop: usize,
    /// Operations still in flight when the reader gave up (0: all reaped).
    pub(super) in_flight_at_end: usize,
    /// Whether the buffer was leaked instead of freed.
    pub(super) leaked: bool,
}

/// Faults tests inject into a reader.
#[cfg(test)]
#[derive(Clone, Debug, Default)]
pub(super) struct Faults {
    /// Panic inside `read` right after the first submission, reads in flight.
    pub(super) panic_after_submit: bool,
    /// Do not ask the kernel to cancel on drop (to reach the leak path).
    pub(super) no_cancel_on_drop: bool,
    /// Bound of the drop-time reaping (instead of [`DROP_REAP_TIMEOUT`]).
    pub(super) drop_reap_timeout: Option<Duration>,
    /// Where the drop reports what it did.
    pub(super) drop_outcome: Option<Arc<std::sync::Mutex<Option<DropOutcome>>>>,
}

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
    /// Operations pushed to the ring whose completions have not been reaped:
    /// while it is non-zero the kernel may write into `buf`.
    in_flight: usize,
    /// The errno of a failed `io_uring_enter` that left reads in flight.
    poisoned: Option<i32>,
    /// Pipelined use: each slot's state (`batch_max` of them).
    states: Vec<SlotState>,
    /// Pipelined use: slots queued or in flight, not yet returned by `wait`.
    busy: usize,
    /// How long a blocking `wait` spins before it sleeps.
    spin: Duration,
    #[cfg(test)]
    pub(super) faults: Faults,
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
        // Failure (typically ENOMEM from RLIMIT_MEMLOCK, which io_uring charges
        // per user, across processes) only means plain `Read` instead of `ReadFixed`.
        let registration = if options.register_buffers {
            register_slot_buffer(&ring, &mut buf)
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
            in_flight: 0,
            poisoned: None,
            states: vec![SlotState::Free; batch_max],
            busy: 0,
            spin: Duration::ZERO,
            #[cfg(test)]
            faults: Faults::default(),
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

    /// Operations submitted and not yet reaped (0 between reads).
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Pushes as many pending requests as the submission queue has room for
    /// and counts them in flight. The rest stay pending for the next round,
    /// after `io_uring_enter` has emptied the queue.
    fn push_pending(&mut self) {
        let target = Target { fixed_file: self.file_registered, fd: self.file.as_raw_fd() };
        let base = self.buf.as_mut_ptr();
        let mut sq = self.ring.submission();
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
            if !push_read(&mut sq, &entry) {
                break;
            }
            self.pending.pop();
            // Counted before anything can panic: from here on the slot is the kernel's.
            self.in_flight += 1;
        }
    }

    /// Submits what is queued and waits until `want` operations have
    /// completed. Transient failures are retried; anything else poisons the
    /// reader, since completions of operations in flight may never arrive.
    fn enter(&mut self, want: usize) -> Result<(), IoError> {
        let mut failures = 0;
        loop {
            match self.ring.submit_and_wait(want) {
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

    /// Submits `reqs` without waiting for them (tests: a reader dropped with
    /// reads in flight).
    #[cfg(test)]
    pub(super) fn submit_only(&mut self, reqs: &[ReadRequest]) -> Result<(), IoError> {
        check_batch(reqs, self.batch_max, self.sectors_per_request_max)?;
        self.transfers.clear();
        self.transfers.extend(reqs.iter().map(Transfer::new));
        self.pending.clear();
        self.pending.extend((0..reqs.len()).rev());
        self.push_pending();
        self.ring.submit().map_err(|source| IoError::Setup { what: "submit", source })?;
        Ok(())
    }

    /// The error of a reader whose `io_uring_enter` failed with reads in flight.
    fn poisoned_error(&self) -> Option<IoError> {
        self.poisoned.map(|errno| IoError::Setup {
            what: "an earlier io_uring_enter failed with reads in flight; reader unusable",
            source: io::Error::from_raw_os_error(errno),
        })
    }

    /// Pipelined use: forgets what is queued, then waits for every read in
    /// flight and frees its slot. Returns false when the ring failed with
    /// reads still in flight (the reader is then poisoned, and `Drop` deals
    /// with the buffer).
    fn settle(&mut self) -> bool {
        for i in self.pending.drain(..) {
            self.states[i] = SlotState::Free;
        }
        while self.in_flight > 0 {
            if self.enter(self.in_flight).is_err() {
                return false;
            }
            for cqe in self.ring.completion() {
                self.in_flight -= 1;
                if let Some(state) =
                    usize::try_from(cqe.user_data()).ok().and_then(|i| self.states.get_mut(i))
                {
                    *state = SlotState::Free;
                }
            }
        }
        for state in &mut self.states {
            if *state == SlotState::Busy {
                *state = SlotState::Free;
            }
        }
        self.busy = 0;
        true
    }

    /// Cancels and reaps every operation still in flight, waiting at most
    /// `timeout`. Returns true when nothing is left in flight.
    fn quiesce(&mut self, timeout: Duration, cancel: bool) -> bool {
        if self.in_flight == 0 {
            return true;
        }
        if cancel {
            // Reads blocked in the kernel (on a pipe, or a device that stopped
            // answering) end with ECANCELED; disk reads already under way
            // simply complete. Best effort: if the queue is full or the kernel
            // predates 5.19, the loop below still waits for completions.
            let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(CANCEL_USER_DATA);
            let mut sq = self.ring.submission();
            let _ = push_read(&mut sq, &entry);
        }
        let deadline = Instant::now() + timeout;
        // Waits with a timeout need IORING_ENTER_EXT_ARG (5.11); older
        // kernels get a timeout request in the ring instead.
        let ext_arg = self.ring.params().is_feature_ext_arg();
        loop {
            for cqe in self.ring.completion() {
                if cqe.user_data() < TIMEOUT_USER_DATA {
                    debug_assert!(self.in_flight > 0, "a completion nothing was waiting for");
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
            }
            if self.in_flight == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = types::Timespec::from((deadline - now).min(DROP_REAP_WAIT));
            let entered = if ext_arg {
                let args = types::SubmitArgs::new().timespec(&wait);
                self.ring.submitter().submit_with_args(1, &args)
            } else {
                // The kernel copies the timespec when it takes the request.
                let entry = opcode::Timeout::new(&wait).build().user_data(TIMEOUT_USER_DATA);
                let pushed = push_read(&mut self.ring.submission(), &entry);
                if !pushed {
                    return false;
                }
                self.ring.submit_and_wait(1)
            };
            match entered {
                Ok(_) => {}
                // ETIME: this wait ended without a completion; EINTR/EAGAIN/EBUSY: try again.
                Err(e) if e.raw_os_error() == Some(libc::ETIME) || is_transient_enter_error(&e) => {
                }
                // The ring itself is broken: nothing more can be learnt from it.
                Err(_) => return false,
            }
        }
    }
}

/// Registers `buf` as the ring's fixed buffer 0.
#[allow(unsafe_code, reason = "io_uring buffer registration hands the kernel a raw pointer")]
fn register_slot_buffer(ring: &IoUring, buf: &mut AlignedBuf) -> io::Result<()> {
    let iovec = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: the iovec covers exactly `buf`'s allocation. `buf` moves into
    // the reader together with the ring; its heap memory never moves or
    // shrinks, and it outlives the ring: the ring is dropped first (field
    // order), and `Drop` leaks `buf` if the kernel may still write into it.
    unsafe { ring.submitter().register_buffers(&[iovec]) }
}

/// Pushes one SQE; false when the submission queue is full.
#[allow(unsafe_code, reason = "an SQE carries a raw buffer pointer the kernel writes through")]
fn push_read(sq: &mut io_uring::SubmissionQueue<'_>, entry: &squeue::Entry) -> bool {
    // SAFETY: every entry pushed here is either a cancel or timeout request
    // (no buffer; the kernel copies a timeout's timespec when it takes the
    // request) or a read whose destination lies inside one slot of the reader's `buf`
    // (asserted in `push_pending`). That slot stays allocated and untouched by
    // Rust code until the completion is reaped: the reader counts the
    // operation in `in_flight` at once, `read` does not return (except by
    // poisoning or a panic) while it is non-zero, and `Drop` reaps it or
    // leaks `buf`. With `ReadFixed`, the range is inside registered buffer 0.
    unsafe { sq.push(entry) }.is_ok()
}

impl SectorReader for UringReader {
    fn read(&mut self, reqs: &[ReadRequest]) -> Result<(), IoError> {
        self.sectors.clear();
        if let Some(e) = self.poisoned_error() {
            return Err(e);
        }
        assert_eq!(self.in_flight, 0, "a read starts with nothing in flight");
        assert_eq!(self.busy, 0, "a batch read starts with no pipelined read pending");
        // The batch overwrites the pipelined slots.
        self.states.fill(SlotState::Free);
        check_batch(reqs, self.batch_max, self.sectors_per_request_max)?;
        self.transfers.clear();
        self.transfers.extend(reqs.iter().map(Transfer::new));
        self.pending.clear();
        // Popped from the end, so requests are submitted in batch order.
        self.pending.extend((0..reqs.len()).rev());

        let mut first_error = None;
        loop {
            self.push_pending();
            if self.in_flight == 0 {
                break;
            }
            #[cfg(test)]
            if self.faults.panic_after_submit {
                let _ = self.ring.submit();
                panic!("injected panic with {} reads in flight", self.in_flight);
            }
            self.enter(self.in_flight)?;
            for cqe in self.ring.completion() {
                self.in_flight -= 1;
                let i = usize::try_from(cqe.user_data()).unwrap_or(usize::MAX);
                assert!(i < reqs.len(), "completion for unknown request {}", cqe.user_data());
                match self.transfers[i].advance(transfer_result(cqe.result()), &self.path) {
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

    fn slots(&self) -> usize {
        self.batch_max
    }

    fn submit(&mut self, slot: usize, req: ReadRequest) -> Result<(), IoError> {
        if let Some(e) = self.poisoned_error() {
            return Err(e);
        }
        let checked = if slot >= self.batch_max {
            Err(IoError::BatchTooLarge { requested: slot + 1, max: self.batch_max })
        } else {
            check_request(slot, &req, self.sectors_per_request_max)
        };
        if let Err(e) = checked {
            // The caller gives up on this search: nothing stays in flight.
            self.settle();
            return Err(e);
        }
        assert!(self.states[slot] != SlotState::Busy, "slot {slot} is already being read");
        // A batch read may have left fewer transfers than slots.
        if self.transfers.len() < self.batch_max {
            self.transfers.resize(self.batch_max, Transfer::new(&req));
        }
        // The last batch's bytes are no longer valid once a slot is reused.
        self.sectors.clear();
        self.transfers[slot] = Transfer::new(&req);
        self.states[slot] = SlotState::Busy;
        self.busy += 1;
        self.pending.push(slot);
        // Into the submission queue now; the kernel sees it at the next enter.
        self.push_pending();
        Ok(())
    }

    fn wait(&mut self, done: &mut Vec<usize>, block: bool) -> Result<(), IoError> {
        if let Some(e) = self.poisoned_error() {
            return Err(e);
        }
        let before = done.len();
        let mut first_error = None;
        while self.busy > 0 && done.len() == before && first_error.is_none() {
            self.push_pending();
            if self.in_flight == 0 {
                break;
            }
            if block {
                if !self.ring.submission().is_empty() {
                    self.enter(0)?;
                }
                // Spin on the shared completion queue for a while first:
                // waking from a sleep costs a context switch and the
                // scheduler's latency on every wait.
                if !self.spin.is_zero() {
                    let spin_until = Instant::now() + self.spin;
                    while self.ring.completion().is_empty() && Instant::now() < spin_until {
                        std::hint::spin_loop();
                    }
                }
                if self.ring.completion().is_empty() {
                    self.enter(1)?;
                }
            } else if !self.ring.submission().is_empty() {
                // Only the queue's new entries need a system call; the
                // completion queue is shared memory.
                self.enter(0)?;
            }
            for cqe in self.ring.completion() {
                self.in_flight -= 1;
                let i = usize::try_from(cqe.user_data()).unwrap_or(usize::MAX);
                assert!(
                    self.states.get(i) == Some(&SlotState::Busy),
                    "completion for slot {} that is not being read",
                    cqe.user_data()
                );
                match self.transfers[i].advance(transfer_result(cqe.result()), &self.path) {
                    Step::Done => {
                        let sectors = self.transfers[i].len / crate::format::SECTOR_BYTES as u32;
                        self.states[i] = SlotState::Done { sectors };
                        self.busy -= 1;
                        done.push(i);
                    }
                    Step::Again => self.pending.push(i),
                    Step::Failed(e) => {
                        self.states[i] = SlotState::Free;
                        self.busy -= 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            if !block {
                break;
            }
        }
        if let Some(e) = first_error {
            // The caller gives up on this search: nothing stays in flight.
            for &i in &done[before..] {
                self.states[i] = SlotState::Free;
            }
            done.truncate(before);
            self.settle();
            return Err(e);
        }
        Ok(())
    }

    fn slot(&self, slot: usize) -> &[u8] {
        done_slot_data(&self.buf, self.slot_bytes, &self.states, slot)
    }

    fn pending(&self) -> usize {
        self.busy
    }

    fn discard(&mut self) {
        self.settle();
    }

    fn set_spin_wait(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

impl Drop for UringReader {
    fn drop(&mut self) {
        let in_flight_at_drop = self.in_flight;
        #[cfg(not(test))]
        let (timeout, cancel) = (DROP_REAP_TIMEOUT, true);
        #[cfg(test)]
        let (timeout, cancel) = (
            self.faults.drop_reap_timeout.unwrap_or(DROP_REAP_TIMEOUT),
            !self.faults.no_cancel_on_drop,
        );
        let leaked = !self.quiesce(timeout, cancel);
        if leaked {
            // The kernel may still write into `buf`, and closing the ring does
            // not wait for it: leak the memory rather than let it land in
            // freed (and maybe reused) heap.
            let buf = std::mem::replace(&mut self.buf, AlignedBuf::empty());
            LEAKED_BUFFER_BYTES.fetch_add(buf.len() as u64, Ordering::Relaxed);
            std::mem::forget(buf);
        }
        #[cfg(test)]
        if let Some(report) = &self.faults.drop_outcome
            && let Ok(mut slot) = report.lock()
        {
            *slot =
                Some(DropOutcome { in_flight_at_drop, in_flight_at_end: self.in_flight, leaked });
        }
        let _ = in_flight_at_drop;
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

/// A read's completion code as bytes read or the error it reports.
fn transfer_result(res: i32) -> io::Result<usize> {
    if res < 0 { Err(io::Error::from_raw_os_error(res.wrapping_neg())) } else { Ok(res as usize) }
}

fn is_transient_enter_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY))
}
