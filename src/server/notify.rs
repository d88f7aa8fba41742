//! systemd notifications (`Type=notify`): READY=1 once every collection
//! is open, STATUS= lines, EXTEND_TIMEOUT_USEC while a WAL replays (a long
//! replay is not a failed start), STOPPING=1, and WATCHDOG=1 only while
//! the search threads and the WALs make progress. Without NOTIFY_SOCKET
//! every call does nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tracing::{debug, warn};

use super::AppState;

/// Each EXTEND_TIMEOUT_USEC asks for this much more time ...
const EXTEND_BY: Duration = Duration::from_secs(30);
/// ... and is sent this often while a collection opens.
const EXTEND_EVERY: Duration = Duration::from_secs(10);

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn status(s: &str) {
    send(&[NotifyState::Status(s)]);
}

/// Sends EXTEND_TIMEOUT_USEC now and every `EXTEND_EVERY` until stopped.
pub struct Extender {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Extender {
    pub fn start(what: &str) -> Extender {
        let stop = Arc::new(AtomicBool::new(false));
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Extender { stop, thread: None };
        }
        let s = Arc::clone(&stop);
        let what = what.to_string();
        let usec = u32::try_from(EXTEND_BY.as_micros()).unwrap_or(u32::MAX);
        // The first one before `start` returns: a replay shorter than the
        // thread's start-up must still have asked for its time.
        debug!(collection = %what, "extending the start-up timeout");
        send(&[NotifyState::ExtendTimeoutUsec(usec)]);
        let thread = std::thread::Builder::new()
            .name("sd-extend".into())
            .spawn(move || {
                loop {
                    let mut slept = Duration::ZERO;
                    while slept < EXTEND_EVERY && !s.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(100));
                        slept += Duration::from_millis(100);
                    }
                    if s.load(Ordering::Acquire) {
                        break;
                    }
                    debug!(collection = %what, "extending the start-up timeout");
                    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
                }
            })
            .ok();
        Extender { stop, thread }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pets systemd's watchdog at half its period while every search thread's
/// heartbeat moves and no WAL flush has been running for a whole period.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(state: Arc<AppState>) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let Some(period) = sd_notify::watchdog_enabled() else {
            return Watchdog { stop, thread: None };
        };
        let s = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sd-watchdog".into())
            .spawn(move || {
                let tick = period / 2;
                // Each thread's last heartbeat and when it changed: a thread
                // whose beat stood still for a whole period is stuck (an
                // idle thread beats every 100 ms, a busy one after each job).
                let mut last: Vec<(u64, Instant)> =
                    state.pool.heartbeats().into_iter().map(|b| (b, Instant::now())).collect();
                while !s.load(Ordering::Acquire) {
                    let mut slept = Duration::ZERO;
                    while slept < tick && !s.load(Ordering::Acquire) {
                        let step = (tick - slept).min(Duration::from_millis(50));
                        std::thread::sleep(step);
                        slept += step;
                    }
                    for (l, now) in last.iter_mut().zip(state.pool.heartbeats()) {
                        if l.0 != now {
                            *l = (now, Instant::now());
                        }
                    }
                    let threads_ok = last.iter().all(|(_, t)| t.elapsed() < period);
                    let stalled_wal = state
                        .colls
                        .read()
                        .iter()
                        .find(|(_, c)| c.wal_flush_age().is_some_and(|a| a > period))
                        .map(|(n, _)| n.clone());
                    match (threads_ok, stalled_wal) {
                        (true, None) => send(&[NotifyState::Watchdog]),
                        (false, _) => {
                            warn!("a search thread made no progress: watchdog not petted")
                        }
                        (_, Some(n)) => {
                            warn!(collection = %n, "a WAL flush is stuck: watchdog not petted")
                        }
                    }
                }
            })
            .ok();
        Watchdog { stop, thread }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
