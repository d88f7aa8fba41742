//! Durable file creation: write under a temporary name, fsync, rename into
//! place, fsync the directory. Used by every writer so that a crash or kill
//! never leaves a half-written file (or index) under its final name.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// fsyncs a directory so that a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The parent directory of `path`, or `.` for a bare file name.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A sibling temporary path for `path`: same directory (so rename is atomic),
/// a name no reader will mistake for the real file.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    parent_dir(path).join(format!(".{name}.tmp-{}", std::process::id()))
}

/// A file being written under a temporary name; [`PendingFile::commit`]
/// makes it appear under the final name. Dropped without commit, the
/// temporary file is removed.
pub struct PendingFile {
    final_path: PathBuf,
    temp_path: PathBuf,
    committed: bool,
}

impl PendingFile {
    pub fn create(final_path: &Path) -> io::Result<(PendingFile, File)> {
        let temp_path = temp_sibling(final_path);
        let file = File::create(&temp_path)?;
        Ok((
            PendingFile { final_path: final_path.to_path_buf(), temp_path, committed: false },
            file,
        ))
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// fsyncs `file`, renames it into place and fsyncs the directory.
    pub fn commit(mut self, file: File) -> io::Result<()> {
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp_path, &self.final_path)?;
        sync_dir(&parent_dir(&self.final_path))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}
