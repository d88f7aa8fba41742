//! Active / warm-standby replication (WAL shipping).
//!
//! The primary runs a replication listener (`replication.listen`) beside
//! the HTTP API: one authenticated standby at a time connects, says which
//! collections it holds up to which LSN, and the primary streams every
//! collection's WAL records from there ([`shipper`]), or a base copy (a
//! snapshot, streamed file by file with each file's hash) where the log no
//! longer reaches back. The standby ([`follower`]) logs each record with the
//! primary's LSN, fsyncs it, applies it to its delta (its own merges run as
//! on any node), serves reads, and reports its received / flushed / applied
//! LSNs after every flush and at least once a second.
//!
//! Modes: `async` acknowledges a write after the primary's fsync; `sync`
//! also waits for the standby's fsync of it, up to `sync_timeout_ms`, then
//! fails the request or degrades to async (`sync_on_timeout`), visibly.
//!
//! Epochs fence old primaries: `basalt promote` on the standby makes its
//! epoch one more than any it has seen, durably, before it takes a write,
//! and tells the old primary (if it can reach it), which turns read-only at
//! once. A node never follows a primary of a lower epoch, and a standby
//! refuses any frame of a lower epoch than its own. An old primary comes
//! back with `basalt rejoin`: it discards its collections (logging which
//! records past the switch point are lost) and takes a new base copy.

pub mod follower;
pub mod frame;
pub mod shipper;
pub mod state;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use tracing::{error, info, warn};

use super::AppState;
use super::config::ReplicationConfig;
use super::wire::ApiError;
use crate::wal::Lsn;
use frame::{Lsns, Switch};
use state::{NodeState, Role};

/// Metric: frames or connections refused, by reason.
pub const METRIC_REFUSED: &str = "basalt_replication_refused_total";
/// Metric: times a standby fell behind the retention cap.
pub const METRIC_LOST: &str = "basalt_replication_standby_lost_total";
/// Metric: base copies sent (primary) or installed (standby).
pub const METRIC_BASE_COPIES: &str = "basalt_replication_base_copies_total";
/// Metric: bytes of base copies sent or received.
pub const METRIC_BASE_BYTES: &str = "basalt_replication_base_copy_bytes_total";
/// WAL frames sent per collection hold this many body bytes at most.
pub const WAL_FRAME_BYTES: usize = 4 << 20;
/// Sent WAL frames remembered per collection for lag (oldest dropped).
const SENT_FRAMES_MAX: usize = 1 << 16;

/// What the primary sent of one collection and the standby confirmed.
#[derive(Default)]
pub struct Slot {
    pub uid: u64,
    pub confirmed: Lsns,
    /// Sent frames not yet applied: (first lsn, last lsn, sent at, bytes).
    sent: VecDeque<(Lsn, Lsn, Instant, u64)>,
    pub sent_lsn: Lsn,
    /// The standby fell behind the retention cap: WAL is no longer kept.
    pub lost: bool,
}

impl Slot {
    fn age_above(&self, lsn: Lsn, now: Instant) -> f64 {
        self.sent
            .iter()
            .find(|f| f.1 > lsn)
            .map_or(0.0, |f| now.saturating_duration_since(f.2).as_secs_f64())
    }
    fn bytes_above(&self, lsn: Lsn) -> u64 {
        self.sent.iter().filter(|f| f.1 > lsn).map(|f| f.3).sum()
    }
}

/// The connected standby, as the primary sees it.
pub struct Peer {
    pub node: String,
    pub addr: String,
    pub since_unix_ms: u64,
    pub state: String,
    pub last_feedback: Option<Instant>,
}

/// The standby's own view of one collection.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Followed {
    pub lsns: Lsns,
    /// The primary's last LSN as last heard.
    pub primary_lsn: Lsn,
    /// When the oldest record this node lacks was heard of (none: caught up).
    #[serde(skip)]
    pub behind_since: Option<Instant>,
}

/// Replication state shared by the API, the shipper and the follower.
pub struct Replication {
    pub cfg: ReplicationConfig,
    data: PathBuf,
    pub node: Mutex<NodeState>,
    /// Primary: per collection name.
    pub slots: Mutex<HashMap<String, Slot>>,
    slots_cv: Condvar,
    pub peer: Mutex<Option<Peer>>,
    /// Bumped when a standby authenticates: an older connection stops.
    pub conn_gen: AtomicU64,
    pub degraded: AtomicBool,
    listener_started: AtomicBool,
    /// Standby: the primary's HTTP address, as it said.
    pub upstream_http: Mutex<String>,
    pub followed: Mutex<BTreeMap<String, Followed>>,
    pub connected: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    pub stop_follow: AtomicBool,
    pub follow_socket: Mutex<Option<std::net::TcpStream>>,
    follower: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// This node's bound HTTP address (told to standbys).
    pub http_addr: Mutex<String>,
    /// Primary: base copies staged for the standby (resumable).
    pub staged: Mutex<shipper::Staged>,
}

