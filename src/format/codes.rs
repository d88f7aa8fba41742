//! The PQ codes file (`gen-N/codes`): one M-byte PQ code per node, loaded
//! whole into RAM by search (it is the in-memory half of a disk index).
//!
//! Layout, little-endian:
//!
//! ```text
//! offset  size   field
//! 0       8      magic "BASALTPC"
//! 8       4      u32 format version (2)
//! 12      4      u32 chunks M (bytes per code)
//! 16      8      u64 node count N
//! 24      8      u64 build id   } the index these
//! 32      8      u64 generation } codes belong to
//! 40      N*M    codes, node i at 40 + i*M
//! 40+N*M  4      u32 CRC-32C of bytes [0, 40 + N*M)
//! ```
//!
//! [`CodesWriter`] streams rows in node order through a buffer, checks that
//! exactly N whole rows arrive, then writes the checksum and fsyncs; the
//! caller owns temporary names and renames. A failed write poisons the
//! writer. [`read_codes`] checks the length against the header before it
//! allocates, then the checksum; every defect is an error naming the file,
//! never a panic. Limits: M <= [`CODES_CHUNKS_MAX`], N <= [`CODES_NODES_MAX`].

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{FileIdent, FormatError, IDENT_BYTES, crc32c, crc32c_append, le_u32, le_u64};
use crate::distance::DIM_MAX;

pub const CODES_MAGIC: &[u8; 8] = b"BASALTPC";
pub const CODES_VERSION: u32 = 2;
/// Bytes before the first code.
pub const CODES_HEADER_BYTES: usize = 40;
/// Largest M: a chunk holds at least one dimension.
pub const CODES_CHUNKS_MAX: usize = DIM_MAX;
/// Largest N: node ids are `u32`.
pub const CODES_NODES_MAX: u64 = super::NODES_MAX;

const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// A file being written through a buffer while its CRC-32C is kept up to
/// date, ending with the checksum, a flush and an fsync.
pub(crate) struct ChecksumWriter {
    path: PathBuf,
    out: BufWriter<File>,
    crc: u32,
    poisoned: bool,
}

impl ChecksumWriter {
    /// Creates (or truncates) `path`.
    pub(crate) fn create(path: &Path) -> Result<ChecksumWriter, FormatError> {
        let file = File::create(path).map_err(|e| FormatError::io(path, "create", e))?;
        Ok(ChecksumWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            crc: 0,
            poisoned: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        if self.poisoned {
            // The bytes already handed to the kernel are unknown after a
            // failure; the file must be rewritten from scratch.
            return Err(FormatError::invalid(
                &self.path,
                "refusing to write after an earlier write failed",
            ));
        }
        self.crc = crc32c_append(self.crc, bytes);
        self.out.write_all(bytes).map_err(|e| {
            self.poisoned = true;
            FormatError::io(&self.path, "write", e)
        })
    }

    /// Appends the CRC-32C of everything written, flushes and fsyncs;
    /// returns the CRC.
    pub(crate) fn finish(mut self) -> Result<u32, FormatError> {
        let crc = self.crc;
        self.write(&crc.to_le_bytes())?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| FormatError::io(&self.path, "flush", e.into_error()))?;
        file.sync_all().map_err(|e| FormatError::io(&self.path, "fsync", e))?;
        Ok(crc)
    }
}

/// Streams the codes of N nodes, in node order, into a codes file.
pub struct CodesWriter {
    out: ChecksumWriter,
    chunks: usize,
    n: u64,
    rows: u64,
}

