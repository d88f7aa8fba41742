//! `gen-N/ids`: internal slot -> external id, one fixed-width entry per
//! slot of the generation's graph, read by position (a search maps its top
//! k with k small reads; nothing is loaded whole, so 1e9 slots cost no RAM).
//! Written once, sequentially, by the merge or import that writes the
//! generation; a free slot (its point deleted, not yet reused) has tag 0.
//!
//! ```text
//! header (64 B): magic "BASALTID" | version u32 (1) | 0 u32 | count u64
//!                | free u64 | build id u64 | generation u64 | heap offset u64
//!                | 0 u32 | CRC-32C(0..60) u32
//! entries (16 B each, count): tag u8 (0 free, 1 u64, 2 string) | 0 u8
//!                | string length u16 | 0 u32 | value u64 (the number, or the
//!                string's absolute offset in the heap)
//! heap: the string ids' UTF-8 bytes, back to back
//! ```
//! The manifest records the file's size and XXH3 (`basalt verify` checks
//! it); every entry read is range-checked, so a damaged file gives an error,
//! never a wrong id past the heap.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::ids::{ExternalId, STRING_ID_BYTES_MAX};
use crate::format::{FileIdent, FormatError, crc32c, le_u32, le_u64};

pub const IDS_MAGIC: &[u8; 8] = b"BASALTID";
pub const IDS_VERSION: u32 = 1;
pub const IDS_HEADER_BYTES: u64 = 64;
pub const IDS_ENTRY_BYTES: u64 = 16;
const WRITE_BUFFER_BYTES: usize = 1 << 20;

const TAG_FREE: u8 = 0;
const TAG_NUM: u8 = 1;
const TAG_STR: u8 = 2;

