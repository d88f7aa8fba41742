//! Vector files: big-ann-benchmarks `.fbin/.u8bin/.i8bin` and TEXMEX
//! `.fvecs/.bvecs`, plus ground-truth files (`.ibin/.bin/.ivecs`).
//!
//! Reading is memory-mapped: [`VectorFile::read_rows`] copies any range of
//! rows into a caller buffer, so a file far larger than RAM is streamed in
//! blocks and only the pages touched are resident. Writing
//! ([`VectorWriter`]) streams rows through a buffer into a temporary file that
//! is fsynced and renamed into place only when complete, so a crash never
//! leaves a half-written file under the final name.
//!
//! Layouts (all little-endian):
//! - bin: `u32 n | u32 dim | n * dim elements`;
//! - vecs: n times `i32 dim | dim elements` (`.fvecs` f32, `.bvecs` u8, `.ivecs` i32);
//! - ground truth bin: `u32 n | u32 k | n*k u32 ids | n*k f32 scores` (scores optional).
//!
//! Every malformed file is an error naming the file and what is wrong.

mod groundtruth;
mod writer;

pub use groundtruth::{GroundTruth, check_output_path, read_ground_truth, write_ground_truth};
pub use writer::VectorWriter;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use std::os::unix::fs::FileExt;

use crate::distance::DIM_MAX;
use crate::element::{Element, ElementType};

/// Largest number of rows a vector file may declare: ids are `u32` node ids.
pub const ROWS_MAX: u64 = u32::MAX as u64;

/// The container layout of a vector file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// big-ann-benchmarks: `u32 n, u32 dim`, then rows.
    Bin,
    /// TEXMEX: every row prefixed by its `i32` dimension.
    Vecs,
}

/// Errors reading or writing vector files.
#[derive(Debug, thiserror::Error)]
pub enum VecFileError {
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}: unknown vector file extension (expected .fbin, .u8bin, .i8bin, .fvecs or .bvecs)"
    )]
    UnknownExtension { path: PathBuf },
    #[error("{path}: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{path}: holds {found} elements but {wanted} were asked for")]
    TypeMismatch { path: PathBuf, found: ElementType, wanted: ElementType },
    #[error("{path}: rows {start}..{end} are out of range (the file has {n} rows)")]
    OutOfRange { path: PathBuf, start: u64, end: u64, n: u64 },
    #[error("{path}: row {row} dimension {column} is {value}: {what}")]
    BadValue { path: PathBuf, row: u64, column: usize, value: String, what: &'static str },
    #[error(
        "{path}: row {row} has squared norm {norm_sq:e}, over the {NORM_SQUARED_MAX:e} \
         (NORM_SQUARED_MAX) at which squared distances could overflow f32"
    )]
    NormTooLarge { path: PathBuf, row: u64, norm_sq: f64 },
}

/// Largest squared norm of any vector basalt indexes or queries with:
/// `|a - b|^2 <= (|a| + |b|)^2 <= 4 max(|a|^2, |b|^2)`, so below a quarter
/// of `f32::MAX` no squared distance, inner product or partial sum of one
/// can overflow f32.
pub const NORM_SQUARED_MAX: f64 = f32::MAX as f64 / 4.0;

/// Checks rows read from `path` (the first is row `first_row`): every value
/// finite, every squared norm at most [`NORM_SQUARED_MAX`]. The error names
/// the file, the row and the column.
pub fn check_rows<T: Element>(
    path: &Path,
    first_row: u64,
    dim: usize,
    rows: &[T],
) -> Result<(), VecFileError> {
    if let Some(i) = rows.iter().position(|x| !x.is_valid()) {
        return Err(VecFileError::BadValue {
            path: path.to_path_buf(),
            row: first_row + (i / dim) as u64,
            column: i % dim,
            value: format!("{:?}", rows[i]),
            what: "every value must be finite",
        });
    }
    if T::TYPE == ElementType::F32 {
        for (r, row) in rows.chunks_exact(dim).enumerate() {
            let norm_sq: f64 = row.iter().map(|x| f64::from(x.to_f32()).powi(2)).sum();
            if norm_sq > NORM_SQUARED_MAX {
                return Err(VecFileError::NormTooLarge {
                    path: path.to_path_buf(),
                    row: first_row + r as u64,
                    norm_sq,
                });
            }
        }
    }
    Ok(())
}

