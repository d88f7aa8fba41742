//! The sectors one query has read, kept until it ends.
//!
//! A sector holds `records_per_sector` records; the search reads it for one
//! of them. Kept, its other records cost no read when the search reaches
//! them (with a packed placement, `index::placement`, they are mostly the
//! read node's graph neighbours). Records are checked (CRC, node id) when
//! they are used, exactly as records fresh from the disk are.
//!
//! Bounded: at most [`KEPT_BYTES_MAX`] a searcher; past it sectors are no
//! longer kept (the search reads as it would without this store). A read is
//! *reserved* a place when it is issued, so a read in flight that others
//! wait on is always kept when it lands.

use rustc_hash::FxHashMap;

use crate::format::SECTOR_BYTES;

/// RAM one searcher may keep sectors in during a query (16 MiB: 4,096
/// sectors, far more than a query at the largest L reads).
pub const KEPT_BYTES_MAX: usize = 16 << 20;

#[derive(Default)]
pub(super) struct Sectors {
    bytes: Vec<u8>,
    at: FxHashMap<u64, u32>,
    /// Reads in flight promised a place.
    reserved: usize,
    /// Cached sectors whose records this query has reranked.
    cached_done: rustc_hash::FxHashSet<u64>,
}

impl Sectors {
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.at.clear();
        self.reserved = 0;
        self.cached_done.clear();
    }

    /// Whether cached sector `sector` is met for the first time this query
    /// (its records are to be reranked; they are then marked).
    pub(super) fn first_cached(&mut self, sector: u64) -> bool {
        self.cached_done.insert(sector)
    }

    fn len(&self) -> usize {
        self.bytes.len() / SECTOR_BYTES
    }

    /// Whether one more sector may be promised a place (and promises it).
    pub(super) fn reserve(&mut self) -> bool {
        let ok = (self.len() + self.reserved + 1) * SECTOR_BYTES <= KEPT_BYTES_MAX;
        self.reserved += usize::from(ok);
        ok
    }

    /// Keeps `data` (one sector, read at sector number `sector`); returns
    /// its index. `reserved`: the read was promised a place.
    pub(super) fn keep(&mut self, sector: u64, data: &[u8], reserved: bool) -> Option<u32> {
        debug_assert_eq!(data.len(), SECTOR_BYTES);
        if reserved {
            self.reserved -= 1;
        } else if (self.len() + self.reserved + 1) * SECTOR_BYTES > KEPT_BYTES_MAX {
            return None;
        }
        let i = self.len() as u32;
        self.bytes.extend_from_slice(data);
        self.at.insert(sector, i);
        Some(i)
    }

    /// The index of sector number `sector`, if kept.
    pub(super) fn get(&self, sector: u64) -> Option<u32> {
        self.at.get(&sector).copied()
    }

    /// Bytes `at..at + len` of kept sector `i`.
    pub(super) fn record(&self, i: u32, at: usize, len: usize) -> &[u8] {
        let s = i as usize * SECTOR_BYTES;
        &self.bytes[s + at..s + at + len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_until_the_bound_and_reservations_always_fit() {
        let mut s = Sectors::default();
        let sector = vec![7u8; SECTOR_BYTES];
        let cap = KEPT_BYTES_MAX / SECTOR_BYTES;
        assert!(s.reserve());
        for k in 0..cap - 1 {
            assert_eq!(s.keep(k as u64 + 10, &sector, false), Some(k as u32));
        }
        // Full but for the reserved place: unreserved sectors are refused,
        // the reserved one is kept.
        assert_eq!(s.keep(5, &sector, false), None);
        assert!(!s.reserve());
        assert_eq!(s.keep(6, &sector, true), Some(cap as u32 - 1));
        assert_eq!(s.get(6), Some(cap as u32 - 1));
        assert_eq!(s.get(5), None);
        assert_eq!(s.record(3, 100, 4), &[7, 7, 7, 7]);
        s.clear();
        assert_eq!(s.get(10), None);
        assert!(s.reserve());
    }
}
