//! An index directory: the manifest and the files of its generation, and the
//! one function ([`IndexFiles::open`]) that decides which files an index has
//! and checks them. Every command (search, verify, inspect, build --force)
//! goes through it.
//!
//! ```text
//! DIR/manifest        pretty JSON body, then one line "crc32c 0x%08x" over the raw
//!                     bytes before it (version 2; see Manifest)
//! DIR/gen-N/graph     header sector + node records (format::graph)
//! DIR/gen-N/pq        PQ codebook (format::pq)
//! DIR/gen-N/codes     PQ codes of every node (format::codes)
//! DIR/gen-N/hot       node ids ranked by how often queries expand them (format::hot)
//! ```
//!
//! The manifest names the generation, its build id and its files by plain
//! name (no separator, no `..`, no absolute path: manifests will arrive over
//! the network), each with its size and XXH3-64. Opening checks that the
//! files are exactly the layout's, that each is a regular file of the
//! recorded size, that the small ones (pq, codes, read whole anyway) hash to
//! the recorded value, and that every header carries the manifest's build id,
//! generation and shape. A version-1 index is refused with the command that
//! rebuilds it.
//!
//! A build writes everything into a sibling temporary directory, fsyncs
//! every file and directory, and exchanges it into place last (`publish`),
//! so a crashed or killed build never leaves something that opens as an
//! index, and a replaced index is never missing from its path.

pub mod build;
pub mod partition;
pub mod placement;
pub mod pqspace;
pub mod publish;
pub mod verify;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::distance::Metric;
use crate::element::ElementType;
use crate::format::codes::Codes;
use crate::format::graph::{GraphHeader, read_graph_header};
use crate::format::{FileIdent, FormatError};
use crate::pq::Codebook;

pub const MANIFEST_FILE: &str = "manifest";
pub const MANIFEST_VERSION: u32 = 2;
pub const GRAPH_FILE: &str = "graph";
pub const PQ_FILE: &str = "pq";
pub const CODES_FILE: &str = "codes";
pub const HOT_FILE: &str = "hot";
/// The files of a generation, in manifest order.
pub const LAYOUT_FILES: [&str; 4] = [GRAPH_FILE, PQ_FILE, CODES_FILE, HOT_FILE];
/// A collection's generation adds slot -> external id (`collection::idfile`).
pub const IDS_FILE: &str = "ids";
/// ... and the id map changes since the generation before (`collection::changes`).
pub const CHANGES_FILE: &str = "changes";
/// The files a collection's generation may add after [`LAYOUT_FILES`], in this order.
pub const COLLECTION_FILES: [&str; 2] = [IDS_FILE, CHANGES_FILE];
/// Every file a build may write into its generation: the layout, and a
/// packed build's ids (node -> input row).
pub const BUILD_FILES: [&str; 5] = [GRAPH_FILE, PQ_FILE, CODES_FILE, HOT_FILE, IDS_FILE];
/// Largest manifest accepted (it is small; anything larger is not ours).
pub const MANIFEST_BYTES_MAX: u64 = 1 << 20;
/// The trailer line's prefix: `crc32c 0x` + 8 hex digits + `\n`.
const MANIFEST_TRAILER_PREFIX: &[u8] = b"crc32c 0x";
const MANIFEST_TRAILER_BYTES: usize = MANIFEST_TRAILER_PREFIX.len() + 8 + 1;

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
    /// Plain file name inside the generation's directory.
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

/// The manifest (version 2) of an index directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    /// Random id of the build that wrote this generation, 16 hex digits.
    pub build_id: String,
    pub generation: u64,
    /// WAL position the generation includes (0 until the WAL exists).
    pub lsn: u64,
    pub metric: Metric,
    pub element: ElementType,
    pub dim: u32,
    pub count: u64,
    /// Inner product only: M of the MIPS-to-L2 reduction; 0 otherwise.
    pub ip_norm_max: f32,
    pub build: BuildInfo,
    pub files: Vec<FileEntry>,
    /// Points the PQ codebook was trained on (a collection's merge retrains
    /// past a growth factor); absent = `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pq_trained_points: Option<u64>,
}

/// The version-1 manifest's envelope, recognised only to say how to rebuild.
#[derive(Deserialize)]
struct V1Envelope {
    body: serde_json::Value,
    #[allow(dead_code, reason = "recognised, not checked: the index is refused anyway")]
    crc32c: u32,
}

