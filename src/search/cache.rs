//! The entry cache: records kept in RAM so the rounds that touch them cost
//! no I/O. By default it holds the index's hot list (the nodes sample
//! queries expanded most, ranked at build time: `search::hot`), then the
//! nodes nearest the medoid breadth-first; `CachePolicy::Bfs` gives the
//! breadth-first cache alone. Its size is a budget in bytes or in nodes.
//! Filled once at open, read-only afterwards; every record is
//! checksum-verified when loaded.
//!
//! With a packed placement the cache holds whole sectors (every record of
//! the sector of each node it takes): a search reranks every record of a
//! sector it reads, and one of a cached sector as well, so a cache changes
//! how many reads a query makes, never its answer. The node budget then
//! counts every record of the cached sectors.

use rustc_hash::FxHashMap;

use super::{Index, SearchError};
use crate::format::SECTOR_BYTES;
use crate::format::graph::Layout;
use crate::io::{ReadRequest, SectorReader};

/// Records read per submission while filling the cache.
pub(super) const FILL_BATCH: usize = 64;

/// Records of cached nodes, by id (row order), or whole sectors (packed).
#[derive(Default)]
pub struct EntryCache {
    records: FxHashMap<u32, Box<[u8]>>,
    /// Packed placement: sector number -> its index in `sector_bytes`.
    sectors: FxHashMap<u64, u32>,
    sector_bytes: Vec<u8>,
    /// Records held (in `records`, or in the cached sectors).
    nodes: usize,
    layout: Option<Layout>,
}

impl EntryCache {
    /// Records held.
    pub fn len(&self) -> usize {
        self.nodes
    }
    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }
    #[inline]
    pub fn contains(&self, id: u32) -> bool {
        if self.nodes == 0 {
            return false;
        }
        match self.layout {
            Some(l) => self.sectors.contains_key(&l.sector_of(id)),
            None => self.records.contains_key(&id),
        }
    }
    #[inline]
    pub fn get(&self, id: u32) -> Option<&[u8]> {
        if self.nodes == 0 {
            return None;
        }
        match self.layout {
            Some(l) => {
                let i = *self.sectors.get(&l.sector_of(id))? as usize * SECTOR_BYTES;
                let at = i + l.offset_in_sector(id);
                Some(&self.sector_bytes[at..at + l.record_bytes as usize])
            }
            None => self.records.get(&id).map(|b| &b[..]),
        }
    }
    /// The cached sector holding `id` (packed placement only).
    #[inline]
    pub(super) fn sector(&self, id: u32) -> Option<(u64, &[u8])> {
        let l = self.layout?;
        let sector = l.sector_of(id);
        let i = *self.sectors.get(&sector)? as usize * SECTOR_BYTES;
        Some((sector, &self.sector_bytes[i..i + SECTOR_BYTES]))
    }

    /// Fills the cache with up to `nodes` records (whole sectors: rounded up
    /// to the last sector's): first the hot list's
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
        if index.packed_sectors() {
            cache.layout = Some(*index.layout());
        }
        let nodes = nodes.min(index.len() as usize);
        if nodes == 0 {
            return Ok(cache);
        }
        if let Some(l) = cache.layout {
            let sectors = nodes.div_ceil(l.records_per_sector as usize);
            cache.sector_bytes.reserve_exact((sectors + 1) * SECTOR_BYTES);
        }
        // Records a cached id brings: its sector's, when sectors are cached.
        let per = cache.layout.map_or(1, |l| l.records_per_sector as usize);
        if policy == CachePolicy::Hot {
            let mut i = 0;
            while i < hot.len() && cache.len() < nodes {
                let room = (nodes - cache.len()).div_ceil(per);
                let take = room.min(FILL_BATCH).min(hot.len() - i);
                cache.read_into(index, reader.as_mut(), &hot[i..i + take])?;
                i += take;
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
            let room = (nodes - cache.len()).div_ceil(per);
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
        if self.layout.is_some() {
            return self.read_sectors_into(index, reader, ids);
        }
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
            self.nodes += 1;
        }
        Ok(())
    }

    /// Packed placement: reads the sectors of `ids` not cached yet, checks
    /// every record in them and keeps them whole.
    fn read_sectors_into(
        &mut self,
        index: &Index,
        reader: &mut dyn SectorReader,
        ids: &[u32],
    ) -> Result<(), SearchError> {
        let layout = *index.layout();
        let rps = u64::from(layout.records_per_sector);
        let mut sectors: Vec<u64> = ids.iter().map(|&id| layout.sector_of(id)).collect();
        sectors.sort_unstable();
        sectors.dedup();
        sectors.retain(|s| !self.sectors.contains_key(s));
        let reqs: Vec<ReadRequest> = sectors
            .iter()
            .map(|&s| ReadRequest { offset: s * SECTOR_BYTES as u64, sectors: 1 })
            .collect();
        reader.read(&reqs)?;
        let len = layout.record_bytes as usize;
        for (slot, &sector) in sectors.iter().enumerate() {
            let data = reader.data(slot);
            let first = (sector - 1) * rps;
            for j in 0..rps.min(index.len() - first) {
                let id = (first + j) as u32;
                let at = j as usize * len;
                layout
                    .decode_record(id, &data[at..at + len], true)
                    .map_err(|f| index.record_error(id, f))?;
                self.nodes += 1;
            }
            self.sectors.insert(sector, (self.sector_bytes.len() / SECTOR_BYTES) as u32);
            self.sector_bytes.extend_from_slice(&data[..SECTOR_BYTES]);
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
