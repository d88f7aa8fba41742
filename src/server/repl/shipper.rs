//! The primary's side: the replication listener, one thread per standby
//! connection that streams WAL records (or a base copy), a thread reading
//! the standby's reports, and the retention check.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use subtle::ConstantTimeEq;
use tracing::{error, info, warn};

use super::frame::{self, CollectionId, FileEntry, FrameError, Kind};
use super::state::{Role, unix_ms};
use super::{
    METRIC_BASE_BYTES, METRIC_BASE_COPIES, METRIC_LOST, METRIC_REFUSED, Peer, WAL_FRAME_BYTES,
};
use crate::collection::Collection;
use crate::server::AppState;
use crate::wal::{DURABLE, WalReader};

/// Bytes per file-chunk frame of a base copy.
const CHUNK_BYTES: usize = 1 << 20;
/// How long a connection may take to say hello, and a send may block.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Directory (under the data directory) of base copies being sent.
pub const STAGING_DIR: &str = ".replication";

pub fn secret_ok(given: &str, want: &str) -> bool {
    !want.is_empty() && bool::from(given.as_bytes().ct_eq(want.as_bytes()))
}

/// Binds `replication.listen` and serves standbys on their own threads.
pub fn start_listener(state: Arc<AppState>) -> anyhow::Result<()> {
    let addr = state.repl.cfg.listen.clone();
    let l = TcpListener::bind(&addr).with_context(|| format!("replication listener on {addr}"))?;
    let local = l.local_addr().context("the replication listener's address")?;
    info!(address = %local, "replication listener");
    eprintln!("basalt: replication listening on {local}");
    // Base copies of an earlier run are not resumable by anyone now.
    let staging = state.data_dir().join(STAGING_DIR);
    let _ = std::fs::remove_dir_all(&staging);
    std::thread::Builder::new().name("basalt-repl-accept".into()).spawn(move || {
        for conn in l.incoming() {
            let Ok(s) = conn else { continue };
            let st = Arc::clone(&state);
            let _ = std::thread::Builder::new().name("basalt-repl-send".into()).spawn(move || {
                let peer = s.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
                if let Err(e) = serve(&st, s, &peer) {
                    warn!(standby = %peer, error = %e, "replication connection ended");
                }
            });
        }
    })?;
    Ok(())
}

