//! Live collections (issue 8, being built): a directory holding generations
//! of the disk index, the WAL (`crate::wal`), the id map and payloads, and a
//! delta index of fresh points. What exists so far: external ids
//! ([`ids`]) and the bodies of the WAL's upsert and delete records
//! ([`batch`]). The delta index, the merge, the id map store and the
//! collection API come next (see ARCHITECTURE.md).

pub mod batch;
pub mod ids;