impl Manifest {
    /// Directory of the current generation, relative to the index directory.
    pub fn generation_dir(&self) -> String {
        format!("gen-{}", self.generation)
    }

    /// Path of the generation's file `name`.
    pub fn file(&self, dir: &Path, name: &str) -> PathBuf {
        dir.join(self.generation_dir()).join(name)
    }

    /// The identity every file of the generation must carry. Only valid on a
    /// decoded (checked) manifest.
    pub fn ident(&self) -> FileIdent {
        let build_id = u64::from_str_radix(&self.build_id, 16)
            .expect("a decoded manifest's build id is 16 hex digits");
        FileIdent { build_id, generation: self.generation }
    }

    /// The file entry named `name`.
    pub fn entry(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The bytes of the manifest file: pretty JSON, then the checksum line.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest serialises");
        out.push(b'\n');
        let crc = crate::format::crc32c(&out);
        out.extend_from_slice(format!("crc32c {crc:#010x}\n").as_bytes());
        debug_assert!(out.ends_with(b"\n"));
        out
    }

    /// Decodes and checks the bytes of a manifest file. The checksum covers
    /// the raw bytes before the trailer line, and the JSON parsed is exactly
    /// those bytes.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Manifest, FormatError> {
        if bytes.len() as u64 > MANIFEST_BYTES_MAX {
            return Err(FormatError::invalid(path, "manifest larger than 1 MiB: not ours"));
        }
        let Some(body_len) = bytes.len().checked_sub(MANIFEST_TRAILER_BYTES) else {
            return Err(not_a_manifest(path, bytes));
        };
        let (body, trailer) = bytes.split_at(body_len);
        let hex = trailer
            .strip_prefix(MANIFEST_TRAILER_PREFIX)
            .and_then(|t| t.strip_suffix(b"\n"))
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        let (Some(stored), true) = (hex, body.ends_with(b"\n")) else {
            return Err(not_a_manifest(path, bytes));
        };
        let crc = crate::format::crc32c(body);
        if crc != stored {
            return Err(FormatError::corrupt(
                path,
                body_len as u64,
                format!("manifest checksum {stored:#010x} != computed {crc:#010x}"),
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| FormatError::invalid(path, format!("manifest JSON: {e}")))?;
        let version = value.get("format_version").and_then(|v| v.as_u64());
        if version != Some(u64::from(MANIFEST_VERSION)) {
            return Err(FormatError::Version {
                path: path.to_path_buf(),
                found: version.map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX)),
                supported: MANIFEST_VERSION,
            });
        }
        let m: Manifest = serde_json::from_value(value)
            .map_err(|e| FormatError::invalid(path, format!("manifest fields: {e}")))?;
        m.check(path)?;
        Ok(m)
    }

    /// Field checks beyond the JSON shape.
    fn check(&self, path: &Path) -> Result<(), FormatError> {
        let bad = |what: String| Err(FormatError::invalid(path, what));
        let id_ok =
            self.build_id.len() == 16 && self.build_id.bytes().all(|c| c.is_ascii_hexdigit());
        if !id_ok || u64::from_str_radix(&self.build_id, 16) == Ok(0) {
            return bad(format!("build_id {:?} is not 16 hex digits (non-zero)", self.build_id));
        }
        for f in &self.files {
            check_plain_name(&f.name)
                .or_else(|why| bad(format!("file name {:?}: {why}", f.name)))?;
        }
        let names: Vec<&str> = self.files.iter().map(|f| f.name.as_str()).collect();
        let extra = names.get(LAYOUT_FILES.len()..).unwrap_or(&[]);
        if names.len() < LAYOUT_FILES.len()
            || names[..LAYOUT_FILES.len()] != LAYOUT_FILES
            || !COLLECTION_FILES.starts_with(extra)
        {
            return bad(format!(
                "lists files {names:?}; an index generation has exactly {LAYOUT_FILES:?}, \
                 then optionally {COLLECTION_FILES:?}"
            ));
        }
        if self.dim == 0 || self.dim as usize > crate::distance::DIM_MAX {
            return bad(format!("dimension {} out of range", self.dim));
        }
        if self.count == 0 || self.count > crate::vecfile::ROWS_MAX {
            return bad(format!("count {} out of range", self.count));
        }
        let norm_ok = if self.metric == Metric::InnerProduct {
            self.ip_norm_max.is_finite() && self.ip_norm_max >= 0.0
        } else {
            self.ip_norm_max == 0.0
        };
        if !norm_ok {
            return bad(format!("ip_norm_max {} is invalid for {}", self.ip_norm_max, self.metric));
        }
        Ok(())
    }
}

