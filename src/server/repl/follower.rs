//! The standby's side: connects to the primary, installs base copies,
//! logs + fsyncs + applies the WAL records it receives, and reports its
//! positions after every flush and at least once a second.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::frame::{self, FileEntry, Kind, Lsns};
use super::{METRIC_BASE_BYTES, METRIC_BASE_COPIES, METRIC_REFUSED};
use crate::collection::Collection;
use crate::server::AppState;

/// Prefix of a base copy being received (`DATA/.basecopy-NAME/`).
pub const RECEIVING_PREFIX: &str = ".basecopy-";
const PROGRESS_FILE: &str = "progress.json";
const DATA_SUBDIR: &str = "data";
/// Silence from the primary (it sends a keepalive every second) after which
/// the connection is dropped and made again.
const SILENCE_MAX: Duration = Duration::from_secs(10);

/// Runs until the node is promoted (or the process ends).
pub fn run(state: &Arc<AppState>) {
    let r = &state.repl;
    let mut backoff = Duration::from_millis(r.cfg.reconnect_ms);
    while !r.stopping() {
        let t = Instant::now();
        let res = session(state);
        r.connected.store(false, Ordering::Release);
        *r.follow_socket.lock() = None;
        if r.stopping() {
            break;
        }
        if let Err(e) = res {
            warn!(primary = %r.upstream(), error = %format!("{e:#}"), "replication: not following");
            *r.last_error.lock() = Some(format!("{e:#}"));
        }
        // A session that lasted reconnects at once; failures back off.
        if t.elapsed() > Duration::from_secs(5) {
            backoff = Duration::from_millis(r.cfg.reconnect_ms);
        }
        let until = Instant::now() + backoff;
        while Instant::now() < until && !r.stopping() {
            std::thread::sleep(Duration::from_millis(20));
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    info!("replication: the follower stopped");
}

#[derive(Serialize, Deserialize)]
struct Progress {
    uid: u64,
    copy_id: u64,
    files: Vec<FileEntry>,
    files_done: usize,
}

/// A base copy being received.
struct Receiving {
    name: String,
    uid: u64,
    copy_id: u64,
    root: PathBuf,
    files: Vec<FileEntry>,
    done: usize,
    /// Bytes of file `done` written.
    at: u64,
    file: Option<std::fs::File>,
    bytes: u64,
    started: Instant,
}

fn receiving_dir(data: &Path, name: &str) -> PathBuf {
    data.join(format!("{RECEIVING_PREFIX}{name}"))
}

fn read_progress(dir: &Path) -> Option<Progress> {
    serde_json::from_slice(&std::fs::read(dir.join(PROGRESS_FILE)).ok()?).ok()
}

fn write_progress(dir: &Path, p: &Progress) -> anyhow::Result<()> {
    let path = dir.join(PROGRESS_FILE);
    let (pending, mut f) = crate::fsutil::PendingFile::create(&path)?;
    f.write_all(&serde_json::to_vec(p)?)?;
    pending.commit(f)?;
    Ok(())
}

/// Base copies this node can resume.
fn resumable(data: &Path) -> Vec<frame::Resume> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(data) else { return out };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(name) = n.strip_prefix(RECEIVING_PREFIX) else { continue };
        let Some(p) = read_progress(&e.path()) else { continue };
        let offset = p.files.get(p.files_done).map_or(0, |f| {
            std::fs::metadata(e.path().join(DATA_SUBDIR).join(&f.path))
                .map_or(0, |m| m.len().min(f.size))
        });
        out.push(frame::Resume {
            name: name.to_string(),
            copy_id: p.copy_id,
            files_done: p.files_done,
            offset,
        });
    }
    out
}

/// A relative path of plain components only.
fn safe_rel(p: &str) -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(p);
    if p.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        bail!("base copy file {p:?} is not a plain relative path");
    }
    Ok(path)
}