impl Replication {
    /// Reads (or first writes) the node state: the configured role applies
    /// until a promotion or a rejoin records another.
    pub fn load(cfg: &ReplicationConfig, data: &std::path::Path) -> anyhow::Result<Replication> {
        let configured = if cfg.role == "standby" { Role::Standby } else { Role::Primary };
        let node = match state::read(data).map_err(anyhow::Error::msg)? {
            Some(s) => {
                if s.role != configured {
                    warn!(configured = cfg.role, recorded = ?s.role,
                          "replication.role differs from the role this node recorded (a promotion or rejoin): the recorded role applies; to make a promoted node a standby again, run basalt rejoin");
                }
                s
            }
            None => {
                let s = NodeState {
                    epoch: 1,
                    role: configured,
                    primary: String::new(),
                    fenced_by: None,
                    rejoin: false,
                    history: Vec::new(),
                };
                state::write(data, &s).map_err(anyhow::Error::msg)?;
                s
            }
        };
        Ok(Replication {
            cfg: cfg.clone(),
            data: data.to_path_buf(),
            node: Mutex::new(node),
            slots: Mutex::new(HashMap::new()),
            slots_cv: Condvar::new(),
            peer: Mutex::new(None),
            conn_gen: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            listener_started: AtomicBool::new(false),
            upstream_http: Mutex::new(String::new()),
            followed: Mutex::new(BTreeMap::new()),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(None),
            stop_follow: AtomicBool::new(false),
            follow_socket: Mutex::new(None),
            follower: Mutex::new(None),
            staged: Mutex::new(HashMap::new()),
            http_addr: Mutex::new(String::new()),
        })
    }

    pub fn role(&self) -> Role {
        self.node.lock().role
    }

    pub fn epoch(&self) -> u64 {
        self.node.lock().epoch
    }

    /// The primary's replication address a standby follows.
    pub fn upstream(&self) -> String {
        let n = self.node.lock();
        if n.primary.is_empty() { self.cfg.primary.clone() } else { n.primary.clone() }
    }

    /// Updates the node state durably (the change is undone if the write
    /// fails).
    pub fn update(&self, f: impl FnOnce(&mut NodeState)) -> Result<(), String> {
        let mut n = self.node.lock();
        let mut next = n.clone();
        f(&mut next);
        state::write(&self.data, &next)?;
        *n = next;
        Ok(())
    }

    /// Why a write is refused here, if it is.
    pub fn write_refusal(&self) -> Option<ApiError> {
        let n = self.node.lock();
        let forbidden = |msg: String| ApiError { status: 403, msg, retry_after: None };
        if let Some(e) = n.fenced_by {
            return Some(forbidden(format!(
                "this node was the primary at epoch {} but a standby was promoted to epoch {e}: \
                 it refuses writes; send them to the new primary and rejoin this node as a standby (basalt rejoin)",
                n.epoch
            )));
        }
        if n.role == Role::Standby {
            let http = self.upstream_http.lock().clone();
            let at = if http.is_empty() {
                format!("(replication address {})", self.upstream())
            } else {
                format!("http://{http}")
            };
            return Some(forbidden(format!(
                "this node is a standby (read-only): send writes to the primary at {at}"
            )));
        }
        None
    }

