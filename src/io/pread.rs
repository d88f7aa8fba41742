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
    AlignedBuf, IoError, ReadRequest, ReaderKind, SectorReader, Step, Transfer, check_batch,
    check_config, slot_data,
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
}