/// Keeps each collection's WAL that the standby has not flushed, up to
/// `replication.retention_bytes_max`; past it the standby is lost for that
/// collection (it will need a new base copy).
pub fn start_retention(state: Arc<AppState>) {
    let _ = std::thread::Builder::new().name("basalt-repl-retain".into()).spawn(move || {
        loop {
            if state.repl.role() != Role::Primary {
                return;
            }
            let colls: Vec<(String, Arc<Collection>)> =
                state.colls.read().iter().map(|(n, c)| (n.clone(), Arc::clone(c))).collect();
            let cap = state.repl.cfg.retention_bytes_max;
            for (name, c) in colls {
                let mut slots = state.repl.slots.lock();
                let Some(s) = slots.get_mut(&name) else {
                    c.keep_wal_after(u64::MAX);
                    continue;
                };
                if s.lost || s.uid != c.uid() {
                    c.keep_wal_after(u64::MAX);
                    continue;
                }
                let pos = s.confirmed.flushed;
                let bytes = c.wal_bytes_after(pos);
                if bytes > cap {
                    s.lost = true;
                    c.keep_wal_after(u64::MAX);
                    metrics::counter!(METRIC_LOST).increment(1);
                    warn!(collection = %name, flushed_lsn = pos, wal_bytes = bytes, cap,
                          "the standby fell behind replication.retention_bytes_max: its WAL is no longer kept; it will need a new base copy");
                } else {
                    c.keep_wal_after(pos);
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

/// Tells the primary at `addr` that epoch `epoch` exists (it turns
/// read-only).
pub fn fence(addr: &str, secret: &str, epoch: u64) -> Result<(), String> {
    let sa: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s =
        TcpStream::connect_timeout(&sa, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    frame::write_json(&mut s, Kind::Fence, epoch, &frame::Fence { secret: secret.into() })
        .map_err(|e| e.to_string())?;
    let f = frame::read(&mut s).map_err(|e| e.to_string())?;
    match f.kind {
        Kind::Fence => Ok(()),
        Kind::Refuse => {
            Err(f.json::<frame::Refusal>().map_or_else(|e| e.to_string(), |r| r.message))
        }
        k => Err(format!("unexpected {k:?} frame")),
    }
}

fn refuse(
    s: &mut TcpStream,
    epoch: u64,
    reason: &'static str,
    message: String,
) -> anyhow::Result<()> {
    metrics::counter!(METRIC_REFUSED, "reason" => reason).increment(1);
    let _ = frame::write_json(s, Kind::Refuse, epoch, &frame::Refusal { message: message.clone() });
    anyhow::bail!("refused: {message}")
}

/// Records that a newer primary exists: read-only from now on.
fn fence_self(state: &AppState, epoch: u64, how: &str) {
    let r = &state.repl;
    let mine = r.epoch();
    if epoch <= mine || r.node.lock().fenced_by.is_some_and(|e| e >= epoch) {
        return;
    }
    match r.update(|n| n.fenced_by = Some(epoch)) {
        Ok(()) => error!(
            epoch = mine,
            newer = epoch,
            how,
            "a standby was promoted to a higher epoch: this node refuses writes from now on; rejoin it as a standby (basalt rejoin)"
        ),
        Err(e) => {
            error!(error = %e, "could not record the fence: refusing writes anyway until restart")
        }
    }
    // Either way, stop serving the standby connection.
    r.conn_gen.fetch_add(1, Ordering::AcqRel);
}

enum Stream {
    /// A base copy is to be sent (resuming one if the standby has part).
    Base(Option<frame::Resume>),
    /// Sent: waiting for the standby's BaseDone.
    Waiting,
    Live(WalReader),
}

fn serve(state: &Arc<AppState>, mut s: TcpStream, peer: &str) -> anyhow::Result<()> {
    let r = &state.repl;
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    s.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    s.set_nodelay(true)?;
    let first = match frame::read(&mut s) {
        Ok(f) => f,
        Err(FrameError::Bad(why)) => {
            return refuse(&mut s, r.epoch(), "bad_frame", format!("bad first frame: {why}"));
        }
        Err(e) => return Err(e.into()),
    };
    match first.kind {
        Kind::Fence => {
            let f: frame::Fence = first.json()?;
            if !secret_ok(&f.secret, &r.cfg.secret) {
                warn!(peer, "replication: a fence with a wrong secret: refused");
                return refuse(&mut s, r.epoch(), "auth", "authentication failed".into());
            }
            if first.epoch <= r.epoch() {
                return refuse(
                    &mut s,
                    r.epoch(),
                    "lower_epoch",
                    format!("epoch {} is not above this node's {}", first.epoch, r.epoch()),
                );
            }
            fence_self(state, first.epoch, "told by the promoted node");
            frame::write(&mut s, Kind::Fence, r.epoch(), 0, &[])?;
            return Ok(());
        }
        Kind::Hello => {}
        k => return refuse(&mut s, r.epoch(), "bad_frame", format!("expected hello, got {k:?}")),
    }
    let hello: frame::Hello = first.json()?;
    if !secret_ok(&hello.secret, &r.cfg.secret) {
        warn!(peer, node = %hello.node, "replication: a standby with a wrong secret: refused");
        return refuse(&mut s, r.epoch(), "auth", "authentication failed".into());
    }
    if first.epoch > r.epoch() {
        fence_self(state, first.epoch, "a standby of a higher epoch connected");
    }
    let (role, fenced, epoch) = {
        let n = r.node.lock();
        (n.role, n.fenced_by, n.epoch)
    };
    if role != Role::Primary || fenced.is_some() {
        return refuse(
            &mut s,
            epoch,
            "not_primary",
            match fenced {
                Some(e) => format!("this node is fenced by epoch {e}: it is no longer the primary"),
                None => "this node is a standby, not a primary".into(),
            },
        );
    }
    let colls = catalog(state);
    let welcome = frame::Welcome {
        http: r.http_addr.lock().clone(),
        history: r.node.lock().history.clone(),
        collections: colls.iter().map(|(id, _)| id.clone()).collect(),
    };
    frame::write_json(&mut s, Kind::Welcome, epoch, &welcome)?;
    let conn = r.conn_gen.fetch_add(1, Ordering::AcqRel) + 1;
    *r.peer.lock() = Some(Peer {
        node: hello.node.clone(),
        addr: peer.to_string(),
        since_unix_ms: unix_ms(),
        state: "catchup".into(),
        last_feedback: None,
    });
    info!(standby = %hello.node, address = peer, epoch = first.epoch, "a standby connected");

    // Where each collection starts.
    let switch_after = |name: &str| -> Option<u64> {
        // The standby's epoch is older: its records past the switch point
        // of the next epoch are not ours.
        let n = r.node.lock();
        n.history
            .iter()
            .find(|sw| sw.epoch > first.epoch)
            .map(|sw| sw.lsns.get(name).copied().unwrap_or(0))
    };
    let mut streams: BTreeMap<String, (u64, Stream)> = BTreeMap::new();
    for (id, c) in &colls {
        let pos = hello.positions.iter().find(|p| p.name == id.name && p.uid == id.uid);
        let st = match pos {
            Some(p)
                if p.lsn > c.last_lsn() || switch_after(&id.name).is_some_and(|sw| p.lsn > sw) =>
            {
                warn!(collection = %id.name, standby_lsn = p.lsn, primary_lsn = c.last_lsn(),
                      "the standby holds records this primary does not: a new base copy");
                Stream::Base(None)
            }
            Some(p) => match WalReader::open(&c.wal_dir(), p.lsn + 1)? {
                Some(rd) => {
                    let mut slots = r.slots.lock();
                    let sl = slots.entry(id.name.clone()).or_default();
                    if sl.uid != id.uid {
                        *sl = super::Slot::default();
                        sl.uid = id.uid;
                    }
                    sl.lost = false;
                    sl.confirmed = frame::Lsns { received: p.lsn, flushed: p.lsn, applied: p.lsn };
                    sl.sent_lsn = p.lsn;
                    Stream::Live(rd)
                }
                None => {
                    info!(collection = %id.name, standby_lsn = p.lsn, "the WAL no longer reaches the standby's position: a new base copy");
                    Stream::Base(None)
                }
            },
            None => Stream::Base(hello.resume.iter().find(|x| x.name == id.name).cloned()),
        };
        streams.insert(id.name.clone(), (id.uid, st));
    }

    // The standby's reports arrive on their own thread.
    let closed = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel::<frame::BaseDone>();
    {
        let mut rs = s.try_clone()?;
        rs.set_read_timeout(Some(Duration::from_secs(30)))?;
        let st = Arc::clone(state);
        let closed = Arc::clone(&closed);
        let peer = peer.to_string();
        std::thread::Builder::new().name("basalt-repl-recv".into()).spawn(move || {
            let r = &st.repl;
            loop {
                let f = match frame::read(&mut rs) {
                    Ok(f) => f,
                    Err(e) => {
                        if let FrameError::Bad(why) = &e {
                            metrics::counter!(METRIC_REFUSED, "reason" => "bad_frame").increment(1);
                            error!(standby = %peer, why, "replication: a bad frame from the standby: closing");
                        }
                        break;
                    }
                };
                if f.epoch > r.epoch() {
                    fence_self(&st, f.epoch, "a frame of a higher epoch");
                    break;
                }
                match f.kind {
                    Kind::Feedback => {
                        let Ok(fb) = f.json::<frame::Feedback>() else { break };
                        let colls = st.colls.read();
                        let last = |n: &str| colls.get(n).map(|c| c.last_lsn());
                        for (name, rep) in fb.positions {
                            if colls.get(&name).is_some_and(|c| c.uid() == rep.uid) {
                                r.confirm(&name, rep.uid, rep.lsns, &last);
                            }
                        }
                        drop(colls);
                        if let Some(p) = r.peer.lock().as_mut() {
                            p.last_feedback = Some(Instant::now());
                        }
                    }
                    Kind::BaseDone => {
                        let Ok(d) = f.json::<frame::BaseDone>() else { break };
                        if done_tx.send(d).is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            closed.store(true, Ordering::Release);
        })?;
    }

    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut sent_catalog: Vec<CollectionId> = welcome.collections;
    let mut last_keepalive = Instant::now() - Duration::from_secs(2);
    let result = loop {
        if r.conn_gen.load(Ordering::Acquire) != conn {
            break Ok(());
        }
        if closed.load(Ordering::Acquire) {
            break Err(anyhow::anyhow!("the standby closed the connection"));
        }
        if r.node.lock().fenced_by.is_some() {
            break Ok(());
        }
        let seen = DURABLE.current();
        let mut sent = false;
        // Collections created or deleted here.
        let now = catalog(state);
        let ids: Vec<CollectionId> = now.iter().map(|(id, _)| id.clone()).collect();
        if ids != sent_catalog {
            frame::write_json(
                &mut s,
                Kind::Catalog,
                epoch,
                &frame::Catalog { collections: ids.clone() },
            )?;
            for id in &ids {
                let fresh = streams.get(&id.name).is_none_or(|(uid, _)| *uid != id.uid);
                if fresh {
                    streams.insert(id.name.clone(), (id.uid, Stream::Base(None)));
                    // A collection made anew under an old name starts from nothing.
                    r.slots
                        .lock()
                        .insert(id.name.clone(), super::Slot { uid: id.uid, ..Default::default() });
                }
            }
            streams.retain(|n, _| ids.iter().any(|i| &i.name == n));
            r.slots.lock().retain(|n, _| ids.iter().any(|i| &i.name == n));
            sent_catalog = ids;
            sent = true;
        }
        while let Ok(d) = done_rx.try_recv() {
            let Some((_, c)) = now.iter().find(|(id, _)| id.name == d.name && id.uid == d.uid)
            else {
                continue;
            };
            let st = match WalReader::open(&c.wal_dir(), d.lsn + 1)? {
                Some(rd) => Stream::Live(rd),
                None => Stream::Base(None),
            };
            {
                let mut slots = r.slots.lock();
                let sl = slots.entry(d.name.clone()).or_default();
                *sl = super::Slot { uid: d.uid, sent_lsn: d.lsn, ..Default::default() };
                sl.confirmed = frame::Lsns { received: d.lsn, flushed: d.lsn, applied: d.lsn };
            }
            remove_staged(state, &d.name);
            info!(collection = %d.name, lsn = d.lsn, "the standby installed its base copy: streaming");
            streams.insert(d.name, (d.uid, st));
        }
        for (id, c) in &now {
            let Some((_, st)) = streams.get_mut(&id.name) else { continue };
            match st {
                Stream::Base(resume) => {
                    send_base(state, &mut s, epoch, &id.name, c, resume.take())?;
                    *st = Stream::Waiting;
                    sent = true;
                }
                Stream::Waiting => {}
                Stream::Live(rd) => {
                    let recs = rd.read(c.last_lsn(), WAL_FRAME_BYTES)?;
                    if let (Some(a), Some(b)) = (recs.first(), recs.last()) {
                        let (first, last) = (a.lsn, b.lsn);
                        let payload = frame::encode_wal(&id.name, &recs);
                        frame::write(&mut s, Kind::Wal, epoch, first, &payload)?;
                        r.note_sent(&id.name, id.uid, first, last, payload.len() as u64);
                        sent = true;
                    } else if rd.next_lsn() <= c.last_lsn() && c.first_lsn() > rd.next_lsn() {
                        info!(collection = %id.name, lsn = rd.next_lsn(),
                              "the WAL no longer holds the next record for the standby: a new base copy");
                        *st = Stream::Base(None);
                    }
                }
            }
        }
        if last_keepalive.elapsed() >= Duration::from_secs(1) {
            let last_lsns = now.iter().map(|(id, c)| (id.name.clone(), c.last_lsn())).collect();
            frame::write_json(
                &mut s,
                Kind::Keepalive,
                epoch,
                &frame::Keepalive { unix_ms: unix_ms(), last_lsns },
            )?;
            last_keepalive = Instant::now();
            if let Some(p) = r.peer.lock().as_mut() {
                let catching = streams.values().any(|(_, st)| !matches!(st, Stream::Live(_)));
                p.state = if catching { "catchup".into() } else { "streaming".into() };
            }
        }
        if !sent {
            DURABLE.wait_change(seen, Duration::from_millis(100));
        }
    };
    let _ = s.shutdown(std::net::Shutdown::Both);
    if r.conn_gen.load(Ordering::Acquire) == conn {
        *r.peer.lock() = None;
    }
    info!(standby = %hello.node, "the standby disconnected");
    result
}

fn catalog(state: &AppState) -> Vec<(CollectionId, Arc<Collection>)> {
    state
        .colls
        .read()
        .iter()
        .map(|(n, c)| (CollectionId { name: n.clone(), uid: c.uid() }, Arc::clone(c)))
        .collect()
}

fn staged_dir(state: &AppState, name: &str, copy_id: u64) -> PathBuf {
    state.data_dir().join(STAGING_DIR).join(format!("base-{name}-{copy_id:016x}"))
}

fn remove_staged(state: &AppState, name: &str) {
    if let Some((id, _)) = state.repl.staged.lock().remove(name) {
        let _ = std::fs::remove_dir_all(staged_dir(state, name, id));
    }
}

/// Files under `root` (relative paths, sorted), with sizes and hashes.
fn list_files(root: &Path) -> anyhow::Result<Vec<FileEntry>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<FileEntry>) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(root, &p, out)?;
            } else {
                let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
                let size = e.metadata()?.len();
                let xxh3 = crate::index::verify::file_xxh3(&p)?;
                out.push(FileEntry { path: rel, size, xxh3 });
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// Sends a base copy of `c`: a snapshot staged under the data directory
/// (kept until the standby has it, so a dropped connection resumes).
fn send_base(
    state: &AppState,
    s: &mut TcpStream,
    epoch: u64,
    name: &str,
    c: &Arc<Collection>,
    resume: Option<frame::Resume>,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let r = &state.repl;
    let reuse = {
        let staged = r.staged.lock();
        match (&resume, staged.get(name)) {
            (Some(x), Some((id, files))) if x.copy_id == *id && x.files_done <= files.len() => {
                Some((*id, files.clone(), x.files_done, x.offset))
            }
            _ => None,
        }
    };
    let (copy_id, files, files_done, offset) = match reuse {
        Some(v) => {
            info!(collection = name, files_done = v.2, offset = v.3, "resuming a base copy");
            v
        }
        None => {
            remove_staged(state, name);
            let id: u64 = rand::random();
            let dir = staged_dir(state, name, id);
            let rep = c.snapshot(&dir).with_context(|| format!("snapshot of {name}"))?;
            let files = list_files(&dir)?;
            info!(
                collection = name,
                lsn = rep.lsn_at_least,
                files = files.len(),
                bytes = rep.bytes,
                "sending a base copy"
            );
            r.staged.lock().insert(name.to_string(), (id, files.clone()));
            (id, files, 0, 0)
        }
    };
    let dir = staged_dir(state, name, copy_id);
    let begin = frame::BaseBegin {
        name: name.into(),
        uid: c.uid(),
        copy_id,
        files: files.clone(),
        files_done,
        offset,
    };
    frame::write_json(s, Kind::BaseBegin, epoch, &begin)?;
    let mut bytes = 0u64;
    let mut buf = vec![0u8; CHUNK_BYTES];
    for (i, f) in files.iter().enumerate().skip(files_done) {
        let mut file = std::fs::File::open(dir.join(&f.path))?;
        let mut at = if i == files_done { offset.min(f.size) } else { 0 };
        file.seek(SeekFrom::Start(at))?;
        while at < f.size {
            let n = ((f.size - at) as usize).min(CHUNK_BYTES);
            file.read_exact(&mut buf[..n])?;
            frame::write(
                s,
                Kind::FileChunk,
                epoch,
                0,
                &frame::encode_chunk(i as u32, at, &buf[..n]),
            )?;
            at += n as u64;
            bytes += n as u64;
        }
    }
    frame::write_json(s, Kind::BaseEnd, epoch, &frame::BaseEnd { name: name.into(), copy_id })?;
    metrics::counter!(METRIC_BASE_COPIES).increment(1);
    metrics::counter!(METRIC_BASE_BYTES).increment(bytes);
    let secs = t0.elapsed().as_secs_f64();
    info!(
        collection = name,
        bytes,
        seconds = secs,
        mb_per_s = bytes as f64 / 1e6 / secs.max(1e-9),
        "base copy sent"
    );
    Ok(())
}

/// The staged copies' table type (name -> copy id, files).
pub type Staged = HashMap<String, (u64, Vec<FileEntry>)>;
