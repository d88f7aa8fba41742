//! `basalt serve`: the daemon. A tokio runtime runs the HTTP API (axum);
//! searches run on the search pool's plain threads, writes and other
//! blocking work on the runtime's blocking threads, so no async worker
//! waits on a disk read or an fsync. Start-up listens at once (`/healthz`
//! answers, `/readyz` says 503) and opens every collection of the data
//! directory, replaying its WAL, before it reports ready (to systemd too).
//! SIGTERM or SIGINT: stop accepting, let in-flight requests finish within
//! `service.shutdown_grace_ms`, sync every WAL, exit 0.

pub mod api;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod notify;
pub mod pool;
pub mod repl;
pub mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use parking_lot::{Mutex, RwLock};
use tracing::{error, info, warn};

use crate::collection::{Collection, CollectionOptions};
use config::ServerConfig;
use pool::SearchPool;

/// Prefix of a collection directory being removed (renamed first, so a
/// crash mid-removal never leaves a half collection that opens).
pub const DELETING_PREFIX: &str = ".deleting-";

/// Prefix of a collection directory being created (built beside, then
/// renamed into place).
pub const CREATING_PREFIX: &str = ".creating-";

/// What every handler shares.
pub struct AppState {
    pub cfg: ServerConfig,
    pub colls: RwLock<BTreeMap<String, Arc<Collection>>>,
    pub pool: SearchPool,
    pub ready: AtomicBool,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Creates and deletes of collections, one at a time.
    pub admin: Mutex<()>,
    /// Requests on blocking threads at once, at most.
    pub blocking: Arc<tokio::sync::Semaphore>,
    pub repl: repl::Replication,
}

impl AppState {
    pub fn data_dir(&self) -> &Path {
        &self.cfg.service.data_dir
    }
}

/// Sets up logging: text (journald adds time and unit) or JSON lines, on
/// stderr, filtered by `log.level` (or `RUST_LOG` when set).
fn init_logging(cfg: &ServerConfig) {
    let filter = std::env::var("RUST_LOG").ok().unwrap_or_else(|| cfg.log.level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let r = if cfg.log.format == "json" {
        b.json().try_init()
    } else if under_journal {
        b.without_time().with_ansi(false).try_init()
    } else {
        b.with_ansi(false).try_init()
    };
    let _ = r;
}

/// Collection directories under `data`: sorted names. Leftovers of an
/// interrupted create or delete are removed first.
fn scan(data: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(data).with_context(|| format!("listing {}", data.display()))? {
        let e = e.with_context(|| format!("listing {}", data.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if name.starts_with(DELETING_PREFIX) || name.starts_with(CREATING_PREFIX) {
            warn!(dir = %path.display(), "removing a collection whose create or delete was interrupted");
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing {}", path.display()))?;
            continue;
        }
        if !path.is_dir() || name.starts_with('.') {
            continue;
        }
        if !path.join(crate::collection::config::CONFIG_FILE).exists() {
            warn!(dir = %path.display(), "not a collection (no collection file): skipped");
            continue;
        }
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// A collection name that is one plain path component.
pub fn check_name_plain(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        bail!("collection name {name:?}: 1..=255 of letters, digits, '_' and '-'");
    }
    Ok(())
}

/// Options collection `name` is opened with: the search mode, the entry
/// cache's RAM from
/// `search.cache_bytes_per_collection` (0: no cache), or the in-memory mode
/// when `search.in_memory_collections` names it.
pub fn open_options(cfg: &ServerConfig, name: &str) -> CollectionOptions {
    let mut o = CollectionOptions {
        wal_segment_bytes_max: Some(cfg.collections.wal_segment_bytes),
        ..CollectionOptions::default()
    };
    o.filter_tuning.resolve_cap = cfg.search.filter_resolve_points_max;
    o.index.search_mode = cfg.search.mode;
    o.index.spin_wait_us = cfg.search.spin_wait_us;
    let b = cfg.search.cache_bytes_per_collection;
    if b > 0 {
        o.index.cache_bytes = Some(b);
        // Bytes decide; the engine's node cap bounds it.
        o.index.cache_nodes = crate::search::CACHE_NODES_MAX;
    }
    if cfg.search.in_memory_collections.iter().any(|c| c == name) {
        o.index.in_memory = true;
        o.index.in_memory_bytes_max = Some(cfg.search.in_memory_bytes_max).filter(|&b| b > 0);
        o.index.in_memory_steer = cfg.search.in_memory_steer;
    }
    o
}

/// Runs the daemon until a signal; returns once it has shut down cleanly.
pub fn run(cfg: ServerConfig, demo: bool) -> Result<()> {
    init_logging(&cfg);
    for name in config::unknown_env(&std::env::vars().collect::<Vec<_>>()) {
        warn!(variable = %name, "environment variable names no configuration key: ignored");
    }
    let addr = cfg.listen_addr().map_err(anyhow::Error::msg)?;
    let data = cfg.service.data_dir.clone();
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    if demo {
        demo::ensure(&data, &cfg)?;
    }
    let handle = metrics::install().map_err(anyhow::Error::msg)?;
    let repl = repl::Replication::load(&cfg.replication, &data)?;
    let threads = match cfg.search.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let pool = SearchPool::new(threads, cfg.search.queue_max).context("starting search threads")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cfg.service.blocking_threads)
        .thread_name("basalt-rt")
        .build()
        .context("starting the async runtime")?;
    let state = Arc::new(AppState {
        cfg: cfg.clone(),
        colls: RwLock::new(BTreeMap::new()),
        pool,
        ready: AtomicBool::new(false),
        metrics: handle,
        admin: Mutex::new(()),
        blocking: Arc::new(tokio::sync::Semaphore::new(cfg.service.blocking_threads)),
        repl,
    });
    let r = rt.block_on(serve(Arc::clone(&state), addr, demo));
    // Whatever happened, make acknowledged writes durable before leaving.
    shutdown_collections(&state);
    rt.shutdown_timeout(Duration::from_secs(1));
    r
}

async fn serve(state: Arc<AppState>, addr: std::net::SocketAddr, demo: bool) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr().context("the listening address")?;
    *state.repl.http_addr.lock() = local.to_string();
    info!(address = %local, "listening");
    // A line tests and scripts can wait for (the port may be 0 = any).
    eprintln!("basalt: listening on {local}");
    let app = api::router(Arc::clone(&state));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let mut rx = stop_rx;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });

    // Open the collections on a blocking thread while /healthz answers.
    let st = Arc::clone(&state);
    let opening = tokio::task::spawn_blocking(move || open_all(&st));
    let watchdog = notify::Watchdog::start(Arc::clone(&state));
    tokio::select! {
        r = opening => {
            r.context("opening collections")??;
            state.ready.store(true, Ordering::Release);
            repl::Replication::start(&state).context("starting replication")?;
            let n = state.colls.read().len();
            info!(collections = n, "ready");
            notify::ready(&format!("serving {n} collections on {local}"));
            if demo {
                demo::print_next_steps(&local);
            }
        }
        _ = signal() => {
            warn!("signal during start-up: stopping");
            let _ = stop_tx.send(true);
            watchdog.stop();
            return Ok(());
        }
    }
    signal().await;
    info!("signal: stopping (no new connections; in-flight requests finish)");
    notify::stopping();
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(state.cfg.service.shutdown_grace_ms);
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => info!("every request finished"),
        Ok(Ok(Err(e))) => error!(error = %e, "server error"),
        Ok(Err(e)) => error!(error = %e, "server task failed"),
        Err(_) => warn!(
            grace_ms = grace.as_millis() as u64,
            "requests still running after the grace period: leaving them"
        ),
    }
    watchdog.stop();
    Ok(())
}

