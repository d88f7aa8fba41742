//! The entry cache: records of the nodes nearest the medoid (breadth-first
//! over the graph), kept in RAM so the first rounds of every query cost no
//! I/O. Filled once at open, read-only afterwards; every record is
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

    /// Breadth-first from the medoid until `nodes` records are held.
    pub(super) fn fill(
        index: &Index,
        mut reader: Box<dyn SectorReader>,
        nodes: usize,
    ) -> Result<EntryCache, SearchError> {
        let mut cache = EntryCache::default();
        let nodes = nodes.min(index.len() as usize);
        if nodes == 0 {
            return Ok(cache);
        }
        let layout = *index.layout();
        let mut frontier = vec![index.header().medoid];
        let mut seen = rustc_hash::FxHashSet::default();
        seen.insert(index.header().medoid);
        // Breadth-first, one level at a time, reading up to FILL_BATCH
        // records per submission.
        while !frontier.is_empty() && cache.len() < nodes {
            let mut next = Vec::new();
            let want = (nodes - cache.len()).min(frontier.len());
            for ids in frontier[..want].chunks(FILL_BATCH) {
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
                    let rec = layout
                        .decode_record(id, bytes, true)
                        .map_err(|f| index.record_error(id, f))?;
                    for n in rec.neighbors() {
                        if seen.insert(n) {
                            next.push(n);
                        }
                    }
                    cache.records.insert(id, bytes.to_vec().into_boxed_slice());
                }
            }
            frontier = next;
        }
        Ok(cache)
    }
}