/// Why `bytes` are not a version-2 manifest: a version-1 one (say how to
/// rebuild) or something else.
fn not_a_manifest(path: &Path, bytes: &[u8]) -> FormatError {
    if let Ok(v1) = serde_json::from_slice::<V1Envelope>(bytes)
        && v1.body.get("format_version").and_then(|v| v.as_u64()) == Some(1)
    {
        return FormatError::invalid(path, rebuild_hint(&v1.body, path));
    }
    FormatError::invalid(path, "not a basalt manifest (no checksum line)")
}

/// The message for a version-1 index: what it is and the command that
/// rebuilds it from its recorded source and parameters.
fn rebuild_hint(body: &serde_json::Value, path: &Path) -> String {
    let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let b = &body["build"];
    let field = |v: &serde_json::Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    format!(
        "index format version 1 (basalt 0.1) is no longer read: format 2 records which build \
         and generation every file belongs to. Rebuild it: basalt build --data {} --metric {} \
         --R {} --L {} --alpha {} --pq-bytes {} --seed {} --out {} --force",
        field(&b["source"]),
        field(&body["metric"]),
        field(&b["degree_max"]),
        field(&b["list_size"]),
        b["alpha"].as_f64().map_or_else(|| "1.2".to_string(), |a| format!("{:.3}", a as f32)),
        field(&b["pq_chunks"]),
        field(&b["seed"]),
        dir.display()
    )
}

/// A manifest file name must be a plain name: not empty, no separator, not
/// `.` or `..`, no NUL, at most 255 bytes.
pub fn check_plain_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 255 {
        return Err("must be 1 to 255 bytes");
    }
    if name == "." || name == ".." {
        return Err("must not be . or ..");
    }
    if name.contains('/') || name.contains('\\') || name.contains('\0') {
        return Err("must be a plain name, without path separators");
    }
    Ok(())
}

/// Reads and validates `DIR/manifest`.
pub fn read_manifest(dir: &Path) -> Result<Manifest, IndexError> {
    let path = dir.join(MANIFEST_FILE);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            IndexError::Input(format!("{}: no basalt index here (no manifest)", dir.display()))
        } else {
            IndexError::io(&path, "stat", e)
        }
    })?;
    if !meta.file_type().is_file() {
        return Err(FormatError::invalid(&path, "not a regular file").into());
    }
    if meta.len() > MANIFEST_BYTES_MAX {
        return Err(FormatError::invalid(&path, "manifest larger than 1 MiB: not ours").into());
    }
    let bytes = std::fs::read(&path).map_err(|e| IndexError::io(&path, "read", e))?;
    Ok(Manifest::decode(&path, &bytes)?)
}

/// The files of an index as its manifest names them, each checked to be a
/// regular file of the recorded size.
#[derive(Clone, Debug)]
pub struct IndexFiles {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

/// What search keeps in RAM, loaded and cross-checked.
pub struct LoadedIndex {
    pub files: IndexFiles,
    pub header: GraphHeader,
    pub codebook: Codebook,
    pub codes: Codes,
    /// Node ids, hottest first (fills the entry cache).
    pub hot: Vec<u32>,
}

impl IndexFiles {
    /// Reads the manifest and checks that the generation's files are exactly
    /// the layout's, each a regular file (not a symlink, FIFO or directory)
    /// of the recorded size.
    pub fn open(dir: &Path) -> Result<IndexFiles, IndexError> {
        let manifest = read_manifest(dir)?;
        let files = IndexFiles { dir: dir.to_path_buf(), manifest };
        for f in &files.manifest.files {
            let p = files.path(&f.name);
            let meta = std::fs::symlink_metadata(&p).map_err(|e| IndexError::io(&p, "stat", e))?;
            if !meta.file_type().is_file() {
                return Err(FormatError::invalid(&p, "not a regular file").into());
            }
            if meta.len() != f.bytes {
                return Err(FormatError::corrupt(
                    &p,
                    meta.len().min(f.bytes),
                    format!("file is {} bytes, the manifest says {}", meta.len(), f.bytes),
                )
                .into());
            }
        }
        Ok(files)
    }

