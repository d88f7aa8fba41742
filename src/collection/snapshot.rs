//! Snapshots: a consistent copy of a live collection that opens as a
//! collection (the base copy a standby will bootstrap from, and a backup).
//!
//! What a snapshot holds: the `collection` file, the manifest and the
//! current generation's files, the id map and payloads (a fresh fjall store
//! filled from the live one), and the WAL segments on disk when the copy
//! starts. Consistency comes from two facts: merges are held off for the
//! whole copy (the merge lock), so the generation, the manifest, the map
//! and the set of WAL segments cannot change under it; and replay is exact
//! from any prefix of the log, so copying the last segment while writes
//! append to it yields a prefix (a record caught half-copied is a torn
//! tail, cut when the snapshot opens). Every write acknowledged before the
//! snapshot started is in it; writes during it may or may not be.
//!
//! The copy is made in `DEST.partial` beside `DEST`, every file and
//! directory fsynced, then renamed: a crash never leaves a `DEST` that is
//! half a snapshot. Writes and searches go on meanwhile; a merge waits.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::config::CONFIG_FILE;
use super::idmap::IdMap;
use super::{Collection, CollectionError, META_DIR, WAL_DIR};
use crate::index::{COLLECTION_FILES, LAYOUT_FILES, MANIFEST_FILE};
use crate::wal::Lsn;

/// What a snapshot copied.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotReport {
    pub dir: PathBuf,
    pub generation: Option<u64>,
    /// Every record up to this LSN is in the snapshot (maybe more).
    pub lsn_at_least: Lsn,
    pub wal_segments: usize,
    pub map_entries: u64,
    pub bytes: u64,
    pub seconds: f64,
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> CollectionError + 'a {
    move |e| CollectionError::io(path, op, e)
}

/// Copies `src` to `dst` and fsyncs it; returns the bytes copied.
fn copy_synced(src: &Path, dst: &Path) -> Result<u64, CollectionError> {
    let n = std::fs::copy(src, dst).map_err(io(src, "copy"))?;
    File::open(dst).and_then(|f| f.sync_all()).map_err(io(dst, "fsync"))?;
    Ok(n)
}

fn sync_dir(d: &Path) -> Result<(), CollectionError> {
    crate::fsutil::sync_dir(d).map_err(io(d, "fsync"))
}

impl Collection {
    /// Writes a snapshot of the collection to `dest` (which must not exist).
    pub fn snapshot(&self, dest: &Path) -> Result<SnapshotReport, CollectionError> {
        let started = Instant::now();
        if dest.exists() {
            return Err(CollectionError::Invalid(format!(
                "{}: exists; a snapshot is written to a new path",
                dest.display()
            )));
        }
        let name = dest.file_name().ok_or_else(|| {
            CollectionError::Invalid(format!("{}: not a directory name", dest.display()))
        })?;
        let parent = crate::fsutil::parent_dir(dest);
        std::fs::create_dir_all(&parent).map_err(io(&parent, "create"))?;
        let tmp = parent.join(format!("{}.partial", name.to_string_lossy()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp, "remove"))?;
        }
        std::fs::create_dir(&tmp).map_err(io(&tmp, "create"))?;

        // No merge may switch generations, rewrite the map or trim the
        // WAL while we copy.
        let _no_merge = self.merge_lock.lock();
        let generation = self.state.read().generation.clone();
        let lsn_at_least = self.wal().last_lsn();
        let mut bytes = copy_synced(&self.dir().join(CONFIG_FILE), &tmp.join(CONFIG_FILE))?;
        bytes += copy_synced(&self.dir().join(super::UID_FILE), &tmp.join(super::UID_FILE))?;
        if let Some(g) = &generation {
            bytes += copy_synced(&self.dir().join(MANIFEST_FILE), &tmp.join(MANIFEST_FILE))?;
            let gen_name = g.gen_dir.file_name().ok_or_else(|| {
                CollectionError::Corrupt(format!("generation directory {}", g.gen_dir.display()))
            })?;
            let out = tmp.join(gen_name);
            std::fs::create_dir(&out).map_err(io(&out, "create"))?;
            for f in LAYOUT_FILES.iter().chain(COLLECTION_FILES.iter()) {
                let src = g.gen_dir.join(f);
                if src.exists() {
                    bytes += copy_synced(&src, &out.join(f))?;
                }
            }
            sync_dir(&out)?;
        }

        // The id map: a fresh store filled from the live one.
        let meta = tmp.join(META_DIR);
        let map_entries = {
            let copy = IdMap::open(&meta)?;
            self.idmap().copy_to(&copy)?
        };

        // The WAL segments present now, in order (the last one possibly
        // still growing: a prefix of it is enough).
        let wal_src = self.dir().join(WAL_DIR);
        let wal_dst = tmp.join(WAL_DIR);
        std::fs::create_dir(&wal_dst).map_err(io(&wal_dst, "create"))?;
        let segments = self.wal().segment_names();
        for s in &segments {
            bytes += copy_synced(&wal_src.join(s), &wal_dst.join(s))?;
        }
        sync_dir(&wal_dst)?;
        sync_dir(&tmp)?;
        std::fs::rename(&tmp, dest).map_err(io(dest, "rename"))?;
        sync_dir(&parent)?;
        Ok(SnapshotReport {
            dir: dest.to_path_buf(),
            generation: generation.as_ref().map(|g| g.ident.generation),
            lsn_at_least,
            wal_segments: segments.len(),
            map_entries,
            bytes,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}
