//! The on-disk formats: the only code that knows byte offsets.
//!
//! Every file basalt writes starts with an 8-byte magic and a little-endian
//! `u32` format version, and carries CRC-32C checksums (Castagnoli) over its
//! contents, so a flipped bit is found, not served. Errors name the file, the
//! byte offset and what was wrong.
//!
//! Files of an index (see ARCHITECTURE.md for the byte diagrams):
//! - `manifest`: JSON naming the generation's files, their sizes and checksums;
//! - `gen-N/graph`: header sector + node records in 4 KiB sectors;
//! - `gen-N/pq`: PQ codebook;
//! - `gen-N/codes`: PQ codes of every node.

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
pub mod pq;