/// Refuses anything but a regular file (a FIFO would block the open, a
/// directory or device is never a vector file).
pub(crate) fn check_regular(path: &Path) -> Result<(), VecFileError> {
    let meta = std::fs::metadata(path).map_err(|e| VecFileError::io(path, "stat", e))?;
    if !meta.is_file() {
        return Err(VecFileError::malformed(
            path,
            "is not a regular file (a FIFO, device or directory cannot be read as vectors)",
        ));
    }
    Ok(())
}

impl VecFileError {
    fn malformed(path: &Path, what: impl Into<String>) -> Self {
        VecFileError::Malformed { path: path.to_path_buf(), what: what.into() }
    }
    fn io(path: &Path, op: &'static str, source: io::Error) -> Self {
        VecFileError::Io { path: path.to_path_buf(), op, source }
    }
}

/// The layout and element type a file name implies.
pub fn kind_from_extension(path: &Path) -> Result<(Layout, ElementType), VecFileError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "fbin" => Ok((Layout::Bin, ElementType::F32)),
        "u8bin" => Ok((Layout::Bin, ElementType::U8)),
        "i8bin" => Ok((Layout::Bin, ElementType::I8)),
        "fvecs" => Ok((Layout::Vecs, ElementType::F32)),
        "bvecs" => Ok((Layout::Vecs, ElementType::U8)),
        _ => Err(VecFileError::UnknownExtension { path: path.to_path_buf() }),
    }
}

/// A vector file, validated on open, read with positioned reads (never
/// mapped: the pages of a mapped input would count in the resident memory a
/// build's budget bounds, all of the input's by the end of a streamed pass).
pub struct VectorFile {
    path: PathBuf,
    file: File,
    layout: Layout,
    element: ElementType,
    n: u64,
    dim: usize,
}

