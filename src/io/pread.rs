//! The portable sector reader: one `pread` per request, one after another.
//!
//! Used where io_uring is unavailable (old kernels, `kernel.io_uring_disabled`,
//! seccomp sandboxes) or when chosen explicitly. It has the same contract as
//! the io_uring reader but no parallelism within a batch, so a search round
//! costs the sum of its reads' latencies rather than their maximum.
//!
//! Each request goes to its own preallocated slot of the reader's
//! [`AlignedBuf`]; short reads and EINTR are retried from where they stopped,
//! up to [`RESUBMITS_PER_REQUEST_MAX`](super::RESUBMITS_PER_REQUEST_MAX) times, and end of file is a
//! [`IoError::ShortRead`].

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{
    AlignedBuf, IoError, ReadRequest, ReaderKind, SectorReader, SlotState, Step, Transfer,
    check_batch, check_config, check_request, done_slot_data, slot_data,
};

/// Reads sectors with `pread(2)`, one request at a time.
pub struct PreadReader {
    file: Arc<File>,
    path: PathBuf,
    batch_max: usize,
    sectors_per_request_max: u32,
    /// Bytes per slot: `sectors_per_request_max * SECTOR_BYTES`.
    slot_bytes: usize,
    /// `batch_max` slots, request `i` of a batch lands in slot `i`.
    buf: AlignedBuf,
    /// Sectors of each request of the last successful read; empty after a failure.
    sectors: Vec<u32>,
    /// Pipelined use: each slot's state (`batch_max` of them).
    states: Vec<SlotState>,
    /// Pipelined use: slots read by `submit`, not yet returned by `wait`.
    completed: Vec<usize>,
}

impl PreadReader {
    /// A reader of `file` (which may be opened with O_DIRECT) with room for
    /// `batch_max` requests of up to `sectors_per_request_max` sectors each.
    pub fn new(
        file: Arc<File>,
        path: PathBuf,
        batch_max: usize,
        sectors_per_request_max: u32,
    ) -> Result<PreadReader, IoError> {
        let slot_bytes = check_config(batch_max, sectors_per_request_max)?;
        let buf = AlignedBuf::zeroed(slot_bytes * batch_max)?;
        Ok(PreadReader {
            file,
            path,
            batch_max,
            sectors_per_request_max,
            slot_bytes,
            buf,
            sectors: Vec::with_capacity(batch_max),
            states: vec![SlotState::Free; batch_max],
            completed: Vec::with_capacity(batch_max),
        })
    }

    /// Fills slot `slot` with the bytes of `req`.
    fn read_one(&mut self, slot: usize, req: &ReadRequest) -> Result<(), IoError> {
        let start = slot * self.slot_bytes;
        let mut transfer = Transfer::new(req);
        loop {
            let at = start + transfer.done as usize;
            let dst = &mut self.buf[at..at + transfer.remaining() as usize];
            let result = self.file.read_at(dst, transfer.next_offset());
            match transfer.advance(result, &self.path) {
                Step::Done => return Ok(()),
                Step::Again => {}
                Step::Failed(e) => return Err(e),
            }
        }
    }
}

impl SectorReader for PreadReader {
    fn read(&mut self, reqs: &[ReadRequest]) -> Result<(), IoError> {
        self.sectors.clear();
        assert!(
            self.completed.is_empty(),
            "a batch read starts with no pipelined read pending (as io_uring's does)"
        );
        // The batch overwrites the pipelined slots.
        self.states.fill(SlotState::Free);
        check_batch(reqs, self.batch_max, self.sectors_per_request_max)?;
        for (slot, req) in reqs.iter().enumerate() {
            self.read_one(slot, req)?;
        }
        self.sectors.extend(reqs.iter().map(|r| r.sectors));
        Ok(())
    }

    fn data(&self, i: usize) -> &[u8] {
        slot_data(&self.buf, self.slot_bytes, &self.sectors, i)
    }

    fn kind(&self) -> ReaderKind {
        ReaderKind::Pread
    }

    fn slots(&self) -> usize {
        self.batch_max
    }

    fn submit(&mut self, slot: usize, req: ReadRequest) -> Result<(), IoError> {
        if slot >= self.batch_max {
            self.discard();
            return Err(IoError::BatchTooLarge { requested: slot + 1, max: self.batch_max });
        }
        assert!(self.states[slot] != SlotState::Busy, "slot {slot} is already being read");
        // `read`'s slots and these are the same memory.
        self.sectors.clear();
        self.states[slot] = SlotState::Free;
        let read = check_request(slot, &req, self.sectors_per_request_max)
            .and_then(|()| self.read_one(slot, &req));
        if let Err(e) = read {
            // As with io_uring: after an error nothing is pending.
            self.discard();
            return Err(e);
        }
        self.states[slot] = SlotState::Done { sectors: req.sectors };
        self.completed.push(slot);
        Ok(())
    }

    fn wait(&mut self, done: &mut Vec<usize>, _block: bool) -> Result<(), IoError> {
        done.append(&mut self.completed);
        Ok(())
    }

    fn slot(&self, slot: usize) -> &[u8] {
        done_slot_data(&self.buf, self.slot_bytes, &self.states, slot)
    }

    fn pending(&self) -> usize {
        self.completed.len()
    }

    fn discard(&mut self) {
        for slot in self.completed.drain(..) {
            self.states[slot] = SlotState::Free;
        }
    }
}
