//! One open disk generation of a collection: the engine's index (codes,
//! codebook, entry cache, graph file), its ids file, a pool of searchers,
//! and a buffered handle for point reads. Held by `Arc`: a search keeps the
//! generation it started on to its end; a generation replaced by a merge
//! is marked retired and its files are removed when the last holder drops
//! it (never while a search may read them).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use super::CollectionError;
use super::idfile::IdFile;
use super::ids::ExternalId;
use crate::format::FileIdent;
use crate::index::{CHANGES_FILE, GRAPH_FILE, IDS_FILE, LAYOUT_FILES};
use crate::search::{Index, OpenOptions, Searcher};

/// Searchers kept for reuse (each owns an io_uring ring).
const SEARCHERS_POOLED_MAX: usize = 64;

pub struct Generation {
    pub index: Index,
    pub ids: Option<IdFile>,
    pub ident: FileIdent,
    pub gen_dir: PathBuf,
    graph: File,
    searchers: Mutex<Vec<Searcher>>,
    retired: AtomicBool,
}

impl Generation {
    /// Opens the generation the manifest of `dir` names.
    pub fn open(dir: &Path, opts: &OpenOptions) -> Result<Generation, CollectionError> {
        let index = Index::open(dir, opts)?;
        let m = index.manifest().clone();
        let ident = m.ident();
        let gen_dir = dir.join(m.generation_dir());
        let ids = match m.entry(IDS_FILE) {
            Some(_) => Some(IdFile::open(&gen_dir.join(IDS_FILE), ident, m.count)?),
            None => None,
        };
        let gpath = gen_dir.join(GRAPH_FILE);
        let graph = File::open(&gpath).map_err(|e| CollectionError::io(&gpath, "open", e))?;
        Ok(Generation {
            index,
            ids,
            ident,
            gen_dir,
            graph,
            searchers: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
        })
    }

    /// Slots of the graph (live and free).
    pub fn slots(&self) -> u64 {
        self.index.len()
    }

    /// Slots holding no point.
    pub fn free_slots(&self) -> u64 {
        self.ids.as_ref().map_or(0, |f| f.free())
    }

    /// The external id in `slot` (`None`: free). An index built by `basalt
    /// build` has no ids file: its ids are the row numbers.
    pub fn external_id(&self, slot: u32) -> Result<Option<ExternalId>, CollectionError> {
        match &self.ids {
            Some(f) => Ok(f.get(slot)?),
            None => Ok(Some(ExternalId::Num(u64::from(slot)))),
        }
    }

    /// The vector of `slot`, read and checksum-verified.
    pub fn read_vector(&self, slot: u32) -> Result<Vec<f32>, CollectionError> {
        let layout = self.index.layout();
        let mut buf = vec![0u8; layout.record_bytes as usize];
        let path = self.gen_dir.join(GRAPH_FILE);
        self.graph
            .read_exact_at(&mut buf, layout.record_offset(slot))
            .map_err(|e| CollectionError::io(&path, "read", e))?;
        let rec = layout.decode_record(slot, &buf, true).map_err(|f| {
            CollectionError::Corrupt(format!("{}: node {slot}: {f}", path.display()))
        })?;
        let dim = self.index.dim();
        Ok(crate::with_element!(self.index.element_type(), T => {
            let mut v = vec![T::default(); dim];
            rec.vector_into(&mut v);
            v.iter().map(|x| crate::element::Element::to_f32(*x)).collect()
        }))
    }

    /// Runs `f` with a searcher of this generation (pooled).
    pub fn with_searcher<R>(
        &self,
        f: impl FnOnce(&mut Searcher) -> Result<R, CollectionError>,
    ) -> Result<R, CollectionError> {
        let pooled = self.searchers.lock().pop();
        let mut s = match pooled {
            Some(s) => s,
            None => self.index.searcher()?,
        };
        let r = f(&mut s);
        let mut pool = self.searchers.lock();
        if pool.len() < SEARCHERS_POOLED_MAX {
            pool.push(s);
        }
        r
    }

    /// Marks the generation replaced: its files go when the last holder drops it.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if !self.retired.load(Ordering::Acquire) {
            return;
        }
        // Only the layout's names, never a recursive removal: a file we do
        // not know is left (and the directory with it).
        for name in LAYOUT_FILES.iter().chain([IDS_FILE, CHANGES_FILE].iter()) {
            let _ = std::fs::remove_file(self.gen_dir.join(name));
        }
        let _ = std::fs::remove_dir(&self.gen_dir);
    }
}
