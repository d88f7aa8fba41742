//! `meta/`: external id -> internal slot and the payloads of points on disk,
//! in fjall (an LSM-tree embedded store made for large key sets: 1e9 keys
//! live on disk, with a block cache, not in RAM). Derived state: it reflects
//! one generation (the identity under `state/applied`) and is caught up on
//! open from that generation's `changes` file; points of the delta live in
//! memory and come back from the WAL. Changes are applied in batches, the
//! identity last, so a crash mid-apply leaves the old identity and the
//! apply runs again (every change is idempotent).
//!
//! Keys: a tag byte then the id (u64 big-endian, so numbers scroll in
//! numeric order; strings as their bytes, after every number).

use std::path::Path;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};

use super::filter::KeyPath;
use super::ids::ExternalId;
use super::pindex::{Schema, pindex_defs_prefix};
use crate::format::FileIdent;

/// Changes per fjall batch when applying a large set (an import).
pub const APPLY_BATCH_CHANGES: usize = 100_000;
const APPLIED_KEY: &[u8] = b"applied";

#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    #[error("id map store: {0}")]
    Store(#[from] fjall::Error),
    #[error("id map store: corrupt entry: {0}")]
    Corrupt(String),
}

/// One change to the map.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Put { id: ExternalId, slot: u32, payload: Option<String> },
    Remove { id: ExternalId },
}

/// The key of an id (sortable).
pub fn key(id: &ExternalId) -> Vec<u8> {
    match id {
        ExternalId::Num(n) => {
            let mut k = vec![1u8];
            k.extend_from_slice(&n.to_be_bytes());
            k
        }
        ExternalId::Str(s) => {
            let mut k = vec![2u8];
            k.extend_from_slice(s.as_bytes());
            k
        }
    }
}

/// The id of a key.
pub fn id_of_key(k: &[u8]) -> Result<ExternalId, IdMapError> {
    match k.first() {
        Some(1) if k.len() == 9 => {
            Ok(ExternalId::Num(u64::from_be_bytes(k[1..9].try_into().expect("8 bytes"))))
        }
        Some(2) => std::str::from_utf8(&k[1..])
            .ok()
            .and_then(|s| ExternalId::from_string(s).ok())
            .ok_or_else(|| IdMapError::Corrupt("string id key".into())),
        _ => Err(IdMapError::Corrupt("id key tag".into())),
    }
}

/// The open store.
pub struct IdMap {
    pub(super) keyspace: Keyspace,
    pub(super) ids: PartitionHandle,
    pub(super) payloads: PartitionHandle,
    pub(super) state: PartitionHandle,
    /// Payload index entries (`pindex.rs`).
    pub(super) pindex: PartitionHandle,
    /// The payload indexes' fields and schemas.
    pub(super) defs: parking_lot::RwLock<Vec<(KeyPath, Schema)>>,
}

impl IdMap {
    pub fn open(dir: &Path) -> Result<IdMap, IdMapError> {
        // Writes are made durable by `persist` after each apply; fjall's own
        // background fsync is not needed (the map is derived state).
        let keyspace = Config::new(dir).fsync_ms(None).open()?;
        let opts = || PartitionCreateOptions::default();
        let ids = keyspace.open_partition("ids", opts())?;
        let payloads = keyspace.open_partition("payloads", opts())?;
        let state = keyspace.open_partition("state", opts())?;
        let pindex = keyspace.open_partition("pindex", opts())?;
        let map = IdMap {
            keyspace,
            ids,
            payloads,
            state,
            pindex,
            defs: parking_lot::RwLock::new(Vec::new()),
        };
        map.load_defs()?;
        Ok(map)
    }

    /// The generation the map reflects, if any.
    pub fn applied(&self) -> Result<Option<FileIdent>, IdMapError> {
        match self.state.get(APPLIED_KEY)? {
            None => Ok(None),
            Some(v) if v.len() == 16 => Ok(Some(FileIdent::decode(&v, 0))),
            Some(_) => Err(IdMapError::Corrupt("applied identity".into())),
        }
    }

    /// The slot of `id` in the applied generation.
    pub fn get(&self, id: &ExternalId) -> Result<Option<u32>, IdMapError> {
        match self.ids.get(key(id))? {
            None => Ok(None),
            Some(v) if v.len() == 4 => {
                Ok(Some(u32::from_le_bytes(v[..4].try_into().expect("4 bytes"))))
            }
            Some(_) => Err(IdMapError::Corrupt("slot value".into())),
        }
    }