impl VectorFile {
    /// Opens and validates a vector file: the extension names the type, the
    /// header (or first row prefix) names the dimension, and the file size must
    /// agree with both exactly.
    pub fn open(path: &Path) -> Result<VectorFile, VecFileError> {
        let (layout, element) = kind_from_extension(path)?;
        check_regular(path)?;
        let file = File::open(path).map_err(|e| VecFileError::io(path, "open", e))?;
        let len = file.metadata().map_err(|e| VecFileError::io(path, "stat", e))?.len();
        let mut head = [0u8; 8];
        let head_len = len.min(8) as usize;
        file.read_exact_at(&mut head[..head_len], 0)
            .map_err(|e| VecFileError::io(path, "read", e))?;
        let bytes: &[u8] = &head[..head_len];
        let es = element.size_bytes() as u64;
        let (n, dim) = match layout {
            Layout::Bin => {
                if len < 8 {
                    return Err(VecFileError::malformed(
                        path,
                        format!("file is {len} bytes, too short for the 8-byte header"),
                    ));
                }
                let n = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as u64;
                let dim = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as u64;
                check_dim(path, dim)?;
                let expected = 8 + n * dim * es;
                if expected != len {
                    return Err(VecFileError::malformed(
                        path,
                        format!(
                            "header says {n} rows x {dim} dims x {es} bytes = {expected} bytes \
                             with the header, but the file has {len} bytes"
                        ),
                    ));
                }
                (n, dim as usize)
            }
            Layout::Vecs => {
                if len < 4 {
                    return Err(VecFileError::malformed(
                        path,
                        format!("file is {len} bytes: no row (empty or truncated)"),
                    ));
                }
                let dim = i32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
                if dim <= 0 {
                    return Err(VecFileError::malformed(
                        path,
                        format!("first row declares dimension {dim}"),
                    ));
                }
                let dim = dim as u64;
                check_dim(path, dim)?;
                let row = 4 + dim * es;
                if len % row != 0 {
                    return Err(VecFileError::malformed(
                        path,
                        format!(
                            "file size {len} is not a multiple of the row size {row} \
                             (4-byte prefix + {dim} x {es} bytes): truncated or mixed dimensions"
                        ),
                    ));
                }
                (len / row, dim as usize)
            }
        };
        if n > ROWS_MAX {
            return Err(VecFileError::malformed(
                path,
                format!("{n} rows exceed the limit of {ROWS_MAX} (ROWS_MAX)"),
            ));
        }
        Ok(VectorFile { path: path.to_path_buf(), file, layout, element, n, dim })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> u64 {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn dim(&self) -> usize {
        self.dim
    }
    pub fn element_type(&self) -> ElementType {
        self.element
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Reads `buf.len()` bytes at `offset` (within the length checked on open).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), VecFileError> {
        self.file.read_exact_at(buf, offset).map_err(|e| VecFileError::io(&self.path, "read", e))
    }

    fn check_range(&self, start: u64, count: usize) -> Result<(), VecFileError> {
        let end = start.saturating_add(count as u64);
        if end > self.n {
            return Err(VecFileError::OutOfRange {
                path: self.path.clone(),
                start,
                end,
                n: self.n,
            });
        }
        Ok(())
    }

    /// Copies rows `start..start+count` into `out` (cleared first) as `T`,
    /// which must be the file's element type.
    pub fn read_rows<T: Element>(
        &self,
        start: u64,
        count: usize,
        out: &mut Vec<T>,
    ) -> Result<(), VecFileError> {
        if T::TYPE != self.element {
            return Err(VecFileError::TypeMismatch {
                path: self.path.clone(),
                found: self.element,
                wanted: T::TYPE,
            });
        }
        self.check_range(start, count)?;
        out.clear();
        out.resize(count * self.dim, T::default());
        let es = self.element.size_bytes();
        let row_bytes = self.dim * es;
        match self.layout {
            Layout::Bin => {
                let mut raw = vec![0u8; count * row_bytes];
                self.read_at(8 + start * row_bytes as u64, &mut raw)?;
                T::copy_from_bytes(&raw, out);
            }
            Layout::Vecs => {
                let stride = 4 + row_bytes;
                let mut raw = vec![0u8; count * stride];
                self.read_at(start * stride as u64, &mut raw)?;
                for r in 0..count {
                    let at = r * stride;
                    let prefix = i32::from_le_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
                    if prefix as i64 != self.dim as i64 {
                        return Err(VecFileError::malformed(
                            &self.path,
                            format!(
                                "row {} declares dimension {prefix}, expected {}",
                                start as usize + r,
                                self.dim
                            ),
                        ));
                    }
                    T::copy_from_bytes(
                        &raw[at + 4..at + stride],
                        &mut out[r * self.dim..(r + 1) * self.dim],
                    );
                }
            }
        }
        Ok(())
    }

    /// [`Self::read_rows`], then [`check_rows`]: every value finite and
    /// every squared norm within [`NORM_SQUARED_MAX`], or an error naming
    /// the row and column.
    pub fn read_rows_checked<T: Element>(
        &self,
        start: u64,
        count: usize,
        out: &mut Vec<T>,
    ) -> Result<(), VecFileError> {
        self.read_rows(start, count, out)?;
        check_rows(&self.path, start, self.dim, out)
    }

    /// [`Self::read_rows_f32`] with the checks of [`check_rows`] on the
    /// file's own element type.
    pub fn read_rows_f32_checked(
        &self,
        start: u64,
        count: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), VecFileError> {
        self.read_rows_f32(start, count, out)?;
        check_rows(&self.path, start, self.dim, out)
    }

    /// Copies rows as f32 whatever the element type (for training and GEMM).
    pub fn read_rows_f32(
        &self,
        start: u64,
        count: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), VecFileError> {
        crate::with_element!(self.element, T => {
            let mut tmp: Vec<T> = Vec::new();
            self.read_rows::<T>(start, count, &mut tmp)?;
            out.clear();
            out.extend(tmp.iter().map(|x| x.to_f32()));
            Ok(())
        })
    }

    /// Reads the whole file as `T` (for in-memory builds; the caller checks the
    /// memory budget first).
    pub fn read_all<T: Element>(&self) -> Result<Vec<T>, VecFileError> {
        let mut out = Vec::new();
        self.read_rows(0, self.n as usize, &mut out)?;
        Ok(out)
    }
}

fn check_dim(path: &Path, dim: u64) -> Result<(), VecFileError> {
    if dim == 0 {
        return Err(VecFileError::malformed(path, "dimension is zero"));
    }
    if dim > DIM_MAX as u64 {
        return Err(VecFileError::malformed(
            path,
            format!("dimension {dim} exceeds the limit of {DIM_MAX} (DIM_MAX)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