impl CodesWriter {
    /// Creates `path` for `n` codes of `chunks` bytes of the index `ident`
    /// and writes the header.
    pub fn create(
        path: &Path,
        chunks: usize,
        n: u64,
        ident: FileIdent,
    ) -> Result<CodesWriter, FormatError> {
        if !(1..=CODES_CHUNKS_MAX).contains(&chunks) {
            return Err(FormatError::invalid(
                path,
                format!(
                    "code length {chunks} is outside 1..={CODES_CHUNKS_MAX} (CODES_CHUNKS_MAX)"
                ),
            ));
        }
        if n > CODES_NODES_MAX {
            return Err(FormatError::invalid(
                path,
                format!("{n} nodes is over {CODES_NODES_MAX} (CODES_NODES_MAX)"),
            ));
        }
        let mut out = ChecksumWriter::create(path)?;
        let mut header = [0u8; CODES_HEADER_BYTES];
        header[0..8].copy_from_slice(CODES_MAGIC);
        header[8..12].copy_from_slice(&CODES_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&(chunks as u32).to_le_bytes());
        header[16..24].copy_from_slice(&n.to_le_bytes());
        header[24..24 + IDENT_BYTES].copy_from_slice(&ident.encode());
        out.write(&header)?;
        Ok(CodesWriter { out, chunks, n, rows: 0 })
    }

    /// Appends whole codes (a multiple of M bytes) for the next nodes.
    pub fn append(&mut self, codes: &[u8]) -> Result<(), FormatError> {
        if !codes.len().is_multiple_of(self.chunks) {
            return Err(FormatError::invalid(
                self.out.path(),
                format!(
                    "append of {} bytes is not whole codes of {} bytes",
                    codes.len(),
                    self.chunks
                ),
            ));
        }
        let rows = (codes.len() / self.chunks) as u64;
        if self.rows + rows > self.n {
            return Err(FormatError::invalid(
                self.out.path(),
                format!("{} codes appended, the header declares {}", self.rows + rows, self.n),
            ));
        }
        self.out.write(codes)?;
        self.rows += rows;
        Ok(())
    }

    /// Codes appended so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Checks that all N codes arrived, writes the checksum, flushes and
    /// fsyncs. Returns the CRC-32C of the file body (everything before it).
    pub fn finish(self) -> Result<u32, FormatError> {
        if self.rows != self.n {
            return Err(FormatError::invalid(
                self.out.path(),
                format!("only {} of {} codes were written", self.rows, self.n),
            ));
        }
        self.out.finish()
    }
}

/// Every node's PQ code, in RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codes {
    chunks: usize,
    n: u64,
    ident: FileIdent,
    bytes: Vec<u8>,
}

impl Codes {
    /// Wraps `bytes`, which must be whole codes of `chunks` bytes.
    pub fn new(chunks: usize, bytes: Vec<u8>, ident: FileIdent) -> Codes {
        assert!(chunks > 0 && bytes.len().is_multiple_of(chunks), "codes must be whole rows");
        Codes { chunks, n: (bytes.len() / chunks) as u64, ident, bytes }
    }

    /// The index these codes belong to.
    pub fn ident(&self) -> FileIdent {
        self.ident
    }