    /// Path of the generation's file `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.manifest.file(&self.dir, name)
    }

    /// Every path the layout names: the manifest, the generation directory
    /// and its files (what a replaced index consists of).
    pub fn owned_paths(&self) -> (Vec<PathBuf>, PathBuf) {
        let mut files = vec![self.dir.join(MANIFEST_FILE)];
        files.extend(self.manifest.files.iter().map(|f| self.path(&f.name)));
        (files, self.dir.join(self.manifest.generation_dir()))
    }

    /// The graph header, checked against the manifest.
    pub fn graph_header(&self) -> Result<GraphHeader, IndexError> {
        let m = &self.manifest;
        let path = self.path(GRAPH_FILE);
        let h = read_graph_header(&path)?;
        m.ident().expect(&path, h.ident)?;
        let agree = h.count == m.count
            && h.dim == m.dim
            && h.metric == m.metric
            && h.element == m.element
            && h.pq_chunks as usize == m.build.pq_chunks
            && h.degree_max as usize == m.build.degree_max
            && h.ip_norm_max.to_bits() == m.ip_norm_max.to_bits();
        if !agree {
            return Err(FormatError::invalid(
                &path,
                format!(
                    "header ({} x {} {} {}, R {}, {} PQ chunks, ip_norm_max {}) disagrees with \
                     the manifest ({} x {} {} {}, R {}, {} PQ chunks, ip_norm_max {})",
                    h.count,
                    h.dim,
                    h.element,
                    h.metric,
                    h.degree_max,
                    h.pq_chunks,
                    h.ip_norm_max,
                    m.count,
                    m.dim,
                    m.element,
                    m.metric,
                    m.build.degree_max,
                    m.build.pq_chunks,
                    m.ip_norm_max
                ),
            )
            .into());
        }
        Ok(h)
    }

    /// Checks a small file's hash (computed while it was read) against the manifest.
    fn check_hash(&self, name: &str, xxh3: u64) -> Result<(), IndexError> {
        let want = self.manifest.entry(name).map(|f| f.xxh3);
        if want != Some(xxh3) {
            return Err(FormatError::corrupt(
                &self.path(name),
                0,
                format!(
                    "file checksum (xxh3) {xxh3:#018x} != manifest {:#018x}",
                    want.unwrap_or(0)
                ),
            )
            .into());
        }
        Ok(())
    }

    /// The PQ codebook, checked against the manifest (hash, identity, space, shape).
    pub fn codebook(&self) -> Result<Codebook, IndexError> {
        let m = &self.manifest;
        let path = self.path(PQ_FILE);
        let file = crate::format::pq::read_codebook(&path)?;
        m.ident().expect(&path, file.meta.ident)?;
        self.check_hash(PQ_FILE, file.xxh3)?;
        let cb = file.codebook;
        let want_dim = pqspace::pq_dim(m.metric, m.dim as usize);
        if file.meta.metric != m.metric
            || file.meta.ip_norm_max.to_bits() != m.ip_norm_max.to_bits()
            || cb.dim() != want_dim
            || cb.chunks() != m.build.pq_chunks
        {
            return Err(FormatError::invalid(
                &path,
                format!(
                    "codebook ({} dims x {} chunks, {}, ip_norm_max {}) disagrees with the \
                     manifest ({} dims x {} chunks, {}, ip_norm_max {})",
                    cb.dim(),
                    cb.chunks(),
                    file.meta.metric,
                    file.meta.ip_norm_max,
                    want_dim,
                    m.build.pq_chunks,
                    m.metric,
                    m.ip_norm_max
                ),
            )
            .into());
        }
        Ok(cb)
    }