    /// The payload of the point `id` on disk.
    pub fn payload(&self, id: &ExternalId) -> Result<Option<String>, IdMapError> {
        match self.payloads.get(key(id))? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|_| IdMapError::Corrupt("payload not UTF-8".into())),
        }
    }

    /// Applies `changes` (in batches), then records `ident` as applied, and
    /// makes it durable.
    pub fn apply(&self, changes: &[Change], ident: FileIdent) -> Result<(), IdMapError> {
        // Payload index entries first, computed over the whole list
        // (`pindex.rs`), then the map in chunks, the identity last.
        self.apply_index_ops(changes)?;
        for chunk in changes.chunks(APPLY_BATCH_CHANGES) {
            self.apply_map_chunk(chunk, false)?;
        }
        self.set_applied(ident)
    }

    /// Applies changes without moving the applied identity (an import
    /// streams its rows through this, then calls [`Self::set_applied`]).
    pub fn apply_chunk(&self, changes: &[Change]) -> Result<(), IdMapError> {
        self.apply_map_chunk(changes, true)
    }

    fn apply_map_chunk(&self, changes: &[Change], with_index: bool) -> Result<(), IdMapError> {
        let mut b = self.keyspace.batch();
        if with_index {
            self.index_changes(&mut b, changes)?;
        }
        for c in changes {
            match c {
                Change::Put { id, slot, payload } => {
                    let k = key(id);
                    b.insert(&self.ids, k.clone(), slot.to_le_bytes().to_vec());
                    match payload {
                        Some(p) => b.insert(&self.payloads, k, p.as_bytes().to_vec()),
                        None => b.remove(&self.payloads, k),
                    }
                }
                Change::Remove { id } => {
                    let k = key(id);
                    b.remove(&self.ids, k.clone());
                    b.remove(&self.payloads, k);
                }
            }
        }
        b.commit()?;
        Ok(())
    }

    /// Records the generation the map reflects, durably.
    pub fn set_applied(&self, ident: FileIdent) -> Result<(), IdMapError> {
        self.state.insert(APPLIED_KEY, ident.encode().to_vec())?;
        self.keyspace.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Copies every entry (ids and payloads) and the applied identity into
    /// `dest` (an empty store), durably; returns the ids copied. Reads one
    /// consistent view of each partition; the caller keeps writers out.
    pub fn copy_to(&self, dest: &IdMap) -> Result<u64, IdMapError> {
        let mut n = 0u64;
        for (src, dst, count) in [
            (&self.ids, &dest.ids, true),
            (&self.payloads, &dest.payloads, false),
            (&self.pindex, &dest.pindex, false),
        ] {
            let mut b = dest.keyspace.batch();
            let mut in_batch = 0usize;
            for kv in src.snapshot().iter() {
                let (k, v) = kv.map_err(fjall::Error::from)?;
                b.insert(dst, k.to_vec(), v.to_vec());
                in_batch += 1;
                if count {
                    n += 1;
                }
                if in_batch == APPLY_BATCH_CHANGES {
                    b.commit()?;
                    b = dest.keyspace.batch();
                    in_batch = 0;
                }
            }
            b.commit()?;
        }
        // The payload indexes' definitions.
        for kv in self.state.snapshot().prefix(pindex_defs_prefix()) {
            let (k, v) = kv.map_err(fjall::Error::from)?;
            dest.state.insert(k.to_vec(), v.to_vec())?;
        }
        match self.applied()? {
            Some(ident) => dest.set_applied(ident)?,
            None => dest.keyspace.persist(PersistMode::SyncAll)?,
        }
        dest.load_defs()?;
        Ok(n)
    }

    /// Calls `f` with every (id, slot, payload) of the map in key order:
    /// one sequential pass over the ids and the payloads together (a
    /// filter over unindexed fields reads every payload this way, about
    /// three times faster than a lookup per slot). The caller keeps the
    /// map from changing (the collection's read lock).
    pub fn scan(
        &self,
        mut f: impl FnMut(ExternalId, u32, Option<&[u8]>) -> Result<(), IdMapError>,
    ) -> Result<(), IdMapError> {
        let mut payloads = self.payloads.iter().peekable();
        for kv in self.ids.iter() {
            let (k, v) = kv?;
            if v.len() != 4 {
                return Err(IdMapError::Corrupt("slot value".into()));
            }
            let slot = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
            let mut payload = None;
            while let Some(Ok((pk, _))) = payloads.peek() {
                match pk.as_ref().cmp(k.as_ref()) {
                    std::cmp::Ordering::Less => {
                        payloads.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if let Some(Ok((_, pv))) = payloads.next() {
                            payload = Some(pv);
                        }
                        break;
                    }
                    std::cmp::Ordering::Greater => break,
                }
            }
            if let Some(Err(_)) = payloads.peek()
                && let Some(Err(e)) = payloads.next()
            {
                return Err(e.into());
            }
            f(id_of_key(&k)?, slot, payload.as_deref())?;
        }
        Ok(())
    }

    /// Up to `limit` (id, slot) pairs in key order after `after`.
    pub fn scroll(
        &self,
        after: Option<&ExternalId>,
        limit: usize,
    ) -> Result<Vec<(ExternalId, u32)>, IdMapError> {
        let mut out = Vec::new();
        let start = after.map(key);
        let iter: Box<dyn Iterator<Item = fjall::Result<fjall::KvPair>>> = match start {
            Some(k) => {
                Box::new(self.ids.range((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)))
            }
            None => Box::new(self.ids.iter()),
        };
        for kv in iter {
            let (k, v) = kv?;
            if v.len() != 4 {
                return Err(IdMapError::Corrupt("slot value".into()));
            }
            out.push((id_of_key(&k)?, u32::from_le_bytes(v[..4].try_into().expect("4 bytes"))));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }
}
