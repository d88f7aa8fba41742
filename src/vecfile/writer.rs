//! Streaming vector file writer with atomic commit.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use super::{Layout, VecFileError, kind_from_extension};
use crate::distance::DIM_MAX;
use crate::element::Element;
use crate::fsutil::PendingFile;

const WRITE_BUFFER_BYTES: usize = 4 << 20;

/// Writes rows of `T` to a `.fbin/.u8bin/.i8bin/.fvecs/.bvecs` file in
/// constant memory. The file appears under its name only after [`finish`].
///
/// [`finish`]: VectorWriter::finish
pub struct VectorWriter<T: Element> {
    path: PathBuf,
    pending: PendingFile,
    out: BufWriter<File>,
    layout: Layout,
    dim: usize,
    rows: u64,
    _t: PhantomData<T>,
}

impl<T: Element> VectorWriter<T> {
    pub fn create(path: &Path, dim: usize) -> Result<Self, VecFileError> {
        let (layout, element) = kind_from_extension(path)?;
        if element != T::TYPE {
            return Err(VecFileError::TypeMismatch {
                path: path.to_path_buf(),
                found: element,
                wanted: T::TYPE,
            });
        }
        if dim == 0 || dim > DIM_MAX {
            return Err(VecFileError::malformed(
                path,
                format!("dimension {dim} is outside 1..={DIM_MAX}"),
            ));
        }
        let (pending, file) =
            PendingFile::create(path).map_err(|e| VecFileError::io(path, "create", e))?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        if layout == Layout::Bin {
            // The row count is patched in by `finish`.
            let mut header = [0u8; 8];
            header[4..8].copy_from_slice(&(dim as u32).to_le_bytes());
            out.write_all(&header).map_err(|e| VecFileError::io(path, "write", e))?;
        }
        Ok(VectorWriter {
            path: path.to_path_buf(),
            pending,
            out,
            layout,
            dim,
            rows: 0,
            _t: PhantomData,
        })
    }

    /// Appends whole rows (`rows.len()` must be a multiple of the dimension).
    pub fn append(&mut self, rows: &[T]) -> Result<(), VecFileError> {
        assert_eq!(rows.len() % self.dim, 0, "append takes whole rows");
        let n = (rows.len() / self.dim) as u64;
        if self.rows + n > super::ROWS_MAX {
            return Err(VecFileError::malformed(
                &self.path,
                format!("more than {} rows (ROWS_MAX)", super::ROWS_MAX),
            ));
        }
        let io = |e| VecFileError::io(&self.path, "write", e);
        match self.layout {
            Layout::Bin => self.out.write_all(T::as_bytes(rows)).map_err(io)?,
            Layout::Vecs => {
                for row in rows.chunks_exact(self.dim) {
                    self.out.write_all(&(self.dim as i32).to_le_bytes()).map_err(io)?;
                    self.out.write_all(T::as_bytes(row)).map_err(io)?;
                }
            }
        }
        self.rows += n;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Completes the header, fsyncs and renames the file into place.
    pub fn finish(self) -> Result<u64, VecFileError> {
        let VectorWriter { path, pending, out, layout, rows, .. } = self;
        let path = path.as_path();
        let io = |op| move |e| VecFileError::io(path, op, e);
        let mut file = out.into_inner().map_err(|e| io("flush")(e.into_error()))?;
        if layout == Layout::Bin {
            file.seek(SeekFrom::Start(0)).map_err(io("seek"))?;
            file.write_all(&(rows as u32).to_le_bytes()).map_err(io("write"))?;
        }
        pending.commit(file).map_err(io("commit"))?;
        Ok(rows)
    }
}
