//! An index directory: the manifest and the files of its generation.
//!
//! ```text
//! DIR/manifest        JSON {"body": Manifest, "crc32c": u32 over the body's JSON}
//! DIR/gen-0/graph     header sector + node records (format::graph)
//! DIR/gen-0/pq        PQ codebook (format::pq)
//! DIR/gen-0/codes     PQ codes of every node (format::codes)
//! ```
//!
//! A build writes everything into a sibling temporary directory, fsyncs
//! every file and directory, and renames it into place last, so a crashed or
//! killed build never leaves something that opens as an index. The manifest
//! records each file's size and XXH3-64 hash so `verify` can check them whole.

pub mod build;
pub mod pqspace;
pub mod verify;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::distance::Metric;
use crate::element::ElementType;
use crate::format::FormatError;

pub const MANIFEST_FILE: &str = "manifest";
pub const MANIFEST_VERSION: u32 = 1;
pub const GRAPH_FILE: &str = "graph";
pub const PQ_FILE: &str = "pq";
pub const CODES_FILE: &str = "codes";
/// Largest manifest accepted (it is small; anything larger is not ours).
const MANIFEST_BYTES_MAX: u64 = 1 << 20;

/// Errors of index-level operations.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    File(#[from] crate::vecfile::VecFileError),
    #[error(transparent)]
    Pq(#[from] crate::pq::PqError),
    #[error("{0}")]
    Input(String),
    #[error("{path}: {what}")]
    Exists { path: PathBuf, what: String },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl IndexError {
    pub(crate) fn io(path: &Path, op: &'static str, source: std::io::Error) -> Self {
        IndexError::Io { path: path.to_path_buf(), op, source }
    }
}

/// One file of a generation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the index directory.
    pub name: String,
    pub bytes: u64,
    /// XXH3-64 of the whole file (see `verify::file_xxh3` for why not CRC).
    pub xxh3: u64,
}

/// How the generation was built.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuildInfo {
    pub degree_max: usize,
    pub list_size: usize,
    pub alpha: f32,
    pub passes: usize,
    pub seed: u64,
    pub saturate: bool,
    pub pq_chunks: usize,
    pub pq_sample_max: usize,
    pub threads: usize,
    pub source: String,
    pub created_unix_s: u64,
    pub basalt_version: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub generation: u64,
    /// WAL position the generation includes (0 until the WAL exists).
    pub lsn: u64,
    pub metric: Metric,
    pub element: ElementType,
    pub dim: u32,
    pub count: u64,
    pub build: BuildInfo,
    pub files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestEnvelope {
    body: serde_json::Value,
    crc32c: u32,
}

impl Manifest {
    /// Directory of the current generation, relative to the index directory.
    pub fn generation_dir(&self) -> String {
        format!("gen-{}", self.generation)
    }

    pub fn file(&self, dir: &Path, name: &str) -> PathBuf {
        dir.join(self.generation_dir()).join(name)
    }

    pub fn encode(&self) -> Vec<u8> {
        let body = serde_json::to_value(self).expect("manifest serialises");
        let crc = crate::format::crc32c(body.to_string().as_bytes());
        let env = ManifestEnvelope { body, crc32c: crc };
        let mut out = serde_json::to_vec_pretty(&env).expect("envelope serialises");
        out.push(b'\n');
        out
    }

    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest, FormatError> {
        let env: ManifestEnvelope = serde_json::from_slice(bytes)
            .map_err(|e| FormatError::invalid(path, format!("not a basalt manifest: {e}")))?;
        let crc = crate::format::crc32c(env.body.to_string().as_bytes());
        if crc != env.crc32c {
            return Err(FormatError::corrupt(
                path,
                0,
                format!("manifest checksum {:#010x} != computed {crc:#010x}", env.crc32c),
            ));
        }
        let version = env.body.get("format_version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if version != MANIFEST_VERSION {
            return Err(FormatError::Version {
                path: path.to_path_buf(),
                found: version,
                supported: MANIFEST_VERSION,
            });
        }
        serde_json::from_value(env.body)
            .map_err(|e| FormatError::invalid(path, format!("manifest fields: {e}")))
    }
}

/// Reads and validates `DIR/manifest`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, IndexError> {
    let path = dir.join(MANIFEST_FILE);
    let meta = std::fs::metadata(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            IndexError::Input(format!("{}: no basalt index here (no manifest)", dir.display()))
        } else {
            IndexError::io(&path, "stat", e)
        }
    })?;
    if meta.len() > MANIFEST_BYTES_MAX {
        return Err(FormatError::invalid(&path, "manifest larger than 1 MiB: not ours").into());
    }
    let bytes = std::fs::read(&path).map_err(|e| IndexError::io(&path, "read", e))?;
    Ok(Manifest::decode(&path, &bytes)?)
}

/// Peak resident memory of this process in bytes (VmHWM), when known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Available memory in bytes (MemAvailable), when known.
pub fn available_memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
