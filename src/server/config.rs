//! The daemon's configuration: one TOML file, every key with a default
//! (`configs/basalt.toml` lists them all), unknown keys refused by name.
//! Precedence, lowest first: defaults, the file, `BASALT_<SECTION>_<KEY>`
//! environment variables, command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::collection::SCROLL_LIMIT_MAX;
use crate::collection::batch::{BATCH_POINTS_MAX, PAYLOAD_BYTES_MAX};
use crate::search::{BEAM_WIDTH_MAX, K_MAX, LIST_SIZE_MAX};

/// Largest config file read.
const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;
/// Prefix of the environment variables that override keys.
pub const ENV_PREFIX: &str = "BASALT_";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub service: ServiceConfig,
    pub search: SearchConfig,
    pub limits: LimitsConfig,
    pub collections: CollectionDefaults,
    pub log: LogConfig,
    pub replication: ReplicationConfig,
}

/// Active / warm-standby replication (ARCHITECTURE.md, "Replication").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// "primary" or "standby" at first start; a promotion or a rejoin
    /// records the role in DATA/replication.state, which wins afterwards.
    pub role: String,
    /// The primary's replication listener, address:port; empty: none.
    pub listen: String,
    /// A standby's primary (its replication address:port).
    pub primary: String,
    /// Shared secret both nodes present (compared in constant time).
    pub secret: String,
    /// This node's name in the primary's status; empty: the host name.
    pub node_name: String,
    /// "async": a write is acknowledged after the primary's fsync; "sync":
    /// after the standby's too.
    pub mode: String,
    /// Sync mode: how long a write waits for the standby.
    pub sync_timeout_ms: u64,
    /// Sync mode, past the timeout: "fail" the write (it stays durable on
    /// the primary) or "degrade" to async until the standby catches up.
    pub sync_on_timeout: String,
    /// WAL bytes kept per collection for a standby that has not flushed
    /// them; past it the standby is lost and takes a new base copy.
    pub retention_bytes_max: u64,
    /// A standby's first wait before reconnecting (doubling to 5 s).
    pub reconnect_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            role: "primary".into(),
            listen: String::new(),
            primary: String::new(),
            secret: String::new(),
            node_name: String::new(),
            mode: "async".into(),
            sync_timeout_ms: 5_000,
            sync_on_timeout: "fail".into(),
            retention_bytes_max: 4 << 30,
            reconnect_ms: 200,
        }
    }
}

impl ReplicationConfig {
    /// The name this node gives itself.
    pub fn node_name(&self) -> String {
        if !self.node_name.is_empty() {
            return self.node_name.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "basalt".into())
    }

