//! Putting a finished index at its path: atomically, and never destroying
//! what is not ours.
//!
//! A build writes into a sibling temporary directory `.{name}.building-{pid}`
//! and, once every file and directory in it is fsynced, publishes it:
//! - nothing at the path: `renameat2(RENAME_NOREPLACE)`;
//! - an empty directory or an index being replaced (`--force`):
//!   `renameat2(RENAME_EXCHANGE)`, so there is no moment with no index at the
//!   path, and on any error the old index stays where it was; the old one,
//!   now under the temporary name, is then removed file by file.
//!
//! Only a directory whose manifest parses and checksums as basalt's (version 2,
//! or version 1 so that old indexes can be rebuilt in place) may be replaced,
//! and only the files its layout names are removed: anything else inside it
//! makes the build refuse up front, naming the first such entry. The check is
//! made before any work ([`check_target`]) and again just before the exchange.
//!
//! A build killed part-way leaves its temporary directory behind; the next
//! build into the same place finds it ([`clean_stale`]) and removes it when its
//! process is gone and it holds only layout files (else it names it).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, RenameFlags, renameat_with};

use super::{IndexError, IndexFiles, MANIFEST_FILE, check_plain_name};
use crate::fsutil::{parent_dir, sync_dir};

/// What is at an output path before a build.
#[derive(Debug)]
pub enum Target {
    /// Nothing: the index will be renamed into place.
    Absent,
    /// An empty directory: exchanged, then removed.
    EmptyDir,
    /// A basalt index (its layout's paths): exchanged, then removed file by file.
    Index(OwnedLayout),
}

/// The paths a replaceable index consists of.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedLayout {
    /// Files, relative to the index directory, removed first.
    pub files: Vec<PathBuf>,
    /// Directories, relative to the index directory, removed (empty) after.
    pub dirs: Vec<PathBuf>,
}

/// How a publish ended.
#[derive(Debug, Default)]
pub struct Published {
    /// The replaced index could not be removed whole (something appeared in
    /// it after the check): it stays at this path, for the operator.
    pub leftover: Option<PathBuf>,
    /// Something went wrong after the new index was in place (it is).
    pub warning: Option<String>,
}

/// The index path's parent directory and final name, checked: the name must
/// be a plain name (not `.`, `..` or empty) so that it can be renamed.
fn split_out(out: &Path) -> Result<(PathBuf, String), IndexError> {
    let name = out.file_name().and_then(|n| n.to_str()).map(str::to_string);
    let plain = name.as_deref().map(check_plain_name);
    let (Some(name), Some(Ok(()))) = (name, plain) else {
        return Err(IndexError::Input(format!(
            "--out {}: must end in a directory name (not ., .. or /)",
            out.display()
        )));
    };
    let parent = parent_dir(out);
    let meta = fs::metadata(&parent).map_err(|e| IndexError::io(&parent, "stat", e))?;
    if !meta.is_dir() {
        return Err(IndexError::Input(format!("{}: is not a directory", parent.display())));
    }
    Ok((parent, name))
}

/// A fresh temporary directory name for a build of `out` by this process:
/// `.{name}.building-{pid}-{nonce}`, the nonce random so that two builds in
/// one process never share one. The caller creates it with `create_dir`,
/// which fails if it exists, and never removes one it did not create.
pub fn temp_dir_for(out: &Path) -> Result<PathBuf, IndexError> {
    let (parent, name) = split_out(out)?;
    let nonce: u32 = rand::random();
    Ok(parent.join(format!(".{name}.building-{}-{nonce:08x}", std::process::id())))
}

/// The pid in a temporary directory's suffix (`{pid}` or `{pid}-{nonce}`):
/// digits only, greater than 0.
fn parse_pid(suffix: &str) -> Option<i32> {
    let digits = suffix.split('-').next()?;
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i32>().ok().filter(|&p| p > 0)
}

