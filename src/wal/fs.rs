//! The file layer under the WAL: the real one (std::fs, fdatasync) and a
//! simulated one for the crash tests, which keeps what was made durable apart
//! from what was only written, can fail any operation on demand, and on a
//! simulated power loss keeps a random prefix of each file's unsynced bytes
//! and forgets files whose directory entry was never synced.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open segment file, appended to at its end.
pub trait WalFile: Send {
    /// Appends all of `buf`.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// The operations the WAL needs of a file system.
pub trait WalFs: Send + Sync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Creates a new file (an error if it exists).
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Opens an existing file to append to it.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Cuts a file to `len` bytes and makes that durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Makes the creation and removal of `dir`'s entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

struct RealFile(File);

impl WalFile for RealFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl WalFs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let f = OpenOptions::new().append(true).create_new(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        Ok(Box::new(RealFile(OpenOptions::new().append(true).open(path)?)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in fs::read_dir(dir)? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// One simulated file: the bytes a power loss keeps for sure, the bytes
/// written since the last sync, and whether its directory entry is durable.
#[derive(Clone, Debug, Default)]
struct SimFile {
    durable: Vec<u8>,
    pending: Vec<u8>,
    entry_durable: bool,
}

#[derive(Debug, Default)]
struct SimState {
    files: BTreeMap<PathBuf, SimFile>,
    /// Operations left before every operation fails (a dying disk).
    ops_left: Option<u64>,
    /// fdatasync calls that succeeded.
    syncs: u64,
    /// Fail the n-th following fdatasync (0 = the next).
    fail_sync_in: Option<u64>,
}

/// An in-memory file system that can lose power.
#[derive(Clone, Debug, Default)]
pub struct SimFs(Arc<Mutex<SimState>>);

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A panicking test thread poisons the lock; the state is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every operation after the next `n` fails with EIO.
    pub fn fail_after(&self, n: u64) {
        self.state().ops_left = Some(n);
    }

    /// The `n`-th following fdatasync fails (0: the next one).
    pub fn fail_sync_in(&self, n: u64) {
        self.state().fail_sync_in = Some(n);
    }

    /// fdatasync calls that succeeded so far.
    pub fn syncs(&self) -> u64 {
        self.state().syncs
    }

    /// A power loss: each file keeps its durable bytes and `keep(pending)`
    /// bytes of what was written since its last sync; files whose directory
    /// entry was never synced vanish. Operations work again afterwards.
    pub fn power_loss(&self, mut keep: impl FnMut(usize) -> usize) {
        let mut s = self.state();
        s.files.retain(|_, f| f.entry_durable);
        for f in s.files.values_mut() {
            let k = keep(f.pending.len()).min(f.pending.len());
            let kept: Vec<u8> = f.pending[..k].to_vec();
            f.durable.extend_from_slice(&kept);
            f.pending.clear();
        }
        s.ops_left = None;
        s.fail_sync_in = None;
    }

    /// The current bytes of a file (durable and pending).
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state();
        s.files.get(path).map(|f| [f.durable.clone(), f.pending.clone()].concat())
    }

    /// Replaces a file's bytes (all durable), for corruption tests.
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) {
        let mut s = self.state();
        let f = s.files.entry(path.to_path_buf()).or_default();
        f.durable = bytes;
        f.pending.clear();
        f.entry_durable = true;
    }

    fn op(&self) -> io::Result<std::sync::MutexGuard<'_, SimState>> {
        let mut s = self.state();
        if let Some(n) = s.ops_left.as_mut() {
            if *n == 0 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            *n -= 1;
        }
        Ok(s)
    }
}

struct SimHandle {
    fs: SimFs,
    path: PathBuf,
}

impl WalFile for SimHandle {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.op()?;
        let f = s.files.get_mut(&self.path).ok_or(io::ErrorKind::NotFound)?;
        f.pending.extend_from_slice(buf);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.fs.op()?;
        if let Some(n) = s.fail_sync_in.as_mut() {
            if *n == 0 {
                s.fail_sync_in = None;
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            *n -= 1;
        }
        let f = s.files.get_mut(&self.path).ok_or(io::ErrorKind::NotFound)?;
        let p = std::mem::take(&mut f.pending);
        f.durable.extend_from_slice(&p);
        s.syncs += 1;
        Ok(())
    }
}

impl WalFs for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        self.op().map(|_| ())
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let mut s = self.op()?;
        if s.files.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        s.files.insert(path.to_path_buf(), SimFile::default());
        Ok(Box::new(SimHandle { fs: self.clone(), path: path.to_path_buf() }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WalFile>> {
        let s = self.op()?;
        if !s.files.contains_key(path) {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(Box::new(SimHandle { fs: self.clone(), path: path.to_path_buf() }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.op()?;
        let f = s.files.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok([f.durable.clone(), f.pending.clone()].concat())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.op()?;
        Ok(s.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.op()?;
        s.files.remove(path).map(|_| ()).ok_or_else(|| io::ErrorKind::NotFound.into())
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.op()?;
        let f = s.files.get_mut(path).ok_or(io::ErrorKind::NotFound)?;
        let mut all = [std::mem::take(&mut f.durable), std::mem::take(&mut f.pending)].concat();
        all.truncate(len as usize);
        f.durable = all;
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.op()?;
        for (p, f) in s.files.iter_mut() {
            if p.parent() == Some(dir) {
                f.entry_durable = true;
            }
        }
        Ok(())
    }
}