    fn validate(&self) -> Result<(), String> {
        let one_of = |key: &str, v: &str, set: &[&str]| -> Result<(), String> {
            if set.contains(&v) {
                Ok(())
            } else {
                Err(format!("replication.{key} {v:?} is not one of {set:?}"))
            }
        };
        one_of("role", &self.role, &["primary", "standby"])?;
        one_of("mode", &self.mode, &["async", "sync"])?;
        one_of("sync_on_timeout", &self.sync_on_timeout, &["fail", "degrade"])?;
        for (key, v) in [("listen", &self.listen), ("primary", &self.primary)] {
            if !v.is_empty() {
                v.parse::<SocketAddr>()
                    .map_err(|e| format!("replication.{key} {v:?} is not an address:port: {e}"))?;
            }
        }
        if self.role == "standby" && self.primary.is_empty() {
            return Err("replication.role = \"standby\" needs replication.primary".into());
        }
        let replicating = self.role == "standby" || !self.listen.is_empty();
        if replicating && self.secret.len() < 16 {
            return Err("replication needs replication.secret of at least 16 bytes".into());
        }
        if !(1..=3_600_000).contains(&self.sync_timeout_ms) {
            return Err(format!(
                "replication.sync_timeout_ms = {} is outside 1..=3600000",
                self.sync_timeout_ms
            ));
        }
        if self.retention_bytes_max < 1 << 20 {
            return Err("replication.retention_bytes_max is below 1 MiB".into());
        }
        if !(10..=60_000).contains(&self.reconnect_ms) {
            return Err(format!(
                "replication.reconnect_ms = {} is outside 10..=60000",
                self.reconnect_ms
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Address and port to listen on.
    pub listen: String,
    /// Directory holding one subdirectory per collection.
    pub data_dir: PathBuf,
    /// Required in the `api-key` header or `Authorization: Bearer` when not
    /// empty.
    pub api_key: String,
    /// Allow listening on a non-loopback address without an API key.
    pub allow_remote_without_key: bool,
    /// After SIGTERM/SIGINT, how long in-flight requests may take.
    pub shutdown_grace_ms: u64,
    /// Threads for writes and other blocking work (fsyncs, id-map reads).
    pub blocking_threads: usize,
    /// Snapshots are written to SNAPSHOTS_DIR/COLLECTION/NAME.
    pub snapshots_dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Search threads (each with its own io_uring rings); 0: one per core.
    pub threads: usize,
    /// Searches queued for the threads at most; past it, 503 + Retry-After.
    pub queue_max: usize,
    /// Search list size L when a query gives no `params.hnsw_ef`.
    pub list_size_default: usize,
    /// Beam width when a query gives none: the most reads in flight
    /// (pipelined) or the reads per round (rounds).
    pub beam_width_default: usize,
    /// How disk searches schedule reads: "pipelined" (up to the beam width
    /// in flight, each record expanded as it lands) or "rounds" (DiskANN's
    /// beam search).
    pub mode: crate::search::SearchMode,
    /// Microseconds a search blocked on its reads spins before it sleeps
    /// (0: at once); a spinning thread holds its core.
    pub spin_wait_us: u64,
    /// Seconds a 503 tells the client to wait (Retry-After).
    pub retry_after_s: u64,
    /// RAM of each collection's entry cache (hot node records); 0: none.
    pub cache_bytes_per_collection: u64,
    /// Collections whose disk generation is loaded whole into RAM and
    /// searched there (the in-memory mode: no reads).
    pub in_memory_collections: Vec<String>,
    /// What steers an in-memory search: "sq8" (8-bit copies of f32
    /// vectors, the best L rescored exactly) or "exact".
    pub in_memory_steer: crate::search::MemSteer,
    /// RAM one in-memory generation may take, in bytes; 0: 80% of what the
    /// kernel reports available when it is opened.
    pub in_memory_bytes_max: u64,
    /// Most points one filter condition collects from a payload index per
    /// query (a larger match is sampled and checked by payload instead).
    pub filter_resolve_points_max: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body.
    pub body_bytes_max: usize,
    /// Collections in the data directory at most.
    pub collections_max: usize,
    /// Longest collection name (bytes of [A-Za-z0-9_-]).
    pub collection_name_bytes_max: usize,
    /// Points in one upsert (or ids in one delete, retrieve, set payload).
    pub upsert_points_max: usize,
    /// Largest `limit` of a query.
    pub query_limit_max: usize,
    /// Queries in one `points/query/batch`.
    pub query_batch_max: usize,
    /// Largest `limit` of a scroll.
    pub scroll_limit_max: usize,
    /// Largest payload of one point (serialised JSON).
    pub payload_bytes_max: usize,
    /// Requests handled at once; more wait for a slot (their bodies unread).
    pub requests_in_flight_max: usize,
    /// Snapshots kept per collection at most (delete old ones to make more).
    pub snapshots_per_collection_max: usize,
}

/// Parameters of collections created over the API (the request's own
/// `hnsw_config` and `quantization_config` override R, L and PQ bytes).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectionDefaults {
    /// "fsync" or "none".
    pub durability: String,
    pub degree_max: usize,
    pub build_list_size: usize,
    /// PQ bytes per vector; 0: min(dimension, 32).
    pub pq_bytes: usize,
    pub delta_points_merge: u64,
    pub tombstones_merge: u64,
    pub delta_bytes_max: u64,
    pub write_wait_ms_max: u64,
    /// A WAL segment rolls past this size (merges remove whole segments).
    pub wal_segment_bytes: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: "info", "basalt=debug", ...
    pub level: String,
    /// "text" (journald adds the time) or "json".
    pub format: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: "127.0.0.1:6333".into(),
            data_dir: PathBuf::from("basalt-data"),
            api_key: String::new(),
            allow_remote_without_key: false,
            shutdown_grace_ms: 10_000,
            blocking_threads: 64,
            snapshots_dir: PathBuf::from("basalt-snapshots"),
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            threads: 0,
            queue_max: 256,
            list_size_default: 100,
            beam_width_default: 8,
            mode: crate::search::SearchMode::default(),
            spin_wait_us: crate::search::SPIN_WAIT_US_DEFAULT,
            retry_after_s: 1,
            cache_bytes_per_collection: 0,
            in_memory_collections: Vec::new(),
            in_memory_steer: crate::search::MemSteer::default(),
            in_memory_bytes_max: 0,
            filter_resolve_points_max: 1_000_000,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes_max: 64 << 20,
            collections_max: 64,
            collection_name_bytes_max: 64,
            upsert_points_max: 10_000,
            query_limit_max: 1_000,
            query_batch_max: 100,
            scroll_limit_max: 10_000,
            payload_bytes_max: PAYLOAD_BYTES_MAX,
            requests_in_flight_max: 512,
            snapshots_per_collection_max: 8,
        }
    }
}

impl Default for CollectionDefaults {
    fn default() -> Self {
        let c = crate::collection::config::CollectionConfig::new(
            1,
            crate::distance::Metric::L2,
            crate::element::ElementType::F32,
        );
        CollectionDefaults {
            durability: c.durability,
            degree_max: c.degree_max,
            build_list_size: c.list_size,
            pq_bytes: 0,
            delta_points_merge: c.delta_points_merge,
            tombstones_merge: c.tombstones_merge,
            delta_bytes_max: c.delta_bytes_max,
            write_wait_ms_max: c.write_wait_ms_max,
            wal_segment_bytes: crate::wal::SEGMENT_BYTES_DEFAULT,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info,fjall=warn,lsm_tree=warn".into(), format: "text".into() }
    }
}

/// Values given on the command line (they win over everything).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

impl ServerConfig {
    /// Defaults, then `file` (if any), then the environment, then `flags`;
    /// validated.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &Overrides,
    ) -> Result<ServerConfig, String> {
        let mut table = match file {
            None => toml::Table::new(),
            Some(p) => read_table(p)?,
        };
        apply_env(&mut table, env)?;
        if let Some(l) = &flags.listen {
            set(&mut table, "service", "listen", toml::Value::String(l.clone()));
        }
        if let Some(d) = &flags.data_dir {
            set(&mut table, "service", "data_dir", toml::Value::String(d.display().to_string()));
        }
        let what = file.map_or("the configuration".to_string(), |p| p.display().to_string());
        let cfg: ServerConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| format!("{what}: {}", e.message().trim_end()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The effective configuration as TOML (the API key masked).
    pub fn to_toml_masked(&self) -> String {
        let mut c = self.clone();
        if !c.service.api_key.is_empty() {
            c.service.api_key = "(set, not shown)".into();
        }
        if !c.replication.secret.is_empty() {
            c.replication.secret = "(set, not shown)".into();
        }
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot print: {e}"))
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.service.listen.parse().map_err(|e| {
            format!("service.listen {:?} is not an address:port: {e}", self.service.listen)
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        let addr = self.listen_addr()?;
        if !addr.ip().is_loopback()
            && self.service.api_key.is_empty()
            && !self.service.allow_remote_without_key
        {
            return Err(format!(
                "service.listen {addr} is not a loopback address and service.api_key is empty: \
                 set an API key, or service.allow_remote_without_key = true to serve anyone who can reach the port"
            ));
        }
        let s = &self.search;
        let l = &self.limits;
        let range = |key: &str, v: usize, lo: usize, hi: usize| -> Result<(), String> {
            if v < lo || v > hi {
                return Err(format!("{key} = {v} is outside {lo}..={hi}"));
            }
            Ok(())
        };
        range("search.threads", s.threads, 0, crate::THREADS_MAX)?;
        range("search.queue_max", s.queue_max, 1, 1 << 20)?;
        range("search.list_size_default", s.list_size_default, 1, LIST_SIZE_MAX)?;
        range("search.beam_width_default", s.beam_width_default, 1, BEAM_WIDTH_MAX)?;
        range("search.retry_after_s", s.retry_after_s as usize, 1, 3600)?;
        range(
            "search.spin_wait_us",
            s.spin_wait_us as usize,
            0,
            crate::search::SPIN_WAIT_US_MAX as usize,
        )?;
        range(
            "search.filter_resolve_points_max",
            s.filter_resolve_points_max,
            crate::collection::filtered::RESOLVE_CAP_MIN,
            1 << 31,
        )?;
        range("service.blocking_threads", self.service.blocking_threads, 1, crate::THREADS_MAX)?;
        range("service.shutdown_grace_ms", self.service.shutdown_grace_ms as usize, 0, 3_600_000)?;
        range("limits.body_bytes_max", l.body_bytes_max, 1024, 1 << 30)?;
        range("limits.collections_max", l.collections_max, 1, 4096)?;
        range("limits.collection_name_bytes_max", l.collection_name_bytes_max, 1, 255)?;
        range("limits.upsert_points_max", l.upsert_points_max, 1, BATCH_POINTS_MAX)?;
        range("limits.query_limit_max", l.query_limit_max, 1, K_MAX)?;
        range("limits.query_batch_max", l.query_batch_max, 1, 10_000)?;
        range("limits.scroll_limit_max", l.scroll_limit_max, 1, SCROLL_LIMIT_MAX)?;
        range("limits.payload_bytes_max", l.payload_bytes_max, 2, PAYLOAD_BYTES_MAX)?;
        range("limits.requests_in_flight_max", l.requests_in_flight_max, 1, 1 << 20)?;
        range("limits.snapshots_per_collection_max", l.snapshots_per_collection_max, 0, 1024)?;
        if !(64 << 10..=1 << 40).contains(&self.collections.wal_segment_bytes) {
            return Err(format!(
                "collections.wal_segment_bytes = {} is outside 65536..=2^40",
                self.collections.wal_segment_bytes
            ));
        }
        let c = &self.collections;
        if c.durability != "fsync" && c.durability != "none" {
            return Err(format!(
                "collections.durability {:?} is neither \"fsync\" nor \"none\"",
                c.durability
            ));
        }
        if self.log.format != "text" && self.log.format != "json" {
            return Err(format!(
                "log.format {:?} is neither \"text\" nor \"json\"",
                self.log.format
            ));
        }
        self.replication.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| format!("log.level {:?}: {e}", self.log.level))?;
        // The collection defaults are checked as a collection would be.
        let mut probe = crate::collection::config::CollectionConfig::new(
            64,
            crate::distance::Metric::L2,
            crate::element::ElementType::F32,
        );
        apply_defaults(&mut probe, c);
        probe.validate().map_err(|e| format!("collections: {e}"))?;
        Ok(())
    }
}

/// Sets a new collection's parameters from the daemon's defaults.
pub fn apply_defaults(c: &mut crate::collection::config::CollectionConfig, d: &CollectionDefaults) {
    c.durability = d.durability.clone();
    c.degree_max = d.degree_max;
    c.list_size = d.build_list_size;
    if d.pq_bytes > 0 {
        c.pq_chunks = d.pq_bytes.min(c.dim as usize);
    }
    c.delta_points_merge = d.delta_points_merge;
    c.tombstones_merge = d.tombstones_merge;
    c.delta_bytes_max = d.delta_bytes_max;
    c.write_wait_ms_max = d.write_wait_ms_max;
}

fn read_table(p: &Path) -> Result<toml::Table, String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if meta.len() > CONFIG_FILE_BYTES_MAX {
        return Err(format!(
            "{}: {} bytes, more than a config file has ({CONFIG_FILE_BYTES_MAX})",
            p.display(),
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("{}: {}", p.display(), e.to_string().trim_end()))
}

fn set(table: &mut toml::Table, section: &str, key: &str, v: toml::Value) {
    let s =
        table.entry(section.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = s {
        t.insert(key.to_string(), v);
    }
}

/// Every (section, key) the configuration has, from the defaults.
fn known_keys() -> Vec<(String, String, toml::Value)> {
    let t = toml::Table::try_from(ServerConfig::default()).unwrap_or_default();
    let mut out = Vec::new();
    for (section, v) in t {
        if let toml::Value::Table(keys) = v {
            for (k, dv) in keys {
                out.push((section.clone(), k, dv));
            }
        }
    }
    out
}

/// The environment variable that overrides `section.key`.
pub fn env_name(section: &str, key: &str) -> String {
    format!("{ENV_PREFIX}{}_{}", section.to_uppercase(), key.to_uppercase())
}

fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), String> {
    for (section, key, default) in known_keys() {
        let name = env_name(&section, &key);
        let Some((_, raw)) = env.iter().find(|(n, _)| *n == name) else { continue };
        let v = match default {
            toml::Value::String(_) => toml::Value::String(raw.clone()),
            toml::Value::Integer(_) => toml::Value::Integer(
                raw.trim().parse().map_err(|_| format!("{name}={raw:?} is not an integer"))?,
            ),
            toml::Value::Float(_) => toml::Value::Float(
                raw.trim().parse().map_err(|_| format!("{name}={raw:?} is not a number"))?,
            ),
            toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => return Err(format!("{name}={raw:?} is not true or false")),
            }),
            // A list of names: comma-separated.
            toml::Value::Array(_) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            ),
            _ => return Err(format!("{name}: this key cannot be set from the environment")),
        };
        set(table, &section, &key, v);
    }
    Ok(())
}

/// `BASALT_*` variables in `env` that name no key (a typo would otherwise
/// be silently ignored). Variables of the test harness are not config.
pub fn unknown_env(env: &[(String, String)]) -> Vec<String> {
    let known: Vec<String> = known_keys().iter().map(|(s, k, _)| env_name(s, k)).collect();
    env.iter()
        .map(|(n, _)| n)
        .filter(|n| {
            n.starts_with(ENV_PREFIX)
                && !n.starts_with("BASALT_TEST")
                && !n.starts_with("BASALT_GOLDEN")
        })
        .filter(|n| !known.contains(n))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<ServerConfig, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let p = dir.path().join("basalt.toml");
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        let env: Vec<(String, String)> =
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        ServerConfig::load(Some(&p), &env, &Overrides::default())
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load_str("[search]\nqueue_mx = 3\n", &[]).expect_err("a typo");
        assert!(e.contains("queue_mx"), "{e}");
        let e = load_str("[serch]\n", &[]).expect_err("a bad section");
        assert!(e.contains("serch"), "{e}");
    }