/// Checks `out` before a build: what is there, and whether it may be replaced.
pub fn check_target(out: &Path, force: bool) -> Result<Target, IndexError> {
    let (parent, _) = split_out(out)?;
    if let Some(index) = enclosing_index(&parent)? {
        return Err(IndexError::Exists {
            path: out.to_path_buf(),
            what: format!("is inside the index {}; choose a path outside it", index.display()),
        });
    }
    let meta = match fs::symlink_metadata(out) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Target::Absent),
        Err(e) => return Err(IndexError::io(out, "stat", e)),
    };
    if !meta.is_dir() {
        return Err(IndexError::Exists {
            path: out.to_path_buf(),
            what: "exists and is not a directory; refusing to replace it".into(),
        });
    }
    let mut entries = fs::read_dir(out).map_err(|e| IndexError::io(out, "read_dir", e))?;
    if entries.next().is_none() {
        return Ok(Target::EmptyDir);
    }
    let layout = owned_layout(out)?;
    if !force {
        return Err(IndexError::Exists {
            path: out.to_path_buf(),
            what: "already holds an index; pass --force to replace it".into(),
        });
    }
    Ok(Target::Index(layout))
}

/// The nearest ancestor of `dir` (itself included) that is a basalt index
/// (a manifest that decodes as version 2, or a version-1 index).
fn enclosing_index(dir: &Path) -> Result<Option<PathBuf>, IndexError> {
    let abs = fs::canonicalize(dir).map_err(|e| IndexError::io(dir, "resolve", e))?;
    Ok(abs
        .ancestors()
        .filter(|a| a.join(MANIFEST_FILE).is_file())
        .find(|a| super::read_manifest(a).is_ok() || v1_layout(a).is_some())
        .map(Path::to_path_buf))
}

/// The layout of the index at `dir`, if it is one whose manifest parses and
/// checksums as basalt's and which holds nothing else; otherwise an error
/// naming what is wrong or what is not ours.
pub fn owned_layout(dir: &Path) -> Result<OwnedLayout, IndexError> {
    let not_ours = |what: String| IndexError::Exists { path: dir.to_path_buf(), what };
    let layout = match IndexFiles::open(dir) {
        Ok(files) => {
            let gen_dir = PathBuf::from(files.manifest.generation_dir());
            let mut f = vec![PathBuf::from(MANIFEST_FILE)];
            f.extend(files.manifest.files.iter().map(|e| gen_dir.join(&e.name)));
            OwnedLayout { files: f, dirs: vec![gen_dir] }
        }
        Err(e) => match v1_layout(dir) {
            Some(l) => l,
            None => {
                return Err(not_ours(format!(
                    "is not a basalt index ({e}); refusing to replace it even with --force"
                )));
            }
        },
    };
    // Everything in the directory must be named by the layout.
    let owned: std::collections::HashSet<&Path> =
        layout.files.iter().chain(&layout.dirs).map(PathBuf::as_path).collect();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for entry in fs::read_dir(&abs).map_err(|e| IndexError::io(&abs, "read_dir", e))? {
            let entry = entry.map_err(|e| IndexError::io(&abs, "read_dir", e))?;
            let child = rel.join(entry.file_name());
            if !owned.contains(child.as_path()) {
                return Err(not_ours(format!(
                    "holds {}, which is not part of a basalt index; refusing to replace it \
                     (move it away first)",
                    dir.join(&child).display()
                )));
            }
            let ft = entry.file_type().map_err(|e| IndexError::io(&abs, "stat", e))?;
            let is_dir = layout.dirs.contains(&child);
            if is_dir != ft.is_dir() || (!is_dir && !ft.is_file()) {
                return Err(not_ours(format!(
                    "{} is not the {} a basalt index has there",
                    dir.join(&child).display(),
                    if is_dir { "directory" } else { "regular file" }
                )));
            }
            if is_dir {
                stack.push(child);
            }
        }
    }
    Ok(layout)
}

/// The files of a version-1 generation.
const V1_FILES: [&str; 3] = ["graph", "pq", "codes"];

