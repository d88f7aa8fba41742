//! The node's replication state, `DATA/replication.state` (JSON, replaced
//! by write-temp + fsync + rename): its epoch, its role, and the history of
//! promotions. Written before anything that depends on it is visible: a
//! promotion is durable before the node takes a write, a fence before the
//! node refuses its first.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::frame::Switch;

pub const STATE_FILE: &str = "replication.state";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Standby,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Starts at 1; a promotion makes it one more than the primary's.
    pub epoch: u64,
    pub role: Role,
    /// A standby's primary (replication address) when `basalt rejoin` set
    /// it; empty: `replication.primary` from the configuration.
    #[serde(default)]
    pub primary: String,
    /// A primary that learned of a higher epoch: read-only until rejoined.
    #[serde(default)]
    pub fenced_by: Option<u64>,
    /// Set by `basalt rejoin`: discard local collections, copy afresh.
    #[serde(default)]
    pub rejoin: bool,
    /// Promotions this node knows of, oldest first.
    #[serde(default)]
    pub history: Vec<Switch>,
}

pub fn path(data: &Path) -> PathBuf {
    data.join(STATE_FILE)
}

/// The state in `data`, if written.
pub fn read(data: &Path) -> Result<Option<NodeState>, String> {
    let p = path(data);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("{}: {e}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Writes the state durably.
pub fn write(data: &Path, s: &NodeState) -> Result<(), String> {
    let p = path(data);
    let err = |e: std::io::Error| format!("{}: {e}", p.display());
    let (pending, mut f) = crate::fsutil::PendingFile::create(&p).map_err(err)?;
    let b = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut f, &b).map_err(err)?;
    pending.commit(f).map_err(err)?;
    Ok(())
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