/// SIGTERM or SIGINT.
async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn open_all(state: &AppState) -> Result<()> {
    let names = scan(state.data_dir())?;
    if names.len() > state.cfg.limits.collections_max {
        bail!(
            "{} holds {} collections, more than limits.collections_max ({})",
            state.data_dir().display(),
            names.len(),
            state.cfg.limits.collections_max
        );
    }
    let total = names.len();
    for (i, name) in names.into_iter().enumerate() {
        let dir: PathBuf = state.data_dir().join(&name);
        notify::status(&format!(
            "opening collection {name} ({}/{total}): replaying its WAL",
            i + 1
        ));
        let extend = notify::Extender::start(&name);
        let t = Instant::now();
        let c = Collection::open(&dir, open_options(&state.cfg, &name))
            .with_context(|| format!("opening collection {name}"));
        extend.stop();
        let c = c?;
        if state.repl.role() == repl::state::Role::Standby {
            c.set_follower(true);
        }
        let s = c.stats();
        info!(collection = %name, points = s.points, delta_points = s.delta_points,
              last_lsn = s.last_lsn, seconds = t.elapsed().as_secs_f64(), "opened");
        state.colls.write().insert(name, c);
    }
    Ok(())
}

/// Stops the search threads and syncs every collection's WAL. A merge in
/// progress is abandoned (it restarts from the WAL at the next start).
fn shutdown_collections(state: &AppState) {
    state.pool.shutdown();
    let colls = std::mem::take(&mut *state.colls.write());
    for (name, c) in colls {
        if let Err(e) = c.sync() {
            error!(collection = %name, error = %e, "syncing the WAL at shutdown failed");
        }
        if c.stats().merging {
            info!(collection = %name, "a merge was running: it is redone after the next start");
        }
    }
    info!("stopped");
}