    /// The in-memory collections come from the file or, comma-separated,
    /// from the environment, and only the named ones open in memory.
    #[test]
    fn in_memory_collections_are_chosen_by_name() -> Result<(), String> {
        let c = load_str(
            "[search]\nin_memory_collections = [\"docs\"]\nin_memory_bytes_max = 4096\n",
            &[],
        )?;
        assert_eq!(c.search.in_memory_collections, vec!["docs".to_string()]);
        let o = crate::server::open_options(&c, "docs");
        assert!(o.index.in_memory);
        assert_eq!(o.index.in_memory_bytes_max, Some(4096));
        assert!(!crate::server::open_options(&c, "other").index.in_memory);
        let c = load_str("", &[("BASALT_SEARCH_IN_MEMORY_COLLECTIONS", "a, b,")])?;
        assert_eq!(c.search.in_memory_collections, vec!["a".to_string(), "b".to_string()]);
        let o = crate::server::open_options(&c, "b");
        assert!(o.index.in_memory && o.index.in_memory_bytes_max.is_none());
        use crate::search::MemSteer;
        assert_eq!(o.index.in_memory_steer, MemSteer::Sq8);
        let c = load_str(
            "[search]\nin_memory_collections = [\"a\"]\nin_memory_steer = \"exact\"\n",
            &[],
        )?;
        assert_eq!(crate::server::open_options(&c, "a").index.in_memory_steer, MemSteer::Exact);
        let e = load_str("[search]\nin_memory_steer = \"pq\"\n", &[]).expect_err("not a steer");
        assert!(e.contains("pq") && e.contains("sq8"), "{e}");
        Ok(())
    }