fn encode_header(count: u64, free: u64, ident: FileIdent) -> [u8; IDS_HEADER_BYTES as usize] {
    let mut h = [0u8; IDS_HEADER_BYTES as usize];
    h[0..8].copy_from_slice(IDS_MAGIC);
    h[8..12].copy_from_slice(&IDS_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24..32].copy_from_slice(&free.to_le_bytes());
    h[32..48].copy_from_slice(&ident.encode());
    let heap = IDS_HEADER_BYTES + count * IDS_ENTRY_BYTES;
    h[48..56].copy_from_slice(&heap.to_le_bytes());
    let crc = crc32c(&h[..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Writes an ids file sequentially, slot 0 first.
pub struct IdFileWriter {
    path: PathBuf,
    entries: BufWriter<File>,
    /// Positioned writes of the heap (a dup'd descriptor shares the file
    /// offset, so the heap never seeks): bytes buffered, and where they go.
    heap_file: File,
    heap_buf: Vec<u8>,
    heap_flushed: u64,
    count: u64,
    written: u64,
    free: u64,
    heap_at: u64,
    ident: FileIdent,
}

impl IdFileWriter {
    pub fn create(path: &Path, count: u64, ident: FileIdent) -> Result<IdFileWriter, FormatError> {
        let io = |op, e| FormatError::io(path, op, e);
        let file = File::create(path).map_err(|e| io("create", e))?;
        let heap_file = file.try_clone().map_err(|e| io("dup", e))?;
        let heap_at = IDS_HEADER_BYTES + count * IDS_ENTRY_BYTES;
        let mut entries = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        entries.write_all(&[0u8; IDS_HEADER_BYTES as usize]).map_err(|e| io("write", e))?;
        Ok(IdFileWriter {
            path: path.to_path_buf(),
            entries,
            heap_file,
            heap_buf: Vec::new(),
            heap_flushed: heap_at,
            count,
            written: 0,
            free: 0,
            heap_at,
            ident,
        })
    }

    /// Appends the next slot's id (`None`: a free slot).
    pub fn append(&mut self, id: Option<&ExternalId>) -> Result<(), FormatError> {
        assert!(self.written < self.count, "more ids than slots");
        let mut e = [0u8; IDS_ENTRY_BYTES as usize];
        match id {
            None => {
                e[0] = TAG_FREE;
                self.free += 1;
            }
            Some(ExternalId::Num(n)) => {
                e[0] = TAG_NUM;
                e[8..16].copy_from_slice(&n.to_le_bytes());
            }
            Some(ExternalId::Str(s)) => {
                e[0] = TAG_STR;
                e[2..4].copy_from_slice(&(s.len() as u16).to_le_bytes());
                e[8..16].copy_from_slice(&self.heap_at.to_le_bytes());
                self.heap_buf.extend_from_slice(s.as_bytes());
                self.heap_at += s.len() as u64;
                if self.heap_buf.len() >= WRITE_BUFFER_BYTES {
                    self.flush_heap()?;
                }
            }
        }
        self.entries.write_all(&e).map_err(|err| FormatError::io(&self.path, "write", err))?;
        self.written += 1;
        Ok(())
    }

    fn flush_heap(&mut self) -> Result<(), FormatError> {
        self.heap_file
            .write_all_at(&self.heap_buf, self.heap_flushed)
            .map_err(|e| FormatError::io(&self.path, "write", e))?;
        self.heap_flushed += self.heap_buf.len() as u64;
        self.heap_buf.clear();
        Ok(())
    }

    /// Flushes both regions, writes the header, fsyncs. Returns the size.
    pub fn finish(mut self) -> Result<u64, FormatError> {
        assert_eq!(self.written, self.count, "every slot must be written");
        self.flush_heap()?;
        let io = |op, e| FormatError::io(&self.path, op, e);
        let file = self.entries.into_inner().map_err(|e| io("flush", e.into_error()))?;
        file.write_all_at(&encode_header(self.count, self.free, self.ident), 0)
            .map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("fsync", e))?;
        Ok(self.heap_at)
    }
}

/// An open ids file.
pub struct IdFile {
    path: PathBuf,
    file: File,
    count: u64,
    free: u64,
    heap: u64,
    bytes: u64,
}

impl IdFile {
    /// Opens and checks the header against the generation's identity and
    /// slot count.
    pub fn open(path: &Path, ident: FileIdent, count: u64) -> Result<IdFile, FormatError> {
        let file = File::open(path).map_err(|e| FormatError::io(path, "open", e))?;
        let bytes = file.metadata().map_err(|e| FormatError::io(path, "stat", e))?.len();
        let mut h = [0u8; IDS_HEADER_BYTES as usize];
        if bytes < IDS_HEADER_BYTES {
            return Err(FormatError::corrupt(path, 0, "shorter than the ids header"));
        }
        file.read_exact_at(&mut h, 0).map_err(|e| FormatError::io(path, "read", e))?;
        if &h[0..8] != IDS_MAGIC {
            return Err(FormatError::invalid(path, "not a basalt ids file (bad magic)"));
        }
        if le_u32(&h, 60) != crc32c(&h[..60]) {
            return Err(FormatError::corrupt(path, 60, "ids header checksum mismatch"));
        }
        if le_u32(&h, 8) != IDS_VERSION {
            return Err(FormatError::invalid(path, format!("ids version {}", le_u32(&h, 8))));
        }
        ident.expect(path, FileIdent::decode(&h, 32))?;
        let n = le_u64(&h, 16);
        let heap = le_u64(&h, 48);
        if n != count || heap != IDS_HEADER_BYTES + n * IDS_ENTRY_BYTES || heap > bytes {
            return Err(FormatError::corrupt(
                path,
                16,
                format!("{n} slots (heap at {heap}, file {bytes} B), the graph has {count}"),
            ));
        }
        Ok(IdFile { path: path.to_path_buf(), file, count: n, free: le_u64(&h, 24), heap, bytes })
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Free slots (deleted, not reused).
    pub fn free(&self) -> u64 {
        self.free
    }

    /// The id of `slot`, `None` for a free slot.
    pub fn get(&self, slot: u32) -> Result<Option<ExternalId>, FormatError> {
        let at = IDS_HEADER_BYTES + u64::from(slot) * IDS_ENTRY_BYTES;
        if u64::from(slot) >= self.count {
            return Err(FormatError::invalid(&self.path, format!("slot {slot} out of range")));
        }
        let mut e = [0u8; IDS_ENTRY_BYTES as usize];
        self.file
            .read_exact_at(&mut e, at)
            .map_err(|err| FormatError::io(&self.path, "read", err))?;
        self.decode_entry(&e, at)
    }

    fn decode_entry(&self, e: &[u8], at: u64) -> Result<Option<ExternalId>, FormatError> {
        let value = le_u64(e, 8);
        match e[0] {
            TAG_FREE => Ok(None),
            TAG_NUM => Ok(Some(ExternalId::Num(value))),
            TAG_STR => {
                let len = u16::from_le_bytes([e[2], e[3]]) as u64;
                if len == 0
                    || len as usize > STRING_ID_BYTES_MAX
                    || value < self.heap
                    || value.checked_add(len).is_none_or(|end| end > self.bytes)
                {
                    return Err(FormatError::corrupt(
                        &self.path,
                        at,
                        "string id entry out of range",
                    ));
                }
                let mut s = vec![0u8; len as usize];
                self.file
                    .read_exact_at(&mut s, value)
                    .map_err(|err| FormatError::io(&self.path, "read", err))?;
                let s = String::from_utf8(s)
                    .map_err(|_| FormatError::corrupt(&self.path, value, "string id not UTF-8"))?;
                ExternalId::from_string(&s)
                    .map(Some)
                    .map_err(|err| FormatError::corrupt(&self.path, value, err.to_string()))
            }
            t => Err(FormatError::corrupt(&self.path, at, format!("unknown id tag {t}"))),
        }
    }

    /// Every slot's id in order, read in blocks (a merge's sequential pass).
    pub fn scan(&self) -> IdScan<'_> {
        IdScan { file: self, next: 0, block: Vec::new(), block_start: 0 }
    }
}

/// A sequential reader of an ids file.
pub struct IdScan<'a> {
    file: &'a IdFile,
    next: u64,
    block: Vec<u8>,
    block_start: u64,
}

const SCAN_BLOCK_ENTRIES: u64 = 65_536;

impl Iterator for IdScan<'_> {
    type Item = Result<Option<ExternalId>, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.file.count {
            return None;
        }
        let in_block = self.next - self.block_start;
        if self.block.is_empty() || in_block * IDS_ENTRY_BYTES >= self.block.len() as u64 {
            let n = SCAN_BLOCK_ENTRIES.min(self.file.count - self.next);
            self.block.resize((n * IDS_ENTRY_BYTES) as usize, 0);
            self.block_start = self.next;
            let at = IDS_HEADER_BYTES + self.next * IDS_ENTRY_BYTES;
            if let Err(e) = self.file.file.read_exact_at(&mut self.block, at) {
                self.next = self.file.count;
                return Some(Err(FormatError::io(&self.file.path, "read", e)));
            }
        }
        let i = ((self.next - self.block_start) * IDS_ENTRY_BYTES) as usize;
        let at = IDS_HEADER_BYTES + self.next * IDS_ENTRY_BYTES;
        self.next += 1;
        let e = self.block[i..i + IDS_ENTRY_BYTES as usize].to_vec();
        Some(self.file.decode_entry(&e, at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids written are read back by position and by scan; a file of another
    /// generation or a damaged entry is refused.
    #[test]
    fn ids_file_round_trip_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        let ident = FileIdent { build_id: 9, generation: 3 };
        let ids = vec![
            Some(ExternalId::Num(42)),
            None,
            Some(ExternalId::Str("alpha".into())),
            Some(ExternalId::Num(u64::MAX)),
            Some(ExternalId::Str("b".repeat(STRING_ID_BYTES_MAX))),
        ];
        let mut w = IdFileWriter::create(&path, ids.len() as u64, ident).unwrap();
        for id in &ids {
            w.append(id.as_ref()).unwrap();
        }
        w.finish().unwrap();
        let f = IdFile::open(&path, ident, 5).unwrap();
        assert_eq!(f.free(), 1);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(&f.get(i as u32).unwrap(), id);
        }
        let scanned: Vec<_> = f.scan().map(|r| r.unwrap()).collect();
        assert_eq!(scanned, ids);
        assert!(f.get(5).is_err());
        let other = FileIdent { build_id: 9, generation: 4 };
        assert!(matches!(IdFile::open(&path, other, 5), Err(FormatError::Foreign { .. })));
        assert!(IdFile::open(&path, ident, 6).is_err(), "slot count must match the graph");
        // Point a string entry past the end of the file.
        let mut b = std::fs::read(&path).unwrap();
        let e = (IDS_HEADER_BYTES + 2 * IDS_ENTRY_BYTES) as usize;
        b[e + 8..e + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        std::fs::write(&path, &b).unwrap();
        let f = IdFile::open(&path, ident, 5).unwrap();
        assert!(matches!(f.get(2), Err(FormatError::Corrupt { .. })));
    }
}