    /// Sync mode: waits until the standby has flushed `lsn` of `name`, up to
    /// `sync_timeout_ms`; then fails or degrades as configured.
    pub fn wait_sync(&self, name: &str, uid: u64, lsn: Lsn) -> Result<(), ApiError> {
        if self.cfg.mode != "sync" || self.degraded.load(Ordering::Acquire) {
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_millis(self.cfg.sync_timeout_ms);
        let mut slots = self.slots.lock();
        loop {
            if slots.get(name).is_some_and(|s| s.uid == uid && s.confirmed.flushed >= lsn) {
                return Ok(());
            }
            if self.degraded.load(Ordering::Acquire) {
                return Ok(());
            }
            if self.slots_cv.wait_until(&mut slots, deadline).timed_out() {
                break;
            }
        }
        drop(slots);
        if self.cfg.sync_on_timeout == "degrade" {
            if !self.degraded.swap(true, Ordering::AcqRel) {
                warn!(
                    collection = name,
                    lsn,
                    timeout_ms = self.cfg.sync_timeout_ms,
                    "the standby did not confirm a write in time: degraded to async replication until it catches up"
                );
            }
            return Ok(());
        }
        metrics::counter!(METRIC_REFUSED, "reason" => "sync_timeout").increment(1);
        Err(ApiError::unavailable(
            format!(
                "the write is durable on this primary (lsn {lsn}) but the standby did not confirm it within \
                 replication.sync_timeout_ms ({} ms): it is not acknowledged as replicated",
                self.cfg.sync_timeout_ms
            ),
            1,
        ))
    }

    /// A standby's report for one collection (primary side).
    pub fn confirm(&self, name: &str, uid: u64, l: Lsns, last_lsns: &dyn Fn(&str) -> Option<Lsn>) {
        let mut slots = self.slots.lock();
        let Some(s) = slots.get_mut(name).filter(|s| s.uid == uid) else { return };
        s.confirmed = l;
        while s.sent.front().is_some_and(|f| f.1 <= l.applied) {
            s.sent.pop_front();
        }
        // Degraded sync returns to sync once every collection is caught up.
        if self.degraded.load(Ordering::Acquire)
            && slots
                .iter()
                .all(|(n, s)| last_lsns(n).is_none_or(|last| s.confirmed.flushed >= last))
        {
            self.degraded.store(false, Ordering::Release);
            info!("the standby caught up: synchronous replication restored");
        }
        drop(slots);
        self.slots_cv.notify_all();
    }

    fn note_sent(&self, name: &str, uid: u64, first: Lsn, last: Lsn, bytes: u64) {
        let mut slots = self.slots.lock();
        let s = slots.entry(name.to_string()).or_default();
        s.uid = uid;
        s.sent_lsn = last;
        if s.sent.len() >= SENT_FRAMES_MAX {
            s.sent.pop_front();
        }
        s.sent.push_back((first, last, Instant::now(), bytes));
    }

    /// Standby: is the node being promoted (the follower stops)?
    pub fn stopping(&self) -> bool {
        self.stop_follow.load(Ordering::Acquire)
    }

    /// Starts the role's threads: the listener (primary) or the follower.
    pub fn start(state: &Arc<AppState>) -> anyhow::Result<()> {
        let r = &state.repl;
        match r.role() {
            Role::Primary => {
                if !r.cfg.listen.is_empty() {
                    shipper::start_listener(Arc::clone(state))?;
                    r.listener_started.store(true, Ordering::Release);
                }
                shipper::start_retention(Arc::clone(state));
            }
            Role::Standby => {
                let st = Arc::clone(state);
                let h = std::thread::Builder::new()
                    .name("basalt-follow".into())
                    .spawn(move || follower::run(&st))?;
                *r.follower.lock() = Some(h);
            }
        }
        Ok(())
    }

    /// Promotes a standby: stops following, makes what it received durable
    /// and applied (it always is: records are applied after their fsync),
    /// bumps the epoch durably, records the switch LSNs, opens for writes,
    /// and tells the old primary.
    pub fn promote(state: &Arc<AppState>) -> Result<serde_json::Value, ApiError> {
        let r = &state.repl;
        let t0 = Instant::now();
        if r.role() != Role::Standby {
            return Err(ApiError::bad("this node is not a standby: nothing to promote"));
        }
        r.stop_follow.store(true, Ordering::Release);
        if let Some(s) = r.follow_socket.lock().take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = r.follower.lock().take() {
            let _ = h.join();
        }
        let colls: Vec<(String, Arc<crate::collection::Collection>)> =
            state.colls.read().iter().map(|(n, c)| (n.clone(), Arc::clone(c))).collect();
        let mut lsns = BTreeMap::new();
        for (n, c) in &colls {
            c.sync().map_err(|e| ApiError::internal(format!("syncing {n}: {e}")))?;
            lsns.insert(n.clone(), c.last_lsn());
        }
        let epoch = r.epoch() + 1;
        let sw = Switch { epoch, unix_ms: state::unix_ms(), lsns: lsns.clone() };
        r.update(|n| {
            n.epoch = epoch;
            n.role = Role::Primary;
            n.fenced_by = None;
            n.rejoin = false;
            n.history.push(sw.clone());
        })
        .map_err(|e| ApiError::internal(format!("recording the promotion: {e}")))?;
        for (_, c) in &colls {
            c.set_follower(false);
        }
        r.followed.lock().clear();
        r.connected.store(false, Ordering::Release);
        // Base copies the standby had not finished are of no use now.
        if let Ok(rd) = std::fs::read_dir(state.data_dir()) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(follower::RECEIVING_PREFIX) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        warn!(epoch, switch_lsns = ?lsns, "promoted: this node is now the primary");
        if !r.cfg.listen.is_empty()
            && !r.listener_started.swap(true, Ordering::AcqRel)
            && let Err(e) = shipper::start_listener(Arc::clone(state))
        {
            error!(error = %e, "the replication listener did not start");
        }
        shipper::start_retention(Arc::clone(state));
        let old = r.upstream();
        let fenced = shipper::fence(&old, &r.cfg.secret, epoch);
        match &fenced {
            Ok(()) => info!(old_primary = %old, epoch, "the old primary is fenced (read-only)"),
            Err(e) => warn!(old_primary = %old, error = %e,
                            "could not tell the old primary: make sure it is stopped (runbook)"),
        }
        Ok(serde_json::json!({
            "epoch": epoch,
            "switch_lsns": lsns,
            "old_primary": old,
            "old_primary_fenced": fenced.is_ok(),
            "old_primary_error": fenced.err(),
            "seconds": t0.elapsed().as_secs_f64(),
        }))
    }

    /// `GET /replication`: shaped like `pg_stat_replication` on a primary,
    /// like `pg_stat_wal_receiver` on a standby.
    pub fn status(&self, colls: &[(String, Lsn)]) -> serde_json::Value {
        let n = self.node.lock().clone();
        let now = Instant::now();
        let mut out = serde_json::json!({
            "role": n.role,
            "epoch": n.epoch,
            "fenced_by": n.fenced_by,
            "mode": self.cfg.mode,
            "history": n.history,
        });
        match n.role {
            Role::Primary => {
                let slots = self.slots.lock();
                let peer = self.peer.lock();
                let mut per = serde_json::Map::new();
                let mut total_bytes = 0u64;
                let mut max_flush_s = 0f64;
                for (name, last) in colls {
                    let Some(s) = slots.get(name) else {
                        per.insert(
                            name.clone(),
                            serde_json::json!({"primary_lsn": last, "state": "not followed"}),
                        );
                        continue;
                    };
                    let b = s.bytes_above(s.confirmed.flushed);
                    let fl = s.age_above(s.confirmed.flushed, now);
                    total_bytes += b;
                    max_flush_s = max_flush_s.max(fl);
                    per.insert(
                        name.clone(),
                        serde_json::json!({
                            "primary_lsn": last,
                            "sent_lsn": s.sent_lsn,
                            "write_lsn": s.confirmed.received,
                            "flush_lsn": s.confirmed.flushed,
                            "replay_lsn": s.confirmed.applied,
                            "lag_records": last.saturating_sub(s.confirmed.flushed),
                            "lag_bytes": b,
                            "write_lag_s": s.age_above(s.confirmed.received, now),
                            "flush_lag_s": fl,
                            "replay_lag_s": s.age_above(s.confirmed.applied, now),
                            "lost": s.lost,
                        }),
                    );
                }
                let sync_state = if self.cfg.mode != "sync" {
                    "async"
                } else if self.degraded.load(Ordering::Acquire) {
                    "degraded"
                } else {
                    "sync"
                };
                out["sync_state"] = sync_state.into();
                out["standby"] = match &*peer {
                    None => serde_json::Value::Null,
                    Some(p) => serde_json::json!({
                        "node": p.node,
                        "client_addr": p.addr,
                        "backend_start_unix_ms": p.since_unix_ms,
                        "state": p.state,
                        "reply_age_s": p.last_feedback.map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    }),
                };
                out["lag_bytes"] = total_bytes.into();
                out["flush_lag_s"] = max_flush_s.into();
                out["collections"] = per.into();
            }
            Role::Standby => {
                let f = self.followed.lock();
                let mut per = serde_json::Map::new();
                for (name, v) in f.iter() {
                    let behind = v
                        .behind_since
                        .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
                    per.insert(
                        name.clone(),
                        serde_json::json!({
                            "received_lsn": v.lsns.received,
                            "flushed_lsn": v.lsns.flushed,
                            "applied_lsn": v.lsns.applied,
                            "primary_lsn": v.primary_lsn,
                            "lag_records": v.primary_lsn.saturating_sub(v.lsns.applied),
                            "lag_s": behind,
                        }),
                    );
                }
                out["primary"] = self.upstream().into();
                out["primary_http"] = self.upstream_http.lock().clone().into();
                out["connected"] = self.connected.load(Ordering::Acquire).into();
                out["last_error"] = self.last_error.lock().clone().into();
                out["collections"] = per.into();
            }
        }
        out
    }

    /// Replication gauges for /metrics (rendered at scrape time). Every
    /// family is declared on both roles; samples come from the node's role.
    pub fn render_metrics(&self, out: &mut String, colls: &[(String, Lsn)]) {
        use std::fmt::Write as _;
        let v = self.status(colls);
        let n = self.node.lock().clone();
        let primary = n.role == Role::Primary;
        let per = v["collections"].as_object().cloned().unwrap_or_default();
        let num = |x: &serde_json::Value| {
            x.as_f64().or_else(|| x.as_bool().map(|b| f64::from(u8::from(b)))).unwrap_or(0.0)
        };
        let on = n.role == Role::Standby || !self.cfg.listen.is_empty();
        // (name, help, on a primary?, a node-wide value, or a per-collection key)
        let scalars: [(&str, &str, Option<bool>, f64); 7] = [
            (
                "basalt_replication_role",
                "1 on a primary, 0 on a standby",
                None,
                f64::from(u8::from(primary)),
            ),
            ("basalt_replication_epoch", "This node's epoch", None, n.epoch as f64),
            (
                "basalt_replication_fenced",
                "1 once a newer primary fenced this node",
                None,
                f64::from(u8::from(n.fenced_by.is_some())),
            ),
            (
                "basalt_replication_configured",
                "1 when this node replicates (a listener, or a standby)",
                None,
                f64::from(u8::from(on)),
            ),
            (
                "basalt_replication_standby_connected",
                "1 while a standby is connected",
                Some(true),
                f64::from(u8::from(!v["standby"].is_null())),
            ),
            (
                "basalt_replication_sync_degraded",
                "1 while sync mode runs degraded to async",
                Some(true),
                f64::from(u8::from(v["sync_state"] == "degraded")),
            ),
            (
                "basalt_replication_connected",
                "1 while following the primary",
                Some(false),
                num(&v["connected"]),
            ),
        ];
        for (name, help, role, value) in scalars {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            if role.is_none_or(|p| p == primary) {
                let _ = writeln!(out, "{name} {value}");
            }
        }
        let families: [(&str, &str, bool, &str); 10] = [
            (
                "basalt_replication_lag_bytes",
                "WAL bytes sent and not yet flushed by the standby",
                true,
                "lag_bytes",
            ),
            (
                "basalt_replication_lag_records",
                "WAL records not yet flushed by the standby",
                true,
                "lag_records",
            ),
            (
                "basalt_replication_write_lag_seconds",
                "Age of the oldest record the standby has not received",
                true,
                "write_lag_s",
            ),
            (
                "basalt_replication_flush_lag_seconds",
                "Age of the oldest record the standby has not flushed",
                true,
                "flush_lag_s",
            ),
            (
                "basalt_replication_replay_lag_seconds",
                "Age of the oldest record the standby has not applied",
                true,
                "replay_lag_s",
            ),
            (
                "basalt_replication_standby_lost",
                "1 when the standby fell behind the retention cap",
                true,
                "lost",
            ),
            (
                "basalt_replication_applied_lsn",
                "Last WAL record applied here",
                false,
                "applied_lsn",
            ),
            (
                "basalt_replication_standby_lag_records",
                "Records the primary has that this node has not applied",
                false,
                "lag_records",
            ),
            (
                "basalt_replication_standby_lag_seconds",
                "How long this node has lacked its oldest missing record",
                false,
                "lag_s",
            ),
            (
                "basalt_replication_primary_lsn",
                "The primary's last LSN as this standby last heard it",
                false,
                "primary_lsn",
            ),
        ];
        for (name, help, on_primary, key) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            if on_primary != primary {
                continue;
            }
            for (c, x) in &per {
                // A primary's collection no standby follows has no series.
                if x.get(key).is_some() {
                    let _ = writeln!(out, "{name}{{collection=\"{c}\"}} {}", num(&x[key]));
                }
            }
        }
    }
}