    /// The PQ codes, checked against the manifest (hash, identity, shape).
    pub fn codes(&self) -> Result<Codes, IndexError> {
        let m = &self.manifest;
        let path = self.path(CODES_FILE);
        let (codes, xxh3) = crate::format::codes::read_codes(&path)?;
        m.ident().expect(&path, codes.ident())?;
        self.check_hash(CODES_FILE, xxh3)?;
        if codes.n() != m.count || codes.chunks() != m.build.pq_chunks {
            return Err(FormatError::invalid(
                &path,
                format!(
                    "holds {} codes of {} bytes, the manifest says {} nodes x {} chunks",
                    codes.n(),
                    codes.chunks(),
                    m.count,
                    m.build.pq_chunks
                ),
            )
            .into());
        }
        Ok(codes)
    }

    /// The hot list, checked against the manifest (identity, hash) and the
    /// graph (every id a node, none twice).
    pub fn hot(&self) -> Result<Vec<u32>, IndexError> {
        let m = &self.manifest;
        let path = self.path(HOT_FILE);
        // Sized before it is read: the list can be no longer than the format allows.
        let cap = (crate::format::hot::HOT_HEADER_BYTES + 4) as u64
            + 4 * crate::format::hot::HOT_IDS_MAX.min(m.count);
        let len = std::fs::metadata(&path).map_err(|e| IndexError::io(&path, "stat", e))?.len();
        if len > cap {
            return Err(FormatError::corrupt(
                &path,
                cap,
                format!("file is {len} bytes, more than a hot list of this index can be ({cap})"),
            )
            .into());
        }
        let bytes = std::fs::read(&path).map_err(|e| IndexError::io(&path, "read", e))?;
        let (ident, ids) = crate::format::hot::decode_hot(&path, &bytes)?;
        m.ident().expect(&path, ident)?;
        self.check_hash(HOT_FILE, xxhash_rust::xxh3::xxh3_64(&bytes))?;
        let mut seen = rustc_hash::FxHashSet::default();
        for (i, &id) in ids.iter().enumerate() {
            if u64::from(id) >= m.count || !seen.insert(id) {
                return Err(FormatError::corrupt(
                    &path,
                    (crate::format::hot::HOT_HEADER_BYTES + 4 * i) as u64,
                    format!("entry {i} is {id}: not a node id, or listed twice"),
                )
                .into());
            }
        }
        Ok(ids)
    }

    /// Everything search keeps in RAM, each file checked against the manifest.
    pub fn load(self) -> Result<LoadedIndex, IndexError> {
        let header = self.graph_header()?;
        let codebook = self.codebook()?;
        let codes = self.codes()?;
        let hot = self.hot()?;
        Ok(LoadedIndex { files: self, header, codebook, codes, hot })
    }
}

/// Peak resident memory of this process in bytes (VmHWM), when known.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Hands the heap's free pages back to the kernel. glibc keeps freed small
/// blocks (a Vamana build's adjacency lists are millions of them) in its
/// arenas, where the large buffers of the next phase, which it maps afresh,
/// cannot reuse them: without this a partitioned build's resident memory
/// after a shard is the shard's peak plus the next phase's.
#[allow(unsafe_code, reason = "a libc call that takes no pointers")]
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes a byte count and works only on the
    // allocator's own free lists; it is thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Available memory in bytes (MemAvailable), when known.
pub fn available_memory_bytes() -> Option<u64> {
    meminfo_bytes("MemAvailable")
}

/// One /proc/meminfo field (given in kB) in bytes, when known.
pub fn meminfo_bytes(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Values shared by tests of several modules.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A valid version-2 manifest (its files need not exist).
    pub(crate) fn sample_manifest() -> Manifest {
        Manifest {
            format_version: MANIFEST_VERSION,
            build_id: "00000000000000ab".into(),
            generation: 0,
            lsn: 0,
            metric: Metric::L2,
            element: ElementType::F32,
            dim: 8,
            count: 10,
            ip_norm_max: 0.0,
            build: BuildInfo {
                degree_max: 4,
                list_size: 10,
                alpha: 1.2,
                passes: 2,
                seed: 1,
                saturate: false,
                pq_chunks: 2,
                pq_sample_max: 100,
                threads: 1,
                source: "base.fbin".into(),
                created_unix_s: 0,
                basalt_version: "0.1.0".into(),
            },
            files: LAYOUT_FILES
                .iter()
                .map(|n| FileEntry { name: n.to_string(), bytes: 1, xxh3: 2 })
                .collect(),
            pq_trained_points: None,
        }
    }
}
