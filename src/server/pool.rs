//! The search threads: plain OS threads fed by one bounded queue, so the
//! async runtime never waits on a disk read. Each search borrows an
//! io_uring searcher from its generation's pool (a thread has at most one
//! at a time, so rings are never shared). A full queue is refused at once
//! (the handler answers 503 with Retry-After); a panicking job is caught
//! and reported, and its thread goes on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// How often an idle thread wakes to show it is alive (the watchdog reads it).
const HEARTBEAT: Duration = Duration::from_millis(100);

pub struct SearchPool {
    tx: Mutex<Option<SyncSender<Job>>>,
    depth: Arc<AtomicUsize>,
    /// Per thread: bumped after every job and every idle wake-up.
    beats: Arc<Vec<AtomicU64>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The queue is full: try again later.
#[derive(Debug)]
pub struct QueueFull;

/// The job panicked (a bug): the thread survived.
#[derive(Debug)]
pub struct JobPanicked(pub String);

impl SearchPool {
    pub fn new(threads: usize, queue_max: usize) -> std::io::Result<SearchPool> {
        let (tx, rx) = sync_channel::<Job>(queue_max);
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let depth = Arc::new(AtomicUsize::new(0));
        let beats: Arc<Vec<AtomicU64>> =
            Arc::new((0..threads).map(|_| AtomicU64::new(0)).collect());
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let depth = Arc::clone(&depth);
            let beats = Arc::clone(&beats);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("search-{i}"))
                    .spawn(move || worker(i, &rx, &depth, &beats))?,
            );
        }
        Ok(SearchPool { tx: Mutex::new(Some(tx)), depth, beats, threads: Mutex::new(handles) })
    }

    /// Queues `f`; its result arrives on the returned receiver.
    pub fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<R, JobPanicked>>, QueueFull> {
        let (rtx, rrx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
                JobPanicked(
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into()),
                )
            });
            let _ = rtx.send(r);
        });
        let guard = self.tx.lock();
        let Some(tx) = guard.as_ref() else { return Err(QueueFull) };
        self.depth.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(job) {
            Ok(()) => Ok(rrx),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                Err(QueueFull)
            }
        }
    }

    /// Searches waiting for a thread.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Every thread's heartbeat (the watchdog checks they all move).
    pub fn heartbeats(&self) -> Vec<u64> {
        self.beats.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    pub fn threads(&self) -> usize {
        self.beats.len()
    }

    /// Stops taking work, lets the queued jobs finish, joins the threads.
    pub fn shutdown(&self) {
        self.tx.lock().take();
        let handles = std::mem::take(&mut *self.threads.lock());
        for h in handles {
            let _ = h.join();
        }
    }
}

fn worker(
    i: usize,
    rx: &std::sync::Mutex<Receiver<Job>>,
    depth: &AtomicUsize,
    beats: &[AtomicU64],
) {
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            rx.recv_timeout(HEARTBEAT)
        };
        match job {
            Ok(job) => {
                depth.fetch_sub(1, Ordering::Relaxed);
                job();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        beats[i].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_refuses_and_a_panic_is_caught() {
        let pool = SearchPool::new(1, 2).expect("threads");
        let (block_tx, block_rx) = std::sync::mpsc::channel::<()>();
        // Occupy the one thread, then fill the queue of 2.
        let first = pool.submit(move || block_rx.recv().is_ok()).expect("queued");
        while pool.depth() != 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let a = pool.submit(|| 1).expect("queued");
        let b = pool.submit(|| -> u32 { panic!("handler bug") }).expect("queued");
        assert!(pool.submit(|| 3).is_err(), "a third job fits in a queue of 2");
        assert_eq!(pool.depth(), 2);
        block_tx.send(()).expect("send");
        assert!(first.blocking_recv().expect("answer").expect("no panic"));
        assert_eq!(a.blocking_recv().expect("answer").expect("no panic"), 1);
        let e = b.blocking_recv().expect("answer").expect_err("panicked");
        assert!(e.0.contains("handler bug"));
        // The thread survived its panic.
        assert_eq!(
            pool.submit(|| 4).expect("queued").blocking_recv().expect("answer").ok(),
            Some(4)
        );
        pool.shutdown();
        assert!(pool.submit(|| 5).is_err());
    }
}