/// The layout of a version-1 index (manifest `{"body", "crc32c"}` with a CRC
/// over the body's compact JSON, files `gen-0/{graph,pq,codes}`), so that it
/// can be rebuilt in place. None when `dir` does not hold one.
fn v1_layout(dir: &Path) -> Option<OwnedLayout> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        body: serde_json::Value,
        crc32c: u32,
    }
    let path = dir.join(MANIFEST_FILE);
    let meta = fs::symlink_metadata(&path).ok()?;
    if !meta.is_file() || meta.len() > super::MANIFEST_BYTES_MAX {
        return None;
    }
    let env: Envelope = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
    if crate::format::crc32c(env.body.to_string().as_bytes()) != env.crc32c
        || env.body.get("format_version")?.as_u64()? != 1
    {
        return None;
    }
    let names: Vec<&str> =
        env.body.get("files")?.as_array()?.iter().filter_map(|f| f.get("name")?.as_str()).collect();
    let want: Vec<String> = V1_FILES.iter().map(|f| format!("gen-0/{f}")).collect();
    if names != want {
        return None;
    }
    let mut files = vec![PathBuf::from(MANIFEST_FILE)];
    files.extend(want.iter().map(PathBuf::from));
    Some(OwnedLayout { files, dirs: vec![PathBuf::from("gen-0")] })
}

/// What [`clean_stale`] found.
#[derive(Debug, Default)]
pub struct Stale {
    /// Temporary directories of dead builds, removed.
    pub removed: Vec<PathBuf>,
    /// Temporary directories of dead builds left in place, and why.
    pub left: Vec<(PathBuf, String)>,
}

/// Removes the temporary directories that killed builds of `out` left
/// behind (`.{name}.building-{pid}` of processes that are gone), when they
/// hold only layout files; others are left and named.
pub fn clean_stale(out: &Path) -> Result<Stale, IndexError> {
    let (parent, name) = split_out(out)?;
    let prefixes = [format!(".{name}.building-"), format!(".{name}.replaced-")];
    let mut removed = Vec::new();
    let mut left = Vec::new();
    for entry in fs::read_dir(&parent).map_err(|e| IndexError::io(&parent, "read_dir", e))? {
        let entry = entry.map_err(|e| IndexError::io(&parent, "read_dir", e))?;
        let file_name = entry.file_name();
        let Some(fname) = file_name.to_str() else { continue };
        let Some(pid) =
            prefixes.iter().find_map(|p| fname.strip_prefix(p.as_str())).and_then(parse_pid)
        else {
            continue;
        };
        if pid == std::process::id() as i32 || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        // Never follow a symlink named like ours: it may point at anything.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            left.push((path, "not a directory (a symlink?): left alone".into()));
            continue;
        }
        match remove_partial(&path) {
            Ok(()) => removed.push(path),
            Err(why) => left.push((path, why)),
        }
    }
    Ok(Stale { removed, left })
}

