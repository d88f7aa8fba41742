//! The on-disk formats: the only code that knows byte offsets.
//!
//! Every file basalt writes starts with an 8-byte magic and a little-endian
//! `u32` format version, and carries CRC-32C checksums (Castagnoli) over its
//! contents, so a flipped bit is found, not served. Errors name the file, the
//! byte offset and what was wrong.
//!
//! Every file of a generation also carries its [`FileIdent`] (a random build
//! id and the generation number) in its header, and node record checksums are
//! seeded with it, so a file or record from another build or generation of
//! the same shape is refused rather than served.
//!
//! Files of an index (see ARCHITECTURE.md for the byte diagrams):
//! - `manifest`: JSON naming the generation's files, their sizes and checksums;
//! - `gen-N/graph`: header sector + node records in 4 KiB sectors;
//! - `gen-N/pq`: PQ codebook;
//! - `gen-N/codes`: PQ codes of every node;
//! - `gen-N/hot`: node ids ranked by how often queries expand them.

use std::io;
use std::path::{Path, PathBuf};

/// Sector size of every aligned file: the unit of O_DIRECT I/O.
pub const SECTOR_BYTES: usize = 4096;

/// Errors reading or writing basalt files.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path}: corrupt at byte offset {offset}: {what}")]
    Corrupt { path: PathBuf, offset: u64, what: String },
    #[error("{path}: unsupported format version {found} (this build reads version {supported})")]
    Version { path: PathBuf, found: u32, supported: u32 },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path}: belongs to {found}, but this index is {expected}: a file from another index")]
    Foreign { path: PathBuf, found: FileIdent, expected: FileIdent },
}

/// Most nodes an index or a generation holds: node ids are u32 and
/// `u32::MAX` is kept free (the padding id of result lists), so ids run
/// `0..=u32::MAX - 1`. Build, merge, writers and decoders all check it.
pub const NODES_MAX: u64 = u32::MAX as u64;

/// Which build and generation a file belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdent {
    /// Random, never 0: drawn once per generation written.
    pub build_id: u64,
    pub generation: u64,
}

/// Bytes of an encoded [`FileIdent`].
pub const IDENT_BYTES: usize = 16;

impl FileIdent {
    /// A fresh identity for a generation about to be written.
    pub fn new_random(generation: u64) -> FileIdent {
        let build_id = loop {
            let id: u64 = rand::random();
            if id != 0 {
                break id;
            }
        };
        FileIdent { build_id, generation }
    }

    pub fn encode(&self) -> [u8; IDENT_BYTES] {
        let mut b = [0u8; IDENT_BYTES];
        b[..8].copy_from_slice(&self.build_id.to_le_bytes());
        b[8..].copy_from_slice(&self.generation.to_le_bytes());
        b
    }

    /// Decodes 16 bytes at `at` of `b` (which the caller has length-checked).
    pub fn decode(b: &[u8], at: usize) -> FileIdent {
        FileIdent { build_id: le_u64(b, at), generation: le_u64(b, at + 8) }
    }

    /// The CRC-32C state every node record checksum of this generation starts
    /// from: records of other builds or generations fail their check.
    pub fn record_crc_seed(&self) -> u32 {
        crc32c(&self.encode())
    }

    /// The build id as operators see it (16 hex digits).
    pub fn build_id_hex(&self) -> String {
        format!("{:016x}", self.build_id)
    }

    /// Checks a file's identity against the index's.
    pub fn expect(&self, path: &Path, found: FileIdent) -> Result<(), FormatError> {
        if found != *self {
            return Err(FormatError::Foreign { path: path.to_path_buf(), found, expected: *self });
        }
        Ok(())
    }
}

impl std::fmt::Display for FileIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "build {:016x} generation {}", self.build_id, self.generation)
    }
}

impl FormatError {
    pub fn io(path: &Path, op: &'static str, source: io::Error) -> Self {
        FormatError::Io { path: path.to_path_buf(), op, source }
    }

    pub fn corrupt(path: &Path, offset: u64, what: impl Into<String>) -> Self {
        FormatError::Corrupt { path: path.to_path_buf(), offset, what: what.into() }
    }

    pub fn invalid(path: &Path, what: impl Into<String>) -> Self {
        FormatError::Invalid { path: path.to_path_buf(), what: what.into() }
    }
}

/// CRC-32C of `bytes`.
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Continues a CRC-32C over more bytes.
#[inline]
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// Little-endian field readers over a byte slice whose length the caller has checked.
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8-byte slice"))
}

pub(crate) fn le_f32(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes(b[at..at + 4].try_into().expect("4-byte slice"))
}
pub mod graph;

pub mod codes;
#[cfg(test)]
mod fuzz_tests;
pub mod hot;
pub mod pq;
