//! Reading a live log from an LSN onward: what the replication shipper
//! streams. The reader follows the segment files as they grow and roll,
//! decodes whole records only, and never returns a record past the LSN its
//! caller says is durable (a record being written is not read half-way:
//! bytes past the last complete record wait for the next call).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{
    Bad, Lsn, RECORD_HEADER_BYTES, Record, SEGMENT_HEADER_BYTES, SEGMENT_SUFFIX, WalError,
    decode_record_at, encode_segment_header, segment_name,
};

/// Bytes read from a segment file per call at most (a larger record is
/// read whole).
const READ_CHUNK: usize = 1 << 20;

/// A cursor over a log directory.
pub struct WalReader {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes of the current segment consumed (whole records).
    offset: u64,
    /// Read but not yet decoded (a record's start at index 0).
    pending: Vec<u8>,
    next_lsn: Lsn,
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> WalError + 'a {
    move |source| WalError::Io { path: path.to_path_buf(), op, source }
}

/// First LSNs of the segments in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<Lsn>, WalError> {
    let mut firsts: Vec<Lsn> = std::fs::read_dir(dir)
        .map_err(io(dir, "list"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(SEGMENT_SUFFIX).and_then(|s| s.parse::<u64>().ok())
        })
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

impl WalReader {
    /// A reader whose first record is `from` (at least 1). `Ok(None)`: the
    /// log no longer holds `from` (removed after a merge), or does not yet
    /// reach the segment that would.
    pub fn open(dir: &Path, from: Lsn) -> Result<Option<WalReader>, WalError> {
        let firsts = list_segments(dir)?;
        let Some(&first) = firsts.iter().rev().find(|&&f| f <= from.max(1)) else {
            return Ok(None);
        };
        let path = dir.join(segment_name(first));
        let Some(mut r) = WalReader::at_segment(dir, &path, first)? else { return Ok(None) };
        // Skip to `from` (only whole, durable records are ever skipped: the
        // caller asks for an LSN at most one past the durable one).
        while r.next_lsn < from {
            let got = r.read(from - 1, 16 << 20)?;
            if got.is_empty() {
                return Ok(None);
            }
        }
        Ok(Some(r))
    }

    fn at_segment(dir: &Path, path: &Path, first: Lsn) -> Result<Option<WalReader>, WalError> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(path, "open")(e)),
        };
        let mut h = [0u8; SEGMENT_HEADER_BYTES];
        match file.read_exact(&mut h) {
            Ok(()) => {}
            // Being created: its header is not all written yet.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io(path, "read")(e)),
        }
        if h != encode_segment_header(first) {
            return Err(WalError::Corrupt {
                path: path.to_path_buf(),
                offset: 0,
                what: "bad segment header".into(),
            });
        }
        Ok(Some(WalReader {
            dir: dir.to_path_buf(),
            path: path.to_path_buf(),
            file,
            offset: SEGMENT_HEADER_BYTES as u64,
            pending: Vec::new(),
            next_lsn: first,
        }))
    }

    /// The LSN the next record read will have.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Records from the cursor up to `durable` (inclusive), at most
    /// `max_bytes` of bodies unless the first record alone is larger (one
    /// record is always returned when one is there, so a frame holds at
    /// most `max(max_bytes, RECORD_BODY_MAX)` of bodies). Empty: nothing
    /// new yet.
    pub fn read(&mut self, durable: Lsn, max_bytes: usize) -> Result<Vec<Record>, WalError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while self.next_lsn <= durable && (out.is_empty() || bytes < max_bytes) {
            match decode_record_at(&self.pending, 0, self.next_lsn) {
                Ok((rec, end)) => {
                    if !out.is_empty() && bytes + rec.body.len() > max_bytes {
                        // Left for the next read (nothing consumed).
                        break;
                    }
                    self.pending.drain(..end);
                    self.offset += end as u64;
                    self.next_lsn += 1;
                    bytes += rec.body.len();
                    out.push(rec);
                }
                Err(Bad::Short) => {
                    let want = if self.pending.len() >= RECORD_HEADER_BYTES {
                        let len =
                            u32::from_le_bytes(self.pending[0..4].try_into().expect("4 bytes"))
                                as usize;
                        (RECORD_HEADER_BYTES + len).max(READ_CHUNK)
                    } else {
                        READ_CHUNK
                    };
                    if self.fill(want)? == 0 {
                        // End of this segment's bytes: the next record is
                        // in the next segment, or not written yet.
                        if !self.pending.is_empty() || !self.roll()? {
                            break;
                        }
                    }
                }
                Err(Bad::Invalid(what)) => {
                    return Err(WalError::Corrupt {
                        path: self.path.clone(),
                        offset: self.offset,
                        what,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Reads up to `want` more bytes; returns how many.
    fn fill(&mut self, want: usize) -> Result<usize, WalError> {
        let start = self.pending.len();
        self.pending.resize(start + want, 0);
        let at = self.offset + start as u64;
        self.file.seek(SeekFrom::Start(at)).map_err(io(&self.path, "seek"))?;
        let mut got = 0;
        while got < want {
            match self.file.read(&mut self.pending[start + got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(&self.path, "read")(e)),
            }
        }
        self.pending.truncate(start + got);
        Ok(got)
    }

    /// Moves to the segment starting at `next_lsn` when it exists.
    fn roll(&mut self) -> Result<bool, WalError> {
        let path = self.dir.join(segment_name(self.next_lsn));
        match WalReader::at_segment(&self.dir, &path, self.next_lsn)? {
            Some(r) => {
                *self = r;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
