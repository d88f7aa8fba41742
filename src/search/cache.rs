//! The entry cache: records kept in RAM so the rounds that touch them cost
//! no I/O. By default it holds the index's hot list (the nodes sample
//! queries expanded most, ranked at build time: `search::hot`), then the
//! nodes nearest the medoid breadth-first; `CachePolicy::Bfs` gives the
//! breadth-first cache alone. Its size is a budget in bytes or in nodes.
//! Filled once at open, read-only afterwards; every record is
//! checksum-verified when loaded.

use rustc_hash::FxHashMap;

use super::{Index, SearchError};
use crate::format::SECTOR_BYTES;
use crate::io::{ReadRequest, SectorReader};

/// Records read per submission while filling the cache.
pub(super) const FILL_BATCH: usize = 64;

/// Records of cached nodes, by id.
#[derive(Default)]
pub struct EntryCache {
    records: FxHashMap<u32, Box<[u8]>>,
}

impl EntryCache {
    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        !self.records.is_empty() && self.records.contains_key(&id)
    }
    #[inline]
    pub fn get(&self, id: u32) -> Option<&[u8]> {
        if self.records.is_empty() {
            return None;
        }
        self.records.get(&id).map(|b| &b[..])
    }

    /// Fills the cache with up to `nodes` records: first the hot list's
    /// (when `policy` is [`CachePolicy::Hot`]), then breadth-first from the
    /// medoid for whatever room is left.
    pub(super) fn fill(
        index: &Index,
        mut reader: Box<dyn SectorReader>,
        nodes: usize,
        policy: CachePolicy,
        hot: &[u32],
    ) -> Result<EntryCache, SearchError> {
        let mut cache = EntryCache::default();
        let nodes = nodes.min(index.len() as usize);
        if nodes == 0 {
            return Ok(cache);
        }
        if policy == CachePolicy::Hot {
            let take = nodes.min(hot.len());
            for ids in hot[..take].chunks(FILL_BATCH) {
                cache.read_into(index, reader.as_mut(), ids)?;
            }
        }
        // Breadth-first, one level at a time, reading up to FILL_BATCH
        // records per submission; nodes already cached are walked through.
        let mut frontier = vec![index.header().medoid];
        let mut seen = rustc_hash::FxHashSet::default();
        seen.insert(index.header().medoid);
        while !frontier.is_empty() && cache.len() < nodes {
            let missing: Vec<u32> =
                frontier.iter().copied().filter(|id| !cache.contains(*id)).collect();
            let room = nodes - cache.len();
            for ids in missing[..missing.len().min(room)].chunks(FILL_BATCH) {
                cache.read_into(index, reader.as_mut(), ids)?;
            }
            let mut next = Vec::new();
            for id in frontier {
                let Some(bytes) = cache.get(id) else { continue };
                let layout = index.layout();
                let rec =
                    layout.decode_record(id, bytes, true).map_err(|f| index.record_error(id, f))?;
                for n in rec.neighbors() {
                    if seen.insert(n) {
                        next.push(n);
                    }
                }
            }
            frontier = next;
        }
        Ok(cache)
    }

    /// Reads the records of `ids` (at most FILL_BATCH), checks and keeps them.
    fn read_into(
        &mut self,
        index: &Index,
        reader: &mut dyn SectorReader,
        ids: &[u32],
    ) -> Result<(), SearchError> {
        let layout = *index.layout();
        let reqs: Vec<ReadRequest> = ids
            .iter()
            .map(|&id| ReadRequest {
                offset: layout.sector_of(id) * SECTOR_BYTES as u64,
                sectors: layout.sectors_per_record,
            })
            .collect();
        reader.read(&reqs)?;
        for (slot, &id) in ids.iter().enumerate() {
            let at = layout.offset_in_sector(id);
            let bytes = &reader.data(slot)[at..at + layout.record_bytes as usize];
            layout.decode_record(id, bytes, true).map_err(|f| index.record_error(id, f))?;
            self.records.insert(id, bytes.to_vec().into_boxed_slice());
        }
        Ok(())
    }
}

/// Which nodes the entry cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CachePolicy {
    /// The index's hot list (nodes most expanded by sample queries at build
    /// time), then breadth-first from the medoid for any room left.
    #[default]
    Hot,
    /// Breadth-first from the medoid only.
    Bfs,
}

impl std::str::FromStr for CachePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hot" => Ok(CachePolicy::Hot),
            "bfs" => Ok(CachePolicy::Bfs),
            other => Err(format!("unknown cache policy {other:?} (expected hot or bfs)")),
        }
    }
}

impl std::fmt::Display for CachePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CachePolicy::Hot => "hot",
            CachePolicy::Bfs => "bfs",
        })
    }
}

/// RAM one cached record costs besides its bytes (map entry and box).
pub const CACHE_ENTRY_OVERHEAD_BYTES: u64 = 32;