    /// Bytes per code (M).
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// Number of nodes.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// All codes, node i at `i*M..(i+1)*M`.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The code of node `i`; panics when `i >= n` (a caller bug).
    #[inline]
    pub fn row(&self, i: u32) -> &[u8] {
        let at = i as usize * self.chunks;
        &self.bytes[at..at + self.chunks]
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Loads and verifies a codes file; also returns the XXH3-64 of the whole
/// file (for the manifest's check), computed as it is read.
pub fn read_codes(path: &Path) -> Result<(Codes, u64), FormatError> {
    let mut file = File::open(path).map_err(|e| FormatError::io(path, "open", e))?;
    let len = file.metadata().map_err(|e| FormatError::io(path, "stat", e))?.len();
    let mut header = [0u8; CODES_HEADER_BYTES];
    if len >= CODES_HEADER_BYTES as u64 {
        file.read_exact(&mut header).map_err(|e| FormatError::io(path, "read", e))?;
    }
    // Checked before allocating, so a corrupt count cannot ask for a huge buffer.
    let (chunks, n, ident) = parse_header(path, &header, len)?;
    let mut bytes = vec![0u8; (n * chunks as u64) as usize];
    file.read_exact(&mut bytes).map_err(|e| FormatError::io(path, "read", e))?;
    let mut trailer = [0u8; 4];
    file.read_exact(&mut trailer).map_err(|e| FormatError::io(path, "read", e))?;
    check_crc(path, &header, &bytes, trailer)?;
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    hash.update(&header);
    hash.update(&bytes);
    hash.update(&trailer);
    Ok((Codes { chunks, n, ident, bytes }, hash.digest()))
}

/// Decodes and verifies the bytes of a whole codes file; `path` only names
/// the file in errors.
pub fn decode_codes(path: &Path, file: &[u8]) -> Result<Codes, FormatError> {
    let len = file.len() as u64;
    let mut header = [0u8; CODES_HEADER_BYTES];
    if file.len() >= CODES_HEADER_BYTES {
        header.copy_from_slice(&file[..CODES_HEADER_BYTES]);
    }
    let (chunks, n, ident) = parse_header(path, &header, len)?;
    let body_end = CODES_HEADER_BYTES + (n * chunks as u64) as usize;
    let bytes = file[CODES_HEADER_BYTES..body_end].to_vec();
    let trailer: [u8; 4] = file[body_end..].try_into().expect("length checked: 4 trailer bytes");
    check_crc(path, &header, &bytes, trailer)?;
    Ok(Codes { chunks, n, ident, bytes })
}

/// Validates a codes header against the file length `len` (before anything
/// is allocated): returns (M, N, identity).
fn parse_header(
    path: &Path,
    header: &[u8; CODES_HEADER_BYTES],
    len: u64,
) -> Result<(usize, u64, FileIdent), FormatError> {
    let framing = (CODES_HEADER_BYTES + 4) as u64;
    if len < framing {
        return Err(FormatError::corrupt(
            path,
            len,
            format!("file is {len} bytes, shorter than the {framing}-byte header and checksum"),
        ));
    }
    if &header[0..8] != CODES_MAGIC {
        return Err(FormatError::corrupt(
            path,
            0,
            format!(
                "bad magic {:?}, expected {:?}",
                header[0..8].escape_ascii().to_string(),
                "BASALTPC"
            ),
        ));
    }
    let version = le_u32(header, 8);
    if version != CODES_VERSION {
        return Err(FormatError::Version {
            path: path.to_path_buf(),
            found: version,
            supported: CODES_VERSION,
        });
    }
    let chunks = le_u32(header, 12) as usize;
    if !(1..=CODES_CHUNKS_MAX).contains(&chunks) {
        return Err(FormatError::corrupt(
            path,
            12,
            format!("code length {chunks} is outside 1..={CODES_CHUNKS_MAX}"),
        ));
    }
    let n = le_u64(header, 16);
    if n > CODES_NODES_MAX {
        return Err(FormatError::corrupt(
            path,
            16,
            format!("node count {n} is over {CODES_NODES_MAX}"),
        ));
    }
    // No overflow: n < 2^32 and chunks <= 2^14.
    let expected = framing + n * chunks as u64;
    if len != expected {
        return Err(FormatError::corrupt(
            path,
            len.min(expected),
            format!(
                "file is {len} bytes, the header ({n} codes of {chunks} bytes) implies {expected}"
            ),
        ));
    }
    let ident = FileIdent::decode(header, 24);
    if ident.build_id == 0 {
        return Err(FormatError::corrupt(path, 24, "build id is 0"));
    }
    Ok((chunks, n, ident))
}

fn check_crc(path: &Path, header: &[u8], body: &[u8], trailer: [u8; 4]) -> Result<(), FormatError> {
    let stored = u32::from_le_bytes(trailer);
    let computed = crc32c_append(crc32c(header), body);
    if stored != computed {
        let at = (header.len() + body.len()) as u64;
        return Err(FormatError::corrupt(
            path,
            at,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_codes(chunks: usize, n: usize) -> Vec<u8> {
        (0..chunks * n).map(|i| (i * 37 + 11) as u8).collect()
    }

    const IDENT: FileIdent = FileIdent { build_id: 0x5eed, generation: 4 };

    fn write(path: &Path, chunks: usize, codes: &[u8]) -> u32 {
        let mut w =
            CodesWriter::create(path, chunks, (codes.len() / chunks) as u64, IDENT).unwrap();
        // Uneven batches: the writer must not care how rows are grouped.
        let (a, b) = codes.split_at(codes.len() / chunks / 3 * chunks);
        w.append(a).unwrap();
        w.append(b).unwrap();
        w.finish().unwrap()
    }

    // Written codes read back identically, the returned CRC is the stored one, and rows index by node.
    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes");
        let codes = sample_codes(5, 31);
        let crc = write(&path, 5, &codes);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), CODES_HEADER_BYTES + codes.len() + 4);
        assert_eq!(crc, crc32c(&bytes[..bytes.len() - 4]));
        let (read, xxh3) = read_codes(&path).unwrap();
        assert_eq!(read, Codes::new(5, codes.clone(), IDENT));
        assert_eq!(xxh3, xxhash_rust::xxh3::xxh3_64(&bytes));
        assert_eq!(read.n(), 31);
        assert_eq!(read.row(30), &codes[150..155]);
        // Zero nodes is a valid (empty) file.
        write(&path, 3, &[]);
        assert_eq!(read_codes(&path).unwrap().0.n(), 0);
    }

    // Every single-bit flip at every byte position is reported as an error, never a panic.
    #[test]
    fn flipped_bits_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes");
        write(&path, 4, &sample_codes(4, 10));
        let good = std::fs::read(&path).unwrap();
        let bad_path = dir.path().join("bad");
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut bytes = good.clone();
                bytes[at] ^= 1 << bit;
                std::fs::write(&bad_path, &bytes).unwrap();
                assert!(
                    read_codes(&bad_path).is_err(),
                    "flip of bit {bit} at byte {at} not detected"
                );
            }
        }
    }

    // A file cut at every length short of complete is an error; so are trailing bytes.
    #[test]
    fn truncated_or_extended_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes");
        write(&path, 4, &sample_codes(4, 6));
        let good = std::fs::read(&path).unwrap();
        let bad_path = dir.path().join("bad");
        for len in 0..good.len() {
            std::fs::write(&bad_path, &good[..len]).unwrap();
            assert!(read_codes(&bad_path).is_err(), "truncation to {len} bytes not detected");
        }
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&bad_path, &longer).unwrap();
        assert!(read_codes(&bad_path).is_err());
    }

    // Wrong magic and a future version are distinct, named errors.
    #[test]
    fn wrong_magic_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes");
        write(&path, 2, &sample_codes(2, 3));
        let good = std::fs::read(&path).unwrap();
        let mut bytes = good.clone();
        bytes[..8].copy_from_slice(b"BASALTPQ");
        std::fs::write(&path, &bytes).unwrap();
        let err = read_codes(&path).unwrap_err();
        assert!(matches!(err, FormatError::Corrupt { offset: 0, .. }), "{err}");
        assert!(err.to_string().contains("codes"), "error names the file: {err}");
        let mut bytes = good;
        bytes[8] = 9;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_codes(&path),
            Err(FormatError::Version { found: 9, supported: CODES_VERSION, .. })
        ));
    }

    // The writer refuses partial rows, too many rows, too few rows at finish, and M = 0.
    #[test]
    fn writer_checks_row_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes");
        assert!(CodesWriter::create(&path, 0, 1, IDENT).is_err());
        assert!(CodesWriter::create(&path, 4, CODES_NODES_MAX + 1, IDENT).is_err());
        let mut w = CodesWriter::create(&path, 4, 2, IDENT).unwrap();
        assert!(w.append(&[1, 2, 3]).is_err());
        w.append(&[0; 4]).unwrap();
        assert!(w.append(&[0; 8]).is_err());
        assert_eq!(w.rows(), 1);
        assert!(w.finish().is_err());
    }
}