    /// The search mode comes from the file or the environment, reaches
    /// every collection's options, and a wrong name is refused.
    #[test]
    fn search_mode_is_a_key() -> Result<(), String> {
        use crate::search::SearchMode;
        let c = load_str("", &[])?;
        assert_eq!(crate::server::open_options(&c, "a").index.search_mode, SearchMode::Pipelined);
        let c = load_str("[search]\nmode = \"rounds\"\n", &[])?;
        assert_eq!(crate::server::open_options(&c, "a").index.search_mode, SearchMode::Rounds);
        let c = load_str("[search]\nmode = \"rounds\"\n", &[("BASALT_SEARCH_MODE", "pipelined")])?;
        assert_eq!(c.search.mode, SearchMode::Pipelined);
        let e = load_str("[search]\nmode = \"fast\"\n", &[]).expect_err("not a mode");
        assert!(e.contains("fast") && e.contains("rounds"), "{e}");
        Ok(())
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() -> Result<(), String> {
        let c = load_str("[search]\nqueue_max = 3\n", &[("BASALT_SEARCH_QUEUE_MAX", "7")])?;
        assert_eq!(c.search.queue_max, 7);
        let c = load_str("", &[])?;
        assert_eq!(c, ServerConfig::default());
        let flags = Overrides { listen: Some("127.0.0.1:1".into()), data_dir: None };
        let env = vec![("BASALT_SERVICE_LISTEN".to_string(), "127.0.0.1:2".to_string())];
        let c = ServerConfig::load(None, &env, &flags)?;
        assert_eq!(c.service.listen, "127.0.0.1:1");
        let e = load_str("", &[("BASALT_SEARCH_QUEUE_MAX", "many")]).expect_err("not a number");
        assert!(e.contains("BASALT_SEARCH_QUEUE_MAX"), "{e}");
        assert_eq!(
            unknown_env(&[("BASALT_SEARCH_QUEUE_MAXX".into(), "1".into())]),
            vec!["BASALT_SEARCH_QUEUE_MAXX".to_string()]
        );
        Ok(())
    }

    #[test]
    fn remote_listen_needs_a_key() -> Result<(), String> {
        let e = load_str("[service]\nlisten = \"0.0.0.0:6333\"\n", &[]).expect_err("no key");
        assert!(e.contains("api_key"), "{e}");
        load_str("[service]\nlisten = \"0.0.0.0:6333\"\napi_key = \"k\"\n", &[])?;
        load_str("[service]\nlisten = \"[::]:6333\"\nallow_remote_without_key = true\n", &[])?;
        load_str("[service]\nlisten = \"[::1]:6333\"\n", &[])?;
        Ok(())
    }

    #[test]
    fn limits_are_checked() {
        let e = load_str("[limits]\nquery_limit_max = 100000\n", &[]).expect_err("over K_MAX");
        assert!(e.contains("limits.query_limit_max"), "{e}");
        let e = load_str("[collections]\ndurability = \"sometimes\"\n", &[]).expect_err("bad");
        assert!(e.contains("durability"), "{e}");
    }

    #[test]
    fn the_shipped_config_is_the_defaults() -> Result<(), String> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/basalt.toml");
        let c = ServerConfig::load(Some(&p), &[], &Overrides::default())?;
        assert_eq!(c, ServerConfig::default(), "configs/basalt.toml drifted from the defaults");
        // And it names every key, so it documents them all.
        let text = std::fs::read_to_string(&p).map_err(|e| e.to_string())?;
        for (s, k, _) in known_keys() {
            assert!(text.contains(&format!("{k} =")), "configs/basalt.toml lacks {s}.{k}");
        }
        Ok(())
    }
}