impl Receiving {
    fn begin(data: &Path, b: frame::BaseBegin) -> anyhow::Result<Receiving> {
        crate::server::check_name_plain(&b.name)?;
        for f in &b.files {
            safe_rel(&f.path)?;
        }
        let root = receiving_dir(data, &b.name);
        let have = read_progress(&root);
        let resumes =
            have.as_ref().is_some_and(|p| p.copy_id == b.copy_id && p.files_done == b.files_done);
        if !resumes {
            if b.files_done != 0 || b.offset != 0 {
                bail!("the primary resumes a base copy of {} this node does not have", b.name);
            }
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join(DATA_SUBDIR))?;
            write_progress(
                &root,
                &Progress { uid: b.uid, copy_id: b.copy_id, files: b.files.clone(), files_done: 0 },
            )?;
        }
        let mut r = Receiving {
            name: b.name,
            uid: b.uid,
            copy_id: b.copy_id,
            root,
            files: b.files,
            done: b.files_done,
            at: b.offset,
            file: None,
            bytes: 0,
            started: Instant::now(),
        };
        r.open_current()?;
        r.finish_empty()?;
        Ok(r)
    }

    fn target(&self, i: usize) -> anyhow::Result<PathBuf> {
        Ok(self.root.join(DATA_SUBDIR).join(safe_rel(&self.files[i].path)?))
    }

    fn open_current(&mut self) -> anyhow::Result<()> {
        if self.done >= self.files.len() {
            self.file = None;
            return Ok(());
        }
        let p = self.target(self.done)?;
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let f = std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(&p)?;
        f.set_len(self.at)?;
        self.file = Some(f);
        Ok(())
    }

    /// Completes zero-length files at the cursor.
    fn finish_empty(&mut self) -> anyhow::Result<()> {
        while self.done < self.files.len() && self.files[self.done].size == 0 {
            self.complete()?;
        }
        Ok(())
    }

    /// File `done` is whole: fsync, check its hash, record progress.
    fn complete(&mut self) -> anyhow::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        let want = &self.files[self.done];
        let p = self.target(self.done)?;
        let got = crate::index::verify::file_xxh3(&p)?;
        if got != want.xxh3 {
            let _ = std::fs::remove_dir_all(&self.root);
            metrics::counter!(METRIC_REFUSED, "reason" => "base_copy_hash").increment(1);
            bail!(
                "base copy of {}: {} has xxh3 {got:016x}, the primary sent {:016x}: discarded",
                self.name,
                want.path,
                want.xxh3
            );
        }
        self.done += 1;
        self.at = 0;
        write_progress(
            &self.root,
            &Progress {
                uid: self.uid,
                copy_id: self.copy_id,
                files: self.files.clone(),
                files_done: self.done,
            },
        )?;
        self.open_current()
    }

    fn chunk(&mut self, file: u32, offset: u64, bytes: &[u8]) -> anyhow::Result<()> {
        if file as usize != self.done || offset != self.at {
            bail!(
                "base copy of {}: chunk of file {file} at {offset}, expected file {} at {}",
                self.name,
                self.done,
                self.at
            );
        }
        let size = self.files[self.done].size;
        if self.at + bytes.len() as u64 > size {
            bail!(
                "base copy of {}: file {} longer than its announced {size} bytes",
                self.name,
                self.files[self.done].path
            );
        }
        self.file.as_mut().ok_or_else(|| anyhow!("no file open"))?.write_all(bytes)?;
        self.at += bytes.len() as u64;
        self.bytes += bytes.len() as u64;
        if self.at == size {
            self.complete()?;
            self.finish_empty()?;
        }
        Ok(())
    }
}

