//! Ground-truth (and result) files: for each query, k neighbour ids best first
//! and, in the bin layout, their scores.
//!
//! `.ibin` / `.bin`: `u32 n | u32 k | n*k u32 ids | n*k f32 scores`; a file
//! that stops after the ids has no scores. `.ivecs`: n rows of `i32 k | k i32
//! ids`, no scores. Scores are the metric's natural score (squared L2, inner
//! product, cosine similarity), as big-ann-benchmarks writes them.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::VecFileError;
use crate::fsutil::PendingFile;

/// k neighbours per query, best first.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundTruth {
    pub n: usize,
    pub k: usize,
    /// `n * k` ids, row-major.
    pub ids: Vec<u32>,
    /// `n * k` scores when the file has them.
    pub scores: Option<Vec<f32>>,
}

impl GroundTruth {
    pub fn ids(&self, q: usize) -> &[u32] {
        &self.ids[q * self.k..(q + 1) * self.k]
    }
    pub fn scores(&self, q: usize) -> Option<&[f32]> {
        self.scores.as_ref().map(|s| &s[q * self.k..(q + 1) * self.k])
    }
}

/// Reads a ground-truth or result file, validating its size against its header.
pub fn read_ground_truth(path: &Path) -> Result<GroundTruth, VecFileError> {
    super::check_regular(path)?;
    let bytes = fs::read(path).map_err(|e| VecFileError::io(path, "read", e))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    match ext.as_str() {
        "ibin" | "bin" => {
            if bytes.len() < 8 {
                return Err(VecFileError::malformed(
                    path,
                    format!("file is {} bytes, too short for the 8-byte header", bytes.len()),
                ));
            }
            let (n, k) = (u32_at(0) as usize, u32_at(4) as usize);
            if k == 0 {
                return Err(VecFileError::malformed(path, "k (neighbours per query) is zero"));
            }
            // u128: a hostile header (n = k = 2^32 - 1) must not overflow.
            let cells = n as u128 * k as u128;
            let with = 8 + 8 * cells;
            let without = 8 + 4 * cells;
            let len = bytes.len() as u128;
            if len != with && len != without {
                return Err(VecFileError::malformed(
                    path,
                    format!(
                        "header says {n} queries x {k} neighbours: expected {without} bytes \
                         (ids only) or {with} (ids and scores), the file has {len}"
                    ),
                ));
            }
            let cells = cells as usize;
            let ids = (0..cells).map(|i| u32_at(8 + 4 * i)).collect();
            let scores = (len == with).then(|| {
                let base = 8 + 4 * cells;
                (0..cells).map(|i| f32::from_bits(u32_at(base + 4 * i))).collect()
            });
            Ok(GroundTruth { n, k, ids, scores })
        }
        "ivecs" => {
            if bytes.len() < 4 {
                return Err(VecFileError::malformed(path, "file is empty or truncated"));
            }
            let k = u32_at(0) as usize;
            if k == 0 || k > i32::MAX as usize {
                return Err(VecFileError::malformed(path, format!("first row declares k = {k}")));
            }
            let row = 4 * (k + 1);
            if bytes.len() % row != 0 {
                return Err(VecFileError::malformed(
                    path,
                    format!("size {} is not a multiple of the row size {row}", bytes.len()),
                ));
            }
            let n = bytes.len() / row;
            let mut ids = Vec::with_capacity(n * k);
            for r in 0..n {
                let declared = u32_at(r * row) as usize;
                if declared != k {
                    return Err(VecFileError::malformed(
                        path,
                        format!("row {r} declares k = {declared}, expected {k}"),
                    ));
                }
                ids.extend((0..k).map(|j| u32_at(r * row + 4 + 4 * j)));
            }
            Ok(GroundTruth { n, k, ids, scores: None })
        }
        _ => Err(VecFileError::malformed(
            path,
            "unknown ground-truth extension (expected .ibin, .bin or .ivecs)",
        )),
    }
}

/// Writes a ground-truth or result file in the bin layout (scores included
/// when present), atomically.
/// Checks, before any work, that a ground-truth or results file can be
/// written at `path`: a `.ibin`/`.bin` name in an existing directory, not an
/// existing directory itself.
pub fn check_output_path(path: &Path) -> Result<(), VecFileError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !matches!(ext, "ibin" | "bin") {
        return Err(VecFileError::malformed(path, "ground truth is written as .ibin or .bin"));
    }
    if path.is_dir() {
        return Err(VecFileError::malformed(path, "is a directory"));
    }
    let parent = crate::fsutil::parent_dir(path);
    if !parent.is_dir() {
        return Err(VecFileError::malformed(
            path,
            format!("its directory {} does not exist", parent.display()),
        ));
    }
    Ok(())
}

pub fn write_ground_truth(path: &Path, gt: &GroundTruth) -> Result<(), VecFileError> {
    assert_eq!(gt.ids.len(), gt.n * gt.k, "ids must hold n * k entries");
    if let Some(s) = &gt.scores {
        assert_eq!(s.len(), gt.n * gt.k, "scores must hold n * k entries");
    }
    check_output_path(path)?;
    let io = |op| move |e| VecFileError::io(path, op, e);
    let (pending, file) = PendingFile::create(path).map_err(io("create"))?;
    let mut out = BufWriter::new(file);
    out.write_all(&(gt.n as u32).to_le_bytes()).map_err(io("write"))?;
    out.write_all(&(gt.k as u32).to_le_bytes()).map_err(io("write"))?;
    for id in &gt.ids {
        out.write_all(&id.to_le_bytes()).map_err(io("write"))?;
    }
    if let Some(scores) = &gt.scores {
        for s in scores {
            out.write_all(&s.to_le_bytes()).map_err(io("write"))?;
        }
    }
    let file = out.into_inner().map_err(|e| io("flush")(e.into_error()))?;
    pending.commit(file).map_err(io("commit"))
}