fn process_alive(pid: i32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else { return false };
    match rustix::process::test_kill_process(p) {
        Ok(()) => true,
        // It exists, but belongs to someone else.
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

/// Removes a partial or replaced index directory: only files with layout
/// names in the places the layout puts them; anything else is left and named.
pub(crate) fn remove_partial(dir: &Path) -> Result<(), String> {
    // lstat: a symlink is never followed into.
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let mut gen_dirs = Vec::new();
    let mut scratch = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ft = entry.file_type().map_err(|e| e.to_string())?;
        let is_gen = name.strip_prefix("gen-").is_some_and(|g| g.parse::<u64>().is_ok());
        if ft.is_file() && name == MANIFEST_FILE {
            continue;
        }
        if ft.is_dir() && name == super::partition::SCRATCH_DIR {
            // A killed partitioned build's scratch files.
            let mut files = Vec::new();
            for inner in fs::read_dir(entry.path()).map_err(|e| e.to_string())? {
                let inner = inner.map_err(|e| e.to_string())?;
                let ok = inner.file_type().is_ok_and(|t| t.is_file())
                    && inner.file_name().to_str().is_some_and(super::partition::is_scratch_file);
                if !ok {
                    return Err(format!("holds {}, not a scratch file", inner.path().display()));
                }
                files.push(inner.path());
            }
            scratch.push((entry.path(), files));
            continue;
        }
        if ft.is_dir() && is_gen {
            for inner in fs::read_dir(entry.path()).map_err(|e| e.to_string())? {
                let inner = inner.map_err(|e| e.to_string())?;
                let iname = inner.file_name();
                let ok = inner.file_type().is_ok_and(|t| t.is_file())
                    && super::BUILD_FILES.iter().any(|f| iname.to_str() == Some(f));
                if !ok {
                    return Err(format!("holds {}, not a build's file", inner.path().display()));
                }
            }
            gen_dirs.push(entry.path());
            continue;
        }
        return Err(format!("holds {}, not part of an index", entry.path().display()));
    }
    for (d, files) in &scratch {
        for f in files {
            remove_if_present(f).map_err(|e| e.to_string())?;
        }
        fs::remove_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    for g in &gen_dirs {
        for f in super::BUILD_FILES {
            remove_if_present(&g.join(f)).map_err(|e| e.to_string())?;
        }
        fs::remove_dir(g).map_err(|e| format!("{}: {e}", g.display()))?;
    }
    remove_if_present(&dir.join(MANIFEST_FILE)).map_err(|e| e.to_string())?;
    fs::remove_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// How the final rename is done (tests inject failures).
pub type RenameFn = dyn Fn(&Path, &Path, RenameFlags) -> io::Result<()>;

fn rename_at(from: &Path, to: &Path, flags: RenameFlags) -> io::Result<()> {
    renameat_with(CWD, from, CWD, to, flags).map_err(io::Error::from)
}

/// Publishes the finished, fsynced index in `tmp` at `out`, which was found
/// to be `target` before the build.
pub fn publish(tmp: &Path, out: &Path, target: &Target) -> Result<Published, IndexError> {
    publish_with(tmp, out, target, &rename_at)
}

/// [`publish`] with the rename passed in.
pub fn publish_with(
    tmp: &Path,
    out: &Path,
    target: &Target,
    rename: &RenameFn,
) -> Result<Published, IndexError> {
    let (parent, _) = split_out(out)?;
    // The path may have changed during the build: look again.
    let now = check_target(out, true)?;
    let same = match (target, &now) {
        (Target::Absent, Target::Absent) | (Target::EmptyDir, Target::EmptyDir) => true,
        (Target::Index(a), Target::Index(b)) => a == b,
        _ => false,
    };
    if !same {
        return Err(IndexError::Exists {
            path: out.to_path_buf(),
            what: "changed while the index was being built; nothing was replaced".into(),
        });
    }
    let flags = match now {
        Target::Absent => RenameFlags::NOREPLACE,
        _ => RenameFlags::EXCHANGE,
    };
    rename(tmp, out, flags).map_err(|e| {
        let op = if flags == RenameFlags::EXCHANGE {
            "exchange with the new index (the old one is unchanged)"
        } else {
            "rename the new index into place"
        };
        IndexError::io(out, op, e)
    })?;
    let mut published = Published::default();
    // From here the new index is in place: nothing may fail the publish (the
    // caller would then treat `tmp`, which now holds the old index, as its
    // own leftover). Problems are reported in `Published`.
    if let Err(e) = sync_dir(&parent) {
        published.warning = Some(format!("{}: fsync after the rename: {e}", parent.display()));
    }
    // A rename into an absent path leaves nothing behind.
    if matches!(now, Target::Absent) {
        return Ok(published);
    }
    // If `out` was swapped for a symlink after the check, the exchange moved
    // the symlink here: remove nothing through it.
    if !fs::symlink_metadata(tmp).is_ok_and(|m| m.is_dir()) {
        published.leftover = Some(tmp.to_path_buf());
        return Ok(published);
    }
    match now {
        Target::Absent => unreachable!("returned above"),
        Target::EmptyDir => {
            if fs::remove_dir(tmp).is_err() {
                published.leftover = Some(tmp.to_path_buf());
            }
        }
        Target::Index(layout) => {
            if remove_layout(tmp, &layout).is_err() {
                published.leftover = Some(tmp.to_path_buf());
            }
        }
    }
    Ok(published)
}

/// Removes exactly the files and directories of `layout` under `dir`, then `dir`.
fn remove_layout(dir: &Path, layout: &OwnedLayout) -> io::Result<()> {
    for f in &layout.files {
        remove_if_present(&dir.join(f))?;
    }
    for d in layout.dirs.iter().rev() {
        fs::remove_dir(dir.join(d))?;
    }
    fs::remove_dir(dir)
}

/// Bytes free for an unprivileged writer on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64, IndexError> {
    let s = rustix::fs::statvfs(dir).map_err(|e| IndexError::io(dir, "statvfs", e.into()))?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

#[cfg(test)]
mod tests;