/// Removes a local collection (closed, renamed aside, removed).
fn remove_local(state: &AppState, name: &str) -> anyhow::Result<()> {
    let c = state.colls.write().remove(name);
    let dir = state.data_dir().join(name);
    drop(c);
    if dir.exists() {
        let gone = state.data_dir().join(format!("{}{name}", crate::server::DELETING_PREFIX));
        let _ = std::fs::remove_dir_all(&gone);
        std::fs::rename(&dir, &gone).with_context(|| format!("renaming {}", dir.display()))?;
        crate::fsutil::sync_dir(state.data_dir())?;
        std::fs::remove_dir_all(&gone).with_context(|| format!("removing {}", gone.display()))?;
    }
    Ok(())
}

/// Puts a received copy in place of the local collection and opens it.
fn install(state: &AppState, rc: Receiving) -> anyhow::Result<Arc<Collection>> {
    if rc.done != rc.files.len() {
        bail!("base copy of {} ended after {} of {} files", rc.name, rc.done, rc.files.len());
    }
    remove_local(state, &rc.name)?;
    let dst = state.data_dir().join(&rc.name);
    std::fs::rename(rc.root.join(DATA_SUBDIR), &dst)?;
    crate::fsutil::sync_dir(state.data_dir())?;
    std::fs::remove_dir_all(&rc.root)?;
    let c = Collection::open(&dst, crate::server::open_options(&state.cfg, &rc.name))
        .with_context(|| format!("opening the base copy of {}", rc.name))?;
    c.set_follower(true);
    state.colls.write().insert(rc.name.clone(), Arc::clone(&c));
    metrics::counter!(METRIC_BASE_COPIES).increment(1);
    metrics::counter!(METRIC_BASE_BYTES).increment(rc.bytes);
    let secs = rc.started.elapsed().as_secs_f64();
    info!(collection = %rc.name, lsn = c.last_lsn(), bytes = rc.bytes, seconds = secs,
          mb_per_s = rc.bytes as f64 / 1e6 / secs.max(1e-9), "base copy installed");
    Ok(c)
}

fn positions(state: &AppState) -> BTreeMap<String, frame::Reported> {
    state
        .colls
        .read()
        .iter()
        .map(|(n, c)| {
            let l = c.last_lsn();
            (
                n.clone(),
                frame::Reported {
                    uid: c.uid(),
                    lsns: Lsns { received: l, flushed: l, applied: l },
                },
            )
        })
        .collect()
}

fn feedback(state: &AppState, s: &mut TcpStream, epoch: u64) -> anyhow::Result<()> {
    frame::write_json(s, Kind::Feedback, epoch, &frame::Feedback { positions: positions(state) })?;
    Ok(())
}

/// Notes the primary's last LSN of a collection (the standby's lag view).
fn heard(state: &AppState, name: &str, primary_lsn: u64, lsns: Option<Lsns>) {
    let mut f = state.repl.followed.lock();
    let e = f.entry(name.to_string()).or_default();
    e.primary_lsn = e.primary_lsn.max(primary_lsn);
    if let Some(l) = lsns {
        e.lsns = l;
    }
    if e.lsns.applied >= e.primary_lsn {
        e.behind_since = None;
    } else if e.behind_since.is_none() {
        e.behind_since = Some(Instant::now());
    }
}

fn session(state: &Arc<AppState>) -> anyhow::Result<()> {
    let r = &state.repl;
    let addr = r.upstream();
    let sa: std::net::SocketAddr =
        addr.parse().with_context(|| format!("replication primary {addr:?}"))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    s.set_read_timeout(Some(SILENCE_MAX))?;
    *r.follow_socket.lock() = Some(s.try_clone()?);
    if r.stopping() {
        return Ok(());
    }
    let my_epoch = r.epoch();
    let hello = frame::Hello {
        secret: r.cfg.secret.clone(),
        node: r.cfg.node_name(),
        // A rejoining node's collections are discarded: it claims none.
        positions: if r.node.lock().rejoin {
            Vec::new()
        } else {
            state
                .colls
                .read()
                .iter()
                .map(|(n, c)| frame::Position { name: n.clone(), uid: c.uid(), lsn: c.last_lsn() })
                .collect()
        },
        resume: resumable(state.data_dir()),
    };
    frame::write_json(&mut s, Kind::Hello, my_epoch, &hello)?;
    let f = frame::read(&mut s)?;
    if f.kind == Kind::Refuse {
        bail!("the primary refused: {}", f.json::<frame::Refusal>()?.message);
    }
    if f.kind != Kind::Welcome {
        bail!("expected welcome, got {:?}", f.kind);
    }
    if f.epoch < my_epoch {
        metrics::counter!(METRIC_REFUSED, "reason" => "lower_epoch").increment(1);
        error!(
            primary_epoch = f.epoch,
            epoch = my_epoch,
            "the primary's epoch is below this node's: not following it"
        );
        bail!(
            "the primary at {addr} has epoch {}, below this node's {my_epoch}: a node never follows a lower epoch",
            f.epoch
        );
    }
    let w: frame::Welcome = f.json()?;
    let rejoin = r.node.lock().rejoin;
    if rejoin {
        // Log what this node wrote that the new primary never had.
        let sw = w.history.iter().find(|sw| sw.epoch > my_epoch);
        let local: Vec<(String, u64)> =
            state.colls.read().iter().map(|(n, c)| (n.clone(), c.last_lsn())).collect();
        for (name, last) in &local {
            let switch = sw.and_then(|sw| sw.lsns.get(name).copied());
            match switch {
                Some(sl) if *last > sl => {
                    warn!(collection = %name, switch_lsn = sl, discarded_from = sl + 1, discarded_to = *last,
                    discarded_records = last - sl, "rejoin: records written here after the switch point are discarded")
                }
                Some(sl) => {
                    info!(collection = %name, switch_lsn = sl, local_lsn = *last, "rejoin: nothing past the switch point")
                }
                None => {
                    warn!(collection = %name, local_lsn = *last, "rejoin: the new primary did not have this collection at the switch: discarded")
                }
            }
            remove_local(state, name)?;
        }
    }
    if f.epoch > my_epoch || rejoin {
        r.update(|n| {
            n.epoch = f.epoch;
            n.history = w.history.clone();
            n.rejoin = false;
            n.fenced_by = None;
        })
        .map_err(|e| anyhow!("recording the primary's epoch: {e}"))?;
    }
    let epoch = f.epoch;
    *r.upstream_http.lock() = w.http.clone();
    apply_catalog(state, &w.collections)?;
    r.connected.store(true, Ordering::Release);
    *r.last_error.lock() = None;
    info!(primary = %addr, epoch, collections = w.collections.len(), "following the primary");
    for (n, l) in positions(state) {
        heard(state, &n, 0, Some(l.lsns));
    }
    feedback(state, &mut s, epoch)?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut receiving: Option<Receiving> = None;
    let mut last_heard = Instant::now();
    let mut last_feedback = Instant::now();
    loop {
        if r.stopping() {
            return Ok(());
        }
        let f = match frame::read(&mut s) {
            Ok(f) => f,
            Err(e) if e.is_timeout() => {
                if last_heard.elapsed() > SILENCE_MAX {
                    bail!("nothing from the primary for {SILENCE_MAX:?}");
                }
                feedback(state, &mut s, epoch)?;
                last_feedback = Instant::now();
                continue;
            }
            Err(frame::FrameError::Bad(why)) => {
                metrics::counter!(METRIC_REFUSED, "reason" => "bad_frame").increment(1);
                error!(why, "replication: a bad frame from the primary: refused, reconnecting");
                bail!("bad frame: {why}");
            }
            Err(e) => return Err(e.into()),
        };
        last_heard = Instant::now();
        if f.epoch < r.epoch() {
            metrics::counter!(METRIC_REFUSED, "reason" => "lower_epoch").increment(1);
            error!(frame_epoch = f.epoch, epoch = r.epoch(), kind = ?f.kind, lsn = f.lsn,
                   "replication: a frame from a lower epoch: refused");
            bail!("a frame of epoch {} below this node's {}", f.epoch, r.epoch());
        }
        match f.kind {
            Kind::Wal => {
                let (name, recs) = frame::decode_wal(f.lsn, &f.payload)?;
                let c = state.colls.read().get(&name).cloned().ok_or_else(|| {
                    anyhow!("WAL records for {name}, which this node does not have")
                })?;
                let last = recs.last().map_or(0, |x| x.lsn);
                heard(state, &name, last, None);
                let done = c
                    .apply_replicated(&recs)
                    .with_context(|| format!("applying records {}..={last} of {name}", f.lsn))?;
                heard(
                    state,
                    &name,
                    last,
                    Some(Lsns { received: last, flushed: done, applied: done }),
                );
                feedback(state, &mut s, epoch)?;
                last_feedback = Instant::now();
            }
            Kind::Keepalive => {
                let k: frame::Keepalive = f.json()?;
                for (n, l) in &k.last_lsns {
                    heard(state, n, *l, None);
                }
                if last_feedback.elapsed() >= Duration::from_millis(500) {
                    feedback(state, &mut s, epoch)?;
                    last_feedback = Instant::now();
                }
            }
            Kind::Catalog => {
                let c: frame::Catalog = f.json()?;
                apply_catalog(state, &c.collections)?;
            }
            Kind::BaseBegin => {
                let b: frame::BaseBegin = f.json()?;
                info!(collection = %b.name, files = b.files.len(), resume_at_file = b.files_done, "receiving a base copy");
                receiving = Some(Receiving::begin(state.data_dir(), b)?);
            }
            Kind::FileChunk => {
                let (i, off, bytes) = frame::decode_chunk(&f.payload)?;
                receiving
                    .as_mut()
                    .ok_or_else(|| anyhow!("a file chunk outside a base copy"))?
                    .chunk(i, off, bytes)?;
            }
            Kind::BaseEnd => {
                let e: frame::BaseEnd = f.json()?;
                let rc = receiving.take().ok_or_else(|| anyhow!("base end outside a base copy"))?;
                if rc.name != e.name || rc.copy_id != e.copy_id {
                    bail!("base end of {} while receiving {}", e.name, rc.name);
                }
                let uid = rc.uid;
                let c = install(state, rc)?;
                let lsn = c.last_lsn();
                heard(
                    state,
                    &e.name,
                    lsn,
                    Some(Lsns { received: lsn, flushed: lsn, applied: lsn }),
                );
                frame::write_json(
                    &mut s,
                    Kind::BaseDone,
                    epoch,
                    &frame::BaseDone { name: e.name, uid, lsn },
                )?;
                feedback(state, &mut s, epoch)?;
            }
            Kind::Refuse => bail!("the primary refused: {}", f.json::<frame::Refusal>()?.message),
            k => bail!("unexpected {k:?} frame from the primary"),
        }
    }
}

/// Removes local collections the primary does not have (by name and uid).
fn apply_catalog(state: &AppState, ids: &[frame::CollectionId]) -> anyhow::Result<()> {
    let local: Vec<(String, u64)> =
        state.colls.read().iter().map(|(n, c)| (n.clone(), c.uid())).collect();
    for (name, uid) in local {
        if !ids.iter().any(|i| i.name == name && i.uid == uid) {
            info!(collection = %name, "the primary no longer has this collection (or made it anew): removed here");
            remove_local(state, &name)?;
            state.repl.followed.lock().remove(&name);
        }
    }
    // Copies in progress of collections that are gone.
    if let Ok(rd) = std::fs::read_dir(state.data_dir()) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = n.strip_prefix(RECEIVING_PREFIX)
                && !ids.iter().any(|i| i.name == name)
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}
