//! The HTTP API: Qdrant's REST routes for what a vector store shares with
//! Qdrant (docs/api.md lists them and what differs), plus `/healthz`,
//! `/readyz` and `/metrics`. Handlers never block the runtime: searches go
//! to the search pool, everything that touches a disk or waits for an
//! fsync to a blocking thread (bounded by `service.blocking_threads`).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query as QueryString, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tracing::{debug, error};

use super::AppState;
use super::metrics as m;
use super::wire::{
    self, ApiError, ApiResult, PayloadSel, WaitParams, id_json, no_filter, no_shards, refuse,
};
use crate::collection::WriteAck;
use crate::collection::config::CollectionConfig;
use crate::collection::filter::Filter;
use crate::collection::filtered::FilterMode;
use crate::collection::ids::ExternalId;
use crate::collection::pindex::Schema;
use crate::collection::{Collection, CollectionError, PointIn};
use crate::element::ElementType;
use crate::search::SearchParams;

/// The Qdrant REST API version these routes follow (GET / reports it, so
/// the client's compatibility check passes).
pub const QDRANT_API_VERSION: &str = "1.20.0";

type Shared = Arc<AppState>;

pub fn router(state: Shared) -> Router {
    let body_max = state.cfg.limits.body_bytes_max;
    let in_flight = state.cfg.limits.requests_in_flight_max;
    let api = Router::new()
        .route("/", get(root))
        .route("/collections", get(list_collections))
        .route(
            "/collections/{name}",
            get(get_collection).put(create_collection).delete(delete_collection),
        )
        .route("/collections/{name}/exists", get(collection_exists))
        .route("/collections/{name}/points", axum::routing::put(upsert).post(retrieve))
        .route("/collections/{name}/points/{id}", get(get_point))
        .route("/collections/{name}/points/delete", post(delete_points))
        .route("/collections/{name}/points/count", post(count))
        .route("/collections/{name}/points/scroll", post(scroll))
        .route("/collections/{name}/points/payload", post(set_payload).put(overwrite_payload))
        .route("/collections/{name}/points/query", post(query))
        .route("/collections/{name}/points/query/batch", post(query_batch))
        .route("/collections/{name}/index", axum::routing::put(create_index))
        .route("/collections/{name}/index/{field}", axum::routing::delete(delete_index))
        .route("/collections/{name}/snapshots", get(list_snapshots).post(create_snapshot))
        .route("/collections/{name}/snapshots/{snapshot}", axum::routing::delete(delete_snapshot))
        .route("/metrics", get(metrics))
        .route("/replication", get(replication_status))
        .route("/replication/promote", post(promote))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), auth));
    let app =
        Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).merge(api);
    with_layers(app, state, body_max, in_flight)
}

/// The layers every route runs under: request metrics, a handler panic
/// answered 500 (the daemon stays up), the body limit, the in-flight limit.
fn with_layers(app: Router<Shared>, state: Shared, body_max: usize, in_flight: usize) -> Router {
    app.fallback(fallback)
        .layer(middleware::from_fn(observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(DefaultBodyLimit::max(body_max))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(in_flight))
        .with_state(state)
}

// ---- envelope, errors, middleware ----------------------------------------

fn ok(result: Value, t0: Instant) -> Response {
    let body = json!({"result": result, "status": "ok", "time": t0.elapsed().as_secs_f64()});
    (StatusCode::OK, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            error!(status = self.status, error = %self.msg, "request failed");
        }
        let mut r = (status, axum::Json(json!({"status": {"error": self.msg}, "time": 0.0})))
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

fn panicked(p: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    metrics::counter!(m::HANDLER_PANICS).increment(1);
    error!(panic = %what, "a handler panicked (a bug): answered 500");
    ApiError::internal(format!("internal error (a bug, logged): {what}")).into_response()
}

fn coll_error(e: CollectionError, retry_after: u64) -> ApiError {
    match e {
        CollectionError::Invalid(s) => ApiError::bad(s),
        CollectionError::Batch(b) => ApiError::bad(b.to_string()),
        CollectionError::Search(crate::search::SearchError::Params(s)) => ApiError::bad(s),
        CollectionError::Search(crate::search::SearchError::Query(s)) => ApiError::bad(s),
        CollectionError::Busy(s) => ApiError::unavailable(format!("busy: {s}"), retry_after),
        CollectionError::Poisoned(s) => ApiError::unavailable(
            format!("the collection refuses writes until the daemon restarts: {s}"),
            retry_after,
        ),
        other => ApiError::internal(other.to_string()),
    }
}

/// Records every request (route template, method, status, latency) and
/// logs it at debug level: never a header or a body.
async fn observe(req: Request, next: Next) -> Response {
    let t0 = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let r = next.run(req).await;
    let status = r.status().as_u16();
    let secs = t0.elapsed().as_secs_f64();
    metrics::counter!(m::HTTP_REQUESTS, "route" => route.clone(), "method" => method.to_string(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(m::HTTP_DURATION, "route" => route.clone()).record(secs);
    debug!(%method, %route, status, ms = secs * 1e3, "request");
    r
}

/// The API key, when one is set: `api-key: KEY` or
/// `Authorization: Bearer KEY`, compared in constant time.
async fn auth(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let key = &s.cfg.service.api_key;
    if key.is_empty() {
        return next.run(req).await;
    }
    let given = given_key(req.headers());
    let good = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(key.as_bytes())));
    if !good {
        return ApiError {
            status: 401,
            msg: "a valid api-key header (or Authorization: Bearer) is required".into(),
            retry_after: None,
        }
        .into_response();
    }
    next.run(req).await
}

fn given_key(h: &HeaderMap) -> Option<String> {
    if let Some(v) = h.get("api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.to_string());
    }
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string())
}

async fn fallback(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

/// A body within `limits.body_bytes_max`, or the 413 that says so.
fn body(b: Result<Bytes, BytesRejection>, s: &AppState) -> ApiResult<Bytes> {
    b.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: 413,
                msg: format!(
                    "the request body is larger than limits.body_bytes_max ({} bytes)",
                    s.cfg.limits.body_bytes_max
                ),
                retry_after: None,
            }
        } else {
            ApiError::bad(format!("cannot read the request body: {e}"))
        }
    })
}

fn query_params<T: Default>(q: Result<QueryString<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|QueryString(v)| v).map_err(|e| ApiError::bad(format!("query string: {e}")))
}

/// A standby, or a primary fenced by a newer one, refuses writes.
fn writable(s: &AppState) -> ApiResult<()> {
    match s.repl.write_refusal() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn ready(s: &AppState) -> ApiResult<()> {
    if s.ready.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(ApiError::unavailable(
            "starting: collections are being opened and their WALs replayed",
            s.cfg.search.retry_after_s,
        ))
    }
}

fn collection(s: &AppState, name: &str) -> ApiResult<Arc<Collection>> {
    ready(s)?;
    s.colls.read().get(name).cloned().ok_or_else(|| {
        ApiError::not_found(format!("Not found: Collection `{name}` doesn't exist!"))
    })
}

/// Runs blocking work (disk reads, fsync waits) on a blocking thread, at
/// most `service.blocking_threads` at once (503 past it).
async fn blocking<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let Ok(permit) = Arc::clone(&s.blocking).try_acquire_owned() else {
        return Err(ApiError::unavailable(
            format!(
                "every blocking thread is busy (service.blocking_threads = {})",
                s.cfg.service.blocking_threads
            ),
            s.cfg.search.retry_after_s,
        ));
    };
    match tokio::task::spawn_blocking(move || {
        let r = f();
        drop(permit);
        r
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            metrics::counter!(m::HANDLER_PANICS).increment(1);
            Err(ApiError::internal(format!("internal error (a bug, logged): {e}")))
        }
    }
}

type PoolReply<T> = tokio::sync::oneshot::Receiver<Result<ApiResult<T>, super::pool::JobPanicked>>;

/// Runs a search on the search pool (503 + Retry-After when its queue is
/// full).
async fn on_pool<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let rx = submit(s, f)?;
    pool_reply(s, rx).await
}

/// Queues a search now; its answer comes with [`pool_reply`].
fn submit<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<PoolReply<T>> {
    let rx = s.pool.submit(f).map_err(|_| {
        metrics::counter!(m::QUEUE_REJECTIONS).increment(1);
        ApiError::unavailable(
            format!("the search queue is full (search.queue_max = {})", s.cfg.search.queue_max),
            s.cfg.search.retry_after_s,
        )
    })?;
    metrics::gauge!(m::QUEUE_DEPTH).set(s.pool.depth() as f64);
    Ok(rx)
}

async fn pool_reply<T>(s: &Shared, rx: PoolReply<T>) -> ApiResult<T> {
    match rx.await {
        Ok(Ok(r)) => r,
        Ok(Err(p)) => {
            metrics::counter!(m::HANDLER_PANICS).increment(1);
            error!(panic = %p.0, "a search panicked (a bug): answered 500");
            Err(ApiError::internal(format!("internal error (a bug, logged): {}", p.0)))
        }
        Err(_) => Err(ApiError::unavailable("the daemon is stopping", s.cfg.search.retry_after_s)),
    }
}

// ---- service routes -------------------------------------------------------

async fn root() -> Response {
    axum::Json(json!({
        "title": "basalt: disk-first vector search (Qdrant REST compatible)",
        "version": QDRANT_API_VERSION,
        "basalt_version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "alive"})).into_response()
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.ready.load(Ordering::Acquire) {
        axum::Json(json!({"status": "ready", "collections": s.colls.read().len()})).into_response()
    } else {
        ApiError::unavailable("starting: opening collections", s.cfg.search.retry_after_s)
            .into_response()
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    s.metrics.run_upkeep();
    metrics::gauge!(m::QUEUE_DEPTH).set(s.pool.depth() as f64);
    let mut out = s.metrics.render();
    let colls: Vec<(String, crate::collection::Stats, f64)> =
        s.colls.read().iter().map(|(n, c)| (n.clone(), c.stats(), c.merge_progress())).collect();
    m::render_state(&mut out, &colls, s.ready.load(Ordering::Acquire));
    s.repl.render_metrics(&mut out, &last_lsns(&s));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

// ---- replication ----------------------------------------------------------

fn last_lsns(s: &AppState) -> Vec<(String, u64)> {
    s.colls.read().iter().map(|(n, c)| (n.clone(), c.last_lsn())).collect()
}

async fn replication_status(State(s): State<Shared>) -> ApiResult<Response> {
    let t0 = Instant::now();
    Ok(ok(s.repl.status(&last_lsns(&s)), t0))
}

/// Promotes a standby (`basalt promote` calls this).
async fn promote(State(s): State<Shared>) -> ApiResult<Response> {
    let t0 = Instant::now();
    ready(&s)?;
    let s2 = Arc::clone(&s);
    let r = blocking(&s, move || {
        let _admin = s2.admin.lock();
        super::repl::Replication::promote(&s2)
    })
    .await?;
    Ok(ok(r, t0))
}

// ---- collections ----------------------------------------------------------

async fn list_collections(State(s): State<Shared>) -> ApiResult<Response> {
    let t0 = Instant::now();
    ready(&s)?;
    let names: Vec<Value> = s.colls.read().keys().map(|n| json!({"name": n})).collect();
    Ok(ok(json!({"collections": names}), t0))
}

async fn collection_exists(
    State(s): State<Shared>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    ready(&s)?;
    let exists = s.colls.read().contains_key(&name);
    Ok(ok(json!({"exists": exists}), t0))
}

async fn get_collection(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    Ok(ok(collection_info(&c), t0))
}

fn collection_info(c: &Collection) -> Value {
    let st = c.stats();
    let cfg = c.config();
    let status = if st.last_merge_error.is_some() {
        "red"
    } else if st.merging {
        "yellow"
    } else {
        "green"
    };
    let optimizer = match &st.last_merge_error {
        Some(e) => json!({"error": e}),
        None => json!("ok"),
    };
    let mut vectors =
        json!({"size": cfg.dim, "distance": wire::distance_name(cfg.metric), "on_disk": true});
    if cfg.element == ElementType::U8 {
        vectors["datatype"] = json!("uint8");
    }
    let mut config = json!({
        "params": {
            "vectors": vectors,
            "shard_number": 1, "replication_factor": 1, "write_consistency_factor": 1,
            "on_disk_payload": true,
        },
        "hnsw_config": {"m": cfg.degree_max, "ef_construct": cfg.list_size, "full_scan_threshold": 0, "on_disk": true},
        "optimizer_config": {
            "default_segment_number": 0, "flush_interval_sec": 0,
            "indexing_threshold": cfg.delta_points_merge,
        },
    });
    if cfg.element == ElementType::F32
        && let Some(r) = wire::compression_for(cfg.pq_chunks, cfg.dim as usize)
    {
        config["quantization_config"] = json!({"product": {"compression": r, "always_ram": true}});
    }
    json!({
        "status": status,
        "optimizer_status": optimizer,
        "points_count": st.points,
        "indexed_vectors_count": st.disk_slots - st.disk_free_slots,
        "segments_count": 1 + u64::from(st.delta_points > 0) + u64::from(st.frozen_delta_points > 0),
        "config": config,
        "payload_schema": payload_schema(c),
        "basalt": {
            "element": cfg.element, "pq_bytes": cfg.pq_chunks, "alpha": cfg.alpha,
            "durability": cfg.durability, "stats": st,
        },
    })
}

/// Qdrant's `payload_schema`: each indexed field, its type and entries.
fn payload_schema(c: &Collection) -> Value {
    let mut out = serde_json::Map::new();
    // Entries are counted up to a bound: the collection info stays cheap.
    for (f, schema, n) in c.payload_indexes(SCHEMA_COUNT_MAX).unwrap_or_default() {
        out.insert(f, json!({"data_type": schema.name(), "params": null, "points": n}));
    }
    Value::Object(out)
}

/// Payload index entries counted for the collection info, at most.
const SCHEMA_COUNT_MAX: usize = 1_000_000;

/// A request's filter, parsed (`None` when absent or null).
fn parse_filter(v: &Option<Value>, at: &str) -> ApiResult<Option<Filter>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(f) => Filter::parse(f, at).map(Some).map_err(ApiError::bad),
    }
}

fn check_name(s: &AppState, name: &str) -> ApiResult<()> {
    let max = s.cfg.limits.collection_name_bytes_max;
    if name.is_empty() || name.len() > max {
        return Err(ApiError::bad(format!(
            "collection name of {} bytes: 1..={max} (limits.collection_name_bytes_max)",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(ApiError::bad(format!(
            "collection name {name:?}: {c:?} is not allowed (letters, digits, '_' and '-')"
        )));
    }
    Ok(())
}

/// The collection config a create request asks for (nothing written).
fn create_config(s: &AppState, req: wire::CreateCollection) -> ApiResult<CollectionConfig> {
    if req.vectors.is_object() && req.vectors.get("size").is_none() {
        return Err(ApiError::bad(
            "vectors: named vectors are not supported (give {\"size\": N, \"distance\": ...})",
        ));
    }
    let v: wire::VectorParams =
        serde_json::from_value(req.vectors).map_err(|e| ApiError::bad(format!("vectors: {e}")))?;
    refuse(
        "vectors.hnsw_config",
        &v.hnsw_config,
        "per-vector HNSW config is not supported: use hnsw_config",
    )?;
    refuse("vectors.quantization_config", &v.quantization_config, "use quantization_config")?;
    refuse("vectors.multivector_config", &v.multivector_config, "multivectors are not supported")?;
    no_shards("sharding_method", &req.sharding_method)?;
    refuse(
        "wal_config",
        &req.wal_config,
        "the WAL is configured per daemon (configs/basalt.toml)",
    )?;
    refuse(
        "optimizers_config",
        &req.optimizers_config,
        "merges are configured by [collections] in the daemon's config",
    )?;
    refuse("init_from", &req.init_from, "not supported")?;
    refuse("sparse_vectors", &req.sparse_vectors, "sparse vectors are not supported")?;
    refuse("strict_mode_config", &req.strict_mode_config, "not supported")?;
    refuse("metadata", &req.metadata, "not supported")?;
    for (field, v) in [
        ("shard_number", req.shard_number),
        ("replication_factor", req.replication_factor),
        ("write_consistency_factor", req.write_consistency_factor),
    ] {
        if v.is_some_and(|n| n != 1) {
            return Err(ApiError::bad(format!("{field}: basalt is one node: only 1")));
        }
    }
    if v.on_disk == Some(false) {
        return Err(ApiError::bad(
            "vectors.on_disk: false is not supported (vectors live on disk)",
        ));
    }
    if req.on_disk_payload == Some(false) {
        return Err(ApiError::bad(
            "on_disk_payload: false is not supported (payloads live on disk)",
        ));
    }
    let metric = wire::metric_from_distance(&v.distance)?;
    let element = match v.datatype.as_deref() {
        None | Some("float32") => ElementType::F32,
        Some("uint8") => ElementType::U8,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "vectors.datatype: {other:?} is not supported (float32 or uint8)"
            )));
        }
    };
    let dim = u32::try_from(v.size)
        .map_err(|_| ApiError::bad(format!("vectors.size {} is too large", v.size)))?;
    let mut c = CollectionConfig::new(dim, metric, element);
    super::config::apply_defaults(&mut c, &s.cfg.collections);
    let h = req.hnsw_config.unwrap_or_default();
    refuse("hnsw_config.full_scan_threshold", &h.full_scan_threshold, "not supported")?;
    refuse(
        "hnsw_config.max_indexing_threads",
        &h.max_indexing_threads,
        "not supported (merges use every core)",
    )?;
    refuse("hnsw_config.payload_m", &h.payload_m, "not supported")?;
    refuse(
        "hnsw_config.inline_storage",
        &h.inline_storage,
        "not supported (records always hold the vector)",
    )?;
    if h.on_disk == Some(false) {
        return Err(ApiError::bad(
            "hnsw_config.on_disk: false is not supported (the graph lives on disk)",
        ));
    }
    if let Some(m) = h.m {
        c.degree_max = m as usize;
    }
    if let Some(l) = h.ef_construct {
        c.list_size = l as usize;
    }
    if let Some(q) = req.quantization_config
        && !q.is_null()
    {
        let pq: wire::ProductQuantization = serde_json::from_value(q).map_err(|e| {
            ApiError::bad(format!(
                "quantization_config: only product quantization is supported ({e})"
            ))
        })?;
        if pq.product.always_ram == Some(false) {
            return Err(ApiError::bad(
                "quantization_config.product.always_ram: false is not supported (PQ codes steer the search from RAM)",
            ));
        }
        c.pq_chunks = wire::pq_bytes_for(&pq.product.compression, dim as usize)?;
    }
    if c.pq_chunks > dim as usize {
        c.pq_chunks = dim as usize;
    }
    c.validate().map_err(ApiError::bad)?;
    Ok(c)
}

async fn create_collection(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    ready(&s)?;
    writable(&s)?;
    let _ = query_params(q)?;
    let b = body(b, &s)?;
    check_name(&s, &name)?;
    let req: wire::CreateCollection = wire::parse(&b)?;
    let cfg = create_config(&s, req)?;
    let s2 = Arc::clone(&s);
    blocking(&s, move || {
        let _admin = s2.admin.lock();
        if s2.colls.read().contains_key(&name) {
            return Err(ApiError {
                status: 409,
                msg: format!("Wrong input: Collection `{name}` already exists!"),
                retry_after: None,
            });
        }
        let max = s2.cfg.limits.collections_max;
        if s2.colls.read().len() >= max {
            return Err(ApiError::bad(format!(
                "{max} collections exist: limits.collections_max is {max}"
            )));
        }
        let dir = s2.data_dir().join(&name);
        if dir.exists() {
            return Err(ApiError::internal(format!(
                "{} exists but is not an open collection: move it away",
                dir.display()
            )));
        }
        // Build it beside, then rename: a crash never leaves half a collection.
        let tmp = s2.data_dir().join(format!("{}{name}", super::CREATING_PREFIX));
        let _ = std::fs::remove_dir_all(&tmp);
        Collection::create(&tmp, &cfg).map_err(|e| coll_error(e, 1))?;
        std::fs::rename(&tmp, &dir)
            .map_err(|e| ApiError::internal(format!("renaming {}: {e}", tmp.display())))?;
        crate::fsutil::sync_dir(s2.data_dir())
            .map_err(|e| ApiError::internal(format!("syncing {}: {e}", s2.data_dir().display())))?;
        let c = Collection::open(&dir, super::open_options(&s2.cfg, &name))
            .map_err(|e| coll_error(e, 1))?;
        s2.colls.write().insert(name.clone(), c);
        tracing::info!(collection = %name, dim = cfg.dim, metric = %cfg.metric, "created");
        Ok(())
    })
    .await?;
    Ok(ok(json!(true), t0))
}

async fn delete_collection(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    ready(&s)?;
    writable(&s)?;
    let _ = query_params(q)?;
    let s2 = Arc::clone(&s);
    let found = blocking(&s, move || {
        let _admin = s2.admin.lock();
        let Some(c) = s2.colls.write().remove(&name) else { return Ok(false) };
        let dir = c.dir().to_path_buf();
        // Searches holding it finish on open files; the rename makes the
        // delete atomic, the removal may be finished by the next start.
        let gone = s2.data_dir().join(format!("{}{name}", super::DELETING_PREFIX));
        std::fs::rename(&dir, &gone)
            .map_err(|e| ApiError::internal(format!("renaming {}: {e}", dir.display())))?;
        crate::fsutil::sync_dir(s2.data_dir())
            .map_err(|e| ApiError::internal(format!("syncing {}: {e}", s2.data_dir().display())))?;
        c.close();
        if let Err(e) = std::fs::remove_dir_all(&gone) {
            tracing::warn!(dir = %gone.display(), error = %e, "removing a deleted collection: retried at the next start");
        }
        tracing::info!(collection = %name, "deleted");
        Ok(true)
    })
    .await?;
    Ok(ok(json!(found), t0))
}

// ---- points ---------------------------------------------------------------

fn ids_list(s: &AppState, ids: &[Value], what: &str) -> ApiResult<Vec<ExternalId>> {
    let max = s.cfg.limits.upsert_points_max;
    if ids.is_empty() {
        return Err(ApiError::bad(format!("{what}: no ids")));
    }
    if ids.len() > max {
        return Err(ApiError::bad(format!(
            "{what}: {} ids, more than limits.upsert_points_max ({max})",
            ids.len()
        )));
    }
    ids.iter().enumerate().map(|(i, v)| wire::parse_id(v, &format!("{what}[{i}]"))).collect()
}

fn check_payload(s: &AppState, p: &Value, what: &str) -> ApiResult<()> {
    match p {
        Value::Object(_) => {}
        Value::Null => return Ok(()),
        other => {
            return Err(ApiError::bad(format!(
                "{what}: a payload is a JSON object, not {}",
                wire::type_name(other)
            )));
        }
    }
    let n = serde_json::to_string(p).map_or(usize::MAX, |t| t.len());
    let max = s.cfg.limits.payload_bytes_max;
    if n > max {
        return Err(ApiError::bad(format!(
            "{what}: a payload of {n} bytes, more than limits.payload_bytes_max ({max})"
        )));
    }
    Ok(())
}

fn upsert_points(s: &AppState, req: wire::Upsert) -> ApiResult<Vec<PointIn>> {
    no_shards("shard_key", &req.shard_key)?;
    refuse("update_filter", &req.update_filter, "conditional upserts are not supported")?;
    let mut out = Vec::new();
    match (req.points, req.batch) {
        (Some(points), None) => {
            check_count(s, points.len())?;
            for (i, p) in points.into_iter().enumerate() {
                let what = format!("points[{i}]");
                let id = wire::parse_id(&p.id, &what)?;
                let vector = wire::parse_vector(&p.vector, &format!("{what}.vector"))?;
                let payload = p.payload.unwrap_or(Value::Null);
                check_payload(s, &payload, &format!("{what}.payload"))?;
                out.push(PointIn { id, vector, payload: (!payload.is_null()).then_some(payload) });
            }
        }
        (None, Some(b)) => {
            check_count(s, b.ids.len())?;
            let Value::Array(vectors) = b.vectors else {
                return Err(ApiError::bad(
                    "batch.vectors: an array of vectors (named vectors are not supported)",
                ));
            };
            if vectors.len() != b.ids.len() {
                return Err(ApiError::bad(format!(
                    "batch: {} ids but {} vectors",
                    b.ids.len(),
                    vectors.len()
                )));
            }
            if let Some(p) = &b.payloads
                && p.len() != b.ids.len()
            {
                return Err(ApiError::bad(format!(
                    "batch: {} ids but {} payloads",
                    b.ids.len(),
                    p.len()
                )));
            }
            for (i, (idv, v)) in b.ids.iter().zip(&vectors).enumerate() {
                let id = wire::parse_id(idv, &format!("batch.ids[{i}]"))?;
                let vector = wire::parse_vector(v, &format!("batch.vectors[{i}]"))?;
                let payload = b.payloads.as_ref().map_or(Value::Null, |p| p[i].clone());
                check_payload(s, &payload, &format!("batch.payloads[{i}]"))?;
                out.push(PointIn { id, vector, payload: (!payload.is_null()).then_some(payload) });
            }
        }
        (Some(_), Some(_)) => return Err(ApiError::bad("give points or batch, not both")),
        (None, None) => return Err(ApiError::bad("give points (a list) or batch")),
    }
    let mut seen = HashSet::with_capacity(out.len());
    for (i, p) in out.iter().enumerate() {
        if !seen.insert(&p.id) {
            return Err(ApiError::bad(format!(
                "point {i}: id {} appears more than once in the batch",
                p.id
            )));
        }
    }
    Ok(out)
}

fn check_count(s: &AppState, n: usize) -> ApiResult<()> {
    let max = s.cfg.limits.upsert_points_max;
    if n == 0 {
        return Err(ApiError::bad("no points"));
    }
    if n > max {
        return Err(ApiError::bad(format!(
            "{n} points, more than limits.upsert_points_max ({max})"
        )));
    }
    Ok(())
}

fn update_result(lsn: u64) -> Value {
    json!({"operation_id": lsn, "status": "completed"})
}

async fn upsert(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    writable(&s)?;
    wire::check_wait(&query_params(q)?)?;
    let b = body(b, &s)?;
    let req: wire::Upsert = wire::parse(&b)?;
    drop(b);
    let points = upsert_points(&s, req)?;
    let retry = s.cfg.search.retry_after_s;
    let s2 = Arc::clone(&s);
    let ack = blocking(&s, move || {
        let ack = c.upsert(&points).map_err(|e| coll_error(e, retry))?;
        s2.repl.wait_sync(&name, c.uid(), ack.lsn)?;
        Ok(ack)
    })
    .await?;
    metrics::counter!(m::UPSERTED_POINTS).increment(ack.points as u64);
    Ok(ok(update_result(ack.lsn), t0))
}

async fn delete_points(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    writable(&s)?;
    wire::check_wait(&query_params(q)?)?;
    let b = body(b, &s)?;
    let req: wire::DeletePoints = wire::parse(&b)?;
    no_shards("shard_key", &req.shard_key)?;
    let filter = parse_filter(&req.filter, "filter")?;
    let retry = s.cfg.search.retry_after_s;
    let s2 = Arc::clone(&s);
    let ack = match (req.points, filter) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad("points and filter: give one of them, not both"));
        }
        (None, None) => return Err(ApiError::bad("points: the ids to delete (or a filter)")),
        (Some(points), None) => {
            let ids = ids_list(&s, &points, "points")?;
            blocking(&s, move || {
                let ack = c.delete(&ids).map_err(|e| coll_error(e, retry))?;
                s2.repl.wait_sync(&name, c.uid(), ack.lsn)?;
                Ok(ack)
            })
            .await?
        }
        (None, Some(f)) => {
            blocking(&s, move || {
                let ack = c.delete_by_filter(&f).map_err(|e| coll_error(e, retry))?;
                let ack = ack.unwrap_or(WriteAck { lsn: c.last_lsn(), points: 0 });
                s2.repl.wait_sync(&name, c.uid(), ack.lsn)?;
                Ok(ack)
            })
            .await?
        }
    };
    metrics::counter!(m::DELETED_POINTS).increment(ack.points as u64);
    Ok(ok(update_result(ack.lsn), t0))
}

fn record(
    c: &Collection,
    id: &ExternalId,
    sel: &PayloadSel,
    with_vector: bool,
) -> ApiResult<Option<Value>> {
    let Some(p) = c.get_with(id, with_vector).map_err(|e| coll_error(e, 1))? else {
        return Ok(None);
    };
    let mut r = json!({"id": id_json(&p.id)});
    if sel.wanted() {
        r["payload"] = sel.apply(p.payload.as_deref())?;
    }
    if with_vector {
        r["vector"] = json!(p.vector);
    }
    Ok(Some(r))
}

async fn retrieve(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    let _ = query_params(q)?;
    let b = body(b, &s)?;
    let req: wire::Retrieve = wire::parse(&b)?;
    no_shards("shard_key", &req.shard_key)?;
    let ids = ids_list(&s, &req.ids, "ids")?;
    let sel = PayloadSel::parse(&req.with_payload, true)?;
    let with_vector = wire::parse_with_vector(&req.with_vector)?;
    let out = blocking(&s, move || {
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(r) = record(&c, id, &sel, with_vector)? {
                out.push(r);
            }
        }
        Ok(out)
    })
    .await?;
    Ok(ok(Value::Array(out), t0))
}

async fn get_point(
    State(s): State<Shared>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    let id = ExternalId::parse_cli(&id).map_err(|e| ApiError::bad(format!("id {id:?}: {e}")))?;
    let shown = id.to_string();
    let r = blocking(&s, move || record(&c, &id, &PayloadSel::All, true)).await?;
    match r {
        Some(r) => Ok(ok(r, t0)),
        None => Err(ApiError::not_found(format!("No point with id {shown} found"))),
    }
}

async fn count(
    State(s): State<Shared>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    let b = body(b, &s)?;
    let req: wire::Count = if b.is_empty() { wire::Count::default() } else { wire::parse(&b)? };
    no_shards("shard_key", &req.shard_key)?;
    // Exact either way: the count is kept (or counted), not estimated.
    let _ = req.exact;
    let n = match parse_filter(&req.filter, "filter")? {
        None => c.count(),
        Some(f) => blocking(&s, move || c.count_filtered(&f).map_err(|e| coll_error(e, 1))).await?,
    };
    Ok(ok(json!({"count": n}), t0))
}

async fn scroll(
    State(s): State<Shared>,
    Path(name): Path<String>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    let b = body(b, &s)?;
    let req: wire::Scroll = if b.is_empty() { wire::Scroll::default() } else { wire::parse(&b)? };
    let filter = parse_filter(&req.filter, "filter")?;
    refuse(
        "order_by",
        &req.order_by,
        "ordering by a payload key is not supported (ids are in order)",
    )?;
    no_shards("shard_key", &req.shard_key)?;
    let max = s.cfg.limits.scroll_limit_max;
    let limit = req.limit.unwrap_or(10);
    if limit == 0 || limit > max as u64 {
        return Err(ApiError::bad(format!("limit {limit}: 1..={max} (limits.scroll_limit_max)")));
    }
    let offset = match &req.offset {
        None | Some(Value::Null) => None,
        Some(v) => Some(wire::parse_id(v, "offset")?),
    };
    let sel = PayloadSel::parse(&req.with_payload, true)?;
    let with_vector = wire::parse_with_vector(&req.with_vector)?;
    let (points, next) = blocking(&s, move || {
        let e = |e| coll_error(e, 1);
        // Qdrant's offset is the first id of the page (inclusive).
        let page = |after: Option<&ExternalId>, n: usize| match &filter {
            None => c.scroll(after, n),
            Some(f) => c.scroll_filtered(after, n, f),
        };
        let mut ids = Vec::with_capacity(limit as usize);
        if let Some(o) = &offset {
            let take = match &filter {
                None => c.get_with(o, false).map_err(e)?.is_some(),
                Some(f) => c.passes(o, f).map_err(e)?,
            };
            if take {
                ids.push(o.clone());
            }
        }
        let rest = limit as usize - ids.len();
        if rest > 0 {
            ids.extend(page(offset.as_ref(), rest).map_err(e)?);
        }
        let next = match ids.last() {
            Some(last) if ids.len() == limit as usize => page(Some(last), 1).map_err(e)?.pop(),
            _ => None,
        };
        let mut points = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(r) = record(&c, id, &sel, with_vector)? {
                points.push(r);
            }
        }
        Ok((points, next))
    })
    .await?;
    Ok(ok(json!({"points": points, "next_page_offset": next.as_ref().map(id_json)}), t0))
}

async fn set_payload(
    state: State<Shared>,
    path: Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    payload_write(state, path, q, b, false).await
}

async fn overwrite_payload(
    state: State<Shared>,
    path: Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    payload_write(state, path, q, b, true).await
}

/// Sets (merges keys into) or overwrites the payload of existing points:
/// each point is read and upserted again with its vector, in one batch
/// (one WAL record). A missing id fails the whole request, changing nothing.
async fn payload_write(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
    overwrite: bool,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    writable(&s)?;
    wire::check_wait(&query_params(q)?)?;
    let b = body(b, &s)?;
    let req: wire::SetPayload = wire::parse(&b)?;
    no_filter("filter", &req.filter, "selecting points")?;
    refuse("key", &req.key, "nested payload keys are not supported")?;
    no_shards("shard_key", &req.shard_key)?;
    let Value::Object(new) = req.payload else {
        return Err(ApiError::bad("payload: a JSON object"));
    };
    let Some(points) = req.points else {
        return Err(ApiError::bad("points: the ids whose payload to set"));
    };
    let ids = ids_list(&s, &points, "points")?;
    let max = s.cfg.limits.payload_bytes_max;
    let retry = s.cfg.search.retry_after_s;
    let s2 = Arc::clone(&s);
    let ack = blocking(&s, move || {
        let mut ups = Vec::with_capacity(ids.len());
        let mut seen = HashSet::new();
        for id in &ids {
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(p) = c.get_with(id, true).map_err(|e| coll_error(e, retry))? else {
                return Err(ApiError::not_found(format!("No point with id {id} found")));
            };
            let mut obj = match (&p.payload, overwrite) {
                (Some(text), false) => match serde_json::from_str(text) {
                    Ok(Value::Object(m)) => m,
                    _ => return Err(ApiError::internal("a stored payload is not a JSON object")),
                },
                _ => serde_json::Map::new(),
            };
            for (k, v) in &new {
                obj.insert(k.clone(), v.clone());
            }
            let payload = Value::Object(obj);
            let n = serde_json::to_string(&payload).map_or(usize::MAX, |t| t.len());
            if n > max {
                return Err(ApiError::bad(format!(
                    "point {id}: the payload would be {n} bytes, more than limits.payload_bytes_max ({max})"
                )));
            }
            ups.push(PointIn { id: id.clone(), vector: p.vector, payload: Some(payload) });
        }
        let ack = c.upsert(&ups).map_err(|e| coll_error(e, retry))?;
        s2.repl.wait_sync(&name, c.uid(), ack.lsn)?;
        Ok(ack)
    })
    .await?;
    Ok(ok(update_result(ack.lsn), t0))
}

// ---- snapshots ------------------------------------------------------------

fn snapshots_dir(s: &AppState, name: &str) -> std::path::PathBuf {
    s.cfg.service.snapshots_dir.join(name)
}

/// Qdrant's snapshot description of a snapshot directory.
fn describe_snapshot(path: &std::path::Path) -> Option<Value> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    if name.starts_with('.') || name.ends_with(".partial") {
        return None;
    }
    let meta = std::fs::metadata(path).ok()?;
    let created = meta.modified().ok().map(|t| {
        let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format_utc(secs)
    });
    let size = dir_bytes(path);
    Some(json!({"name": name, "creation_time": created, "size": size}))
}

fn dir_bytes(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// `YYYY-MM-DDTHH:MM:SS` of Unix seconds (UTC).
fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn list_snapshot_dirs(dir: &std::path::Path) -> Vec<Value> {
    let mut out: Vec<Value> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| describe_snapshot(&e.path())).collect())
        .unwrap_or_default();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    out
}

async fn list_snapshots(State(s): State<Shared>, Path(name): Path<String>) -> ApiResult<Response> {
    let t0 = Instant::now();
    collection(&s, &name)?;
    let dir = snapshots_dir(&s, &name);
    let out = blocking(&s, move || Ok(list_snapshot_dirs(&dir))).await?;
    Ok(ok(Value::Array(out), t0))
}

/// Writes a snapshot (a directory that opens as a collection) while the
/// collection keeps taking writes; merges wait for it.
async fn create_snapshot(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    wire::check_wait(&query_params(q)?)?;
    let dir = snapshots_dir(&s, &name);
    let max = s.cfg.limits.snapshots_per_collection_max;
    let desc = blocking(&s, move || {
        let have = list_snapshot_dirs(&dir).len();
        if have >= max {
            return Err(ApiError::bad(format!(
                "{have} snapshots of {name} exist: limits.snapshots_per_collection_max is {max}; delete old ones"
            )));
        }
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let dest = dir.join(format!("{name}-{ms}"));
        let r = c.snapshot(&dest).map_err(|e| coll_error(e, 1))?;
        tracing::info!(collection = %name, dir = %dest.display(), lsn = r.lsn_at_least,
                       bytes = r.bytes, seconds = r.seconds, "snapshot written");
        describe_snapshot(&dest).ok_or_else(|| ApiError::internal("the snapshot vanished"))
    })
    .await?;
    Ok(ok(desc, t0))
}

async fn delete_snapshot(
    State(s): State<Shared>,
    Path((name, snap)): Path<(String, String)>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    collection(&s, &name)?;
    wire::check_wait(&query_params(q)?)?;
    // A plain name of one of this collection's snapshots, nothing else.
    if snap.is_empty()
        || snap.starts_with('.')
        || snap.contains('/')
        || !snap.starts_with(&format!("{name}-"))
    {
        return Err(ApiError::bad(format!("{snap:?} is not a snapshot name of {name}")));
    }
    let path = snapshots_dir(&s, &name).join(&snap);
    blocking(&s, move || {
        if !path.is_dir() {
            return Err(ApiError::not_found(format!("no snapshot {snap}")));
        }
        std::fs::remove_dir_all(&path)
            .map_err(|e| ApiError::internal(format!("removing {}: {e}", path.display())))?;
        Ok(())
    })
    .await?;
    Ok(ok(json!(true), t0))
}

// ---- payload indexes -------------------------------------------------------

async fn create_index(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    writable(&s)?;
    wire::check_wait(&query_params(q)?)?;
    let b = body(b, &s)?;
    let req: wire::CreateIndex = wire::parse(&b)?;
    let schema = match &req.field_schema {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Object(o)) => match o.get("type").and_then(Value::as_str) {
            Some(t) => {
                if let Some(k) = o.keys().find(|k| {
                    *k != "type" && *k != "on_disk" && *k != "is_tenant" && *k != "is_principal"
                }) {
                    return Err(ApiError::bad(format!("field_schema.{k}: not supported")));
                }
                t.to_string()
            }
            None => return Err(ApiError::bad("field_schema.type: required")),
        },
        _ => {
            return Err(ApiError::bad(
                "field_schema: one of keyword, integer, float, bool, uuid, datetime",
            ));
        }
    };
    let schema = Schema::parse(&schema).ok_or_else(|| {
        ApiError::bad(format!(
            "field_schema {schema:?}: basalt indexes keyword, integer, float, bool, uuid, datetime"
        ))
    })?;
    let field = req.field_name;
    let retry = s.cfg.search.retry_after_s;
    let s2 = Arc::clone(&s);
    let ack = blocking(&s, move || {
        let ack = c.create_payload_index(&field, schema).map_err(|e| coll_error(e, retry))?;
        s2.repl.wait_sync(&name, c.uid(), ack.lsn)?;
        Ok(ack)
    })
    .await?;
    Ok(ok(update_result(ack.lsn), t0))
}

async fn delete_index(
    State(s): State<Shared>,
    Path((name, field)): Path<(String, String)>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    writable(&s)?;
    wire::check_wait(&query_params(q)?)?;
    let retry = s.cfg.search.retry_after_s;
    let s2 = Arc::clone(&s);
    let ack = blocking(&s, move || {
        let ack = c.drop_payload_index(&field).map_err(|e| coll_error(e, retry))?;
        s2.repl.wait_sync(&name, c.uid(), ack.lsn)?;
        Ok(ack)
    })
    .await?;
    Ok(ok(update_result(ack.lsn), t0))
}

// ---- search ---------------------------------------------------------------

/// A checked query, ready for a search thread.
struct Planned {
    vector: Option<Vec<f32>>,
    /// Query by a stored point's id (its vector is read on the thread).
    by_id: Option<ExternalId>,
    params: SearchParams,
    offset: usize,
    limit: usize,
    sel: PayloadSel,
    with_vector: bool,
    threshold: Option<f32>,
    filter: Option<Filter>,
    mode: FilterMode,
}

fn plan(s: &AppState, q: wire::Query, what: &str) -> ApiResult<Planned> {
    let f = |name: &str| format!("{what}{name}");
    let filter = parse_filter(&q.filter, &f("filter"))?;
    refuse(&f("using"), &q.using, "named vectors are not supported")?;
    refuse(&f("prefetch"), &q.prefetch, "prefetch (hybrid queries) is not supported")?;
    refuse(&f("lookup_from"), &q.lookup_from, "not supported")?;
    no_shards(&f("shard_key"), &q.shard_key)?;
    let (vector, by_id) = match q.query {
        None | Some(Value::Null) => {
            return Err(ApiError::bad(format!(
                "{}: a vector (or {{\"nearest\": vector}}) is required",
                f("query")
            )));
        }
        Some(Value::Object(mut o)) => match o.remove("nearest") {
            Some(n) if o.is_empty() => match n {
                Value::Array(_) => (Some(wire::parse_vector(&n, &f("query.nearest"))?), None),
                id => (None, Some(wire::parse_id(&id, &f("query.nearest"))?)),
            },
            _ => {
                let kind = o.keys().next().cloned().unwrap_or_default();
                return Err(ApiError::bad(format!(
                    "{}: only nearest-vector queries are supported, not {kind:?}",
                    f("query")
                )));
            }
        },
        Some(v @ Value::Array(_)) => (Some(wire::parse_vector(&v, &f("query"))?), None),
        Some(id) => (None, Some(wire::parse_id(&id, &f("query"))?)),
    };
    let limit = q.limit.unwrap_or(10);
    let offset = q.offset.unwrap_or(0);
    let max = s.cfg.limits.query_limit_max as u64;
    if limit == 0 || limit.saturating_add(offset) > max {
        return Err(ApiError::bad(format!(
            "{}: limit {limit} + offset {offset} must be 1..={max} (limits.query_limit_max)",
            f("limit")
        )));
    }
    let k = (limit + offset) as usize;
    let p = q.params.unwrap_or_default();
    let mode = if p.exact == Some(true) { FilterMode::Exact } else { FilterMode::Auto };
    if p.indexed_only == Some(true) {
        return Err(ApiError::bad(format!("{}: not supported", f("params.indexed_only"))));
    }
    refuse(
        &f("params.quantization"),
        &p.quantization,
        "not supported (PQ steers, full vectors always rerank)",
    )?;
    refuse(&f("params.acorn"), &p.acorn, "not supported")?;
    refuse(&f("params.idf"), &p.idf, "not supported")?;
    // Qdrant's ef is at least the limit; so is L.
    let list_size = p.hnsw_ef.map_or(s.cfg.search.list_size_default, |e| e as usize).max(k);
    let beam_width = p.beam_width.map_or(s.cfg.search.beam_width_default, |w| w as usize);
    let mut params = SearchParams { k, list_size, beam_width };
    params.validate().map_err(|e| ApiError::bad(format!("{}: {e}", f("params"))))?;
    if by_id.is_some() {
        // The point itself is skipped from the answer: ask for one more.
        params.k = (params.k + 1).min(crate::search::K_MAX);
        params.list_size = params.list_size.max(params.k);
    }
    if let Some(t) = q.score_threshold
        && !t.is_finite()
    {
        return Err(ApiError::bad(format!("{}: not a finite number", f("score_threshold"))));
    }
    Ok(Planned {
        vector,
        by_id,
        params,
        offset: offset as usize,
        limit: limit as usize,
        sel: PayloadSel::parse(&q.with_payload, false)?,
        with_vector: wire::parse_with_vector(&q.with_vector)?,
        threshold: q.score_threshold,
        filter,
        mode,
    })
}

/// Runs one planned query (on a search thread).
fn run_query(c: &Collection, name: &str, p: Planned) -> ApiResult<Value> {
    let t0 = Instant::now();
    let e = |e| coll_error(e, 1);
    let vector = match (p.vector, &p.by_id) {
        (Some(v), _) => v,
        (None, Some(id)) => match c.get_with(id, true).map_err(e)? {
            Some(pt) => pt.vector,
            None => return Err(ApiError::not_found(format!("query: no point with id {id}"))),
        },
        (None, None) => return Err(ApiError::bad("query: no vector")),
    };
    let (hits, stats, fs) = c
        .search_filtered(&vector, &p.params, p.sel.wanted(), p.filter.as_ref(), p.mode)
        .map_err(e)?;
    let secs = t0.elapsed().as_secs_f64();
    let labels = [("collection", name.to_string())];
    if p.filter.is_some() || p.mode != FilterMode::Auto {
        let plan = [("collection", name.to_string()), ("plan", fs.plan.to_string())];
        metrics::counter!(m::FILTER_PLANS, &plan).increment(1);
        metrics::histogram!(m::FILTER_PAYLOAD_CHECKS, &labels).record(fs.payload_checks as f64);
    }
    metrics::histogram!(m::SEARCH_DURATION, &labels).record(secs);
    metrics::histogram!(m::SEARCH_READS, &labels).record(stats.sector_reads as f64);
    metrics::histogram!(m::SEARCH_ROUNDS, &labels).record(stats.rounds as f64);
    metrics::counter!(m::SEARCHES, &labels).increment(1);
    let metric = c.config().metric;
    let mut out = Vec::with_capacity(p.limit);
    for h in hits.into_iter().skip(p.offset) {
        // A query by id does not return the point itself (as Qdrant).
        if p.by_id.as_ref() == Some(&h.id) {
            continue;
        }
        let sc = wire::score(metric, h.distance);
        if !wire::passes(metric, sc, p.threshold) {
            break;
        }
        let mut r = json!({"id": id_json(&h.id), "version": 0, "score": sc});
        if p.sel.wanted() {
            r["payload"] = p.sel.apply(h.payload.as_deref())?;
        }
        if p.with_vector {
            // The stored vector (cosine: normalised); gone if deleted meanwhile.
            r["vector"] =
                c.get_with(&h.id, true).map_err(e)?.map_or(Value::Null, |pt| json!(pt.vector));
        }
        out.push(r);
        if out.len() == p.limit {
            break;
        }
    }
    // basalt's own per-query statistics, beside Qdrant's fields (clients
    // ignore what they do not know).
    let mut basalt = json!({
        "sector_reads": stats.sector_reads, "rounds": stats.rounds,
        "cache_hits": stats.cache_hits, "io_us": stats.io_us, "cpu_us": stats.cpu_us,
    });
    if p.filter.is_some() || p.mode != FilterMode::Auto {
        basalt["filter"] = json!(fs);
    }
    Ok(json!({"points": out, "basalt": basalt}))
}

async fn query(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    let qs = query_params(q)?;
    let b = body(b, &s)?;
    let req: wire::Query = wire::parse(&b)?;
    let planned = plan(&s, req, "")?;
    let fut = on_pool(&s, move || run_query(&c, &name, planned));
    let r = with_timeout(qs.timeout, fut).await?;
    Ok(ok(r, t0))
}

async fn with_timeout<T>(
    secs: Option<u64>,
    f: impl std::future::Future<Output = ApiResult<T>>,
) -> ApiResult<T> {
    match secs {
        None => f.await,
        Some(t) => {
            tokio::time::timeout(std::time::Duration::from_secs(t), f).await.map_err(|_| {
                ApiError {
                    status: 504,
                    msg: format!("timeout: no answer within {t} s"),
                    retry_after: None,
                }
            })?
        }
    }
}

async fn query_batch(
    State(s): State<Shared>,
    Path(name): Path<String>,
    q: Result<QueryString<WaitParams>, QueryRejection>,
    b: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let t0 = Instant::now();
    let c = collection(&s, &name)?;
    let qs = query_params(q)?;
    let b = body(b, &s)?;
    let req: wire::QueryBatch = wire::parse(&b)?;
    let max = s.cfg.limits.query_batch_max;
    if req.searches.is_empty() || req.searches.len() > max {
        return Err(ApiError::bad(format!(
            "searches: {} queries; 1..={max} (limits.query_batch_max)",
            req.searches.len()
        )));
    }
    let mut planned = Vec::with_capacity(req.searches.len());
    for (i, q) in req.searches.into_iter().enumerate() {
        planned.push(plan(&s, q, &format!("searches[{i}]."))?);
    }
    // Every query on the pool at once (they run in parallel); all or none.
    let mut rxs = Vec::with_capacity(planned.len());
    for p in planned {
        let c = Arc::clone(&c);
        let name = name.clone();
        rxs.push(submit(&s, move || run_query(&c, &name, p))?);
    }
    let all = async {
        let mut out = Vec::with_capacity(rxs.len());
        for rx in rxs {
            out.push(pool_reply(&s, rx).await?);
        }
        Ok(out)
    };
    let out = with_timeout(qs.timeout, all).await?;
    Ok(ok(Value::Array(out), t0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn state(cfg: super::super::config::ServerConfig) -> Shared {
        let data = tempfile::tempdir().expect("tempdir").keep();
        let repl = super::super::repl::Replication::load(&cfg.replication, &data).expect("repl");
        Arc::new(AppState {
            repl,
            colls: parking_lot::RwLock::new(Default::default()),
            pool: super::super::pool::SearchPool::new(1, 4).expect("pool"),
            ready: std::sync::atomic::AtomicBool::new(true),
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            admin: parking_lot::Mutex::new(()),
            blocking: Arc::new(tokio::sync::Semaphore::new(2)),
            cfg,
        })
    }

    #[tokio::test]
    async fn a_handler_panic_is_a_500_and_the_router_keeps_serving() {
        async fn buggy() -> Response {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 3;
            format!("{}", v[i]).into_response()
        }
        let st = state(Default::default());
        let app = with_layers(
            Router::new().route("/bug", get(buggy)).route("/healthz", get(healthz)),
            st,
            1 << 20,
            8,
        );
        let r = app
            .clone()
            .oneshot(Request::builder().uri("/bug").body(axum::body::Body::empty()).expect("req"))
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        let v: Value = serde_json::from_slice(&b).expect("json");
        assert!(
            v["status"]["error"].as_str().is_some_and(|e| e.contains("index out of bounds")),
            "{v}"
        );
        let r = app
            .oneshot(
                Request::builder().uri("/healthz").body(axum::body::Body::empty()).expect("req"),
            )
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn the_api_key_is_required_when_set() {
        let mut cfg = super::super::config::ServerConfig::default();
        cfg.service.api_key = "k1".into();
        let app = router(state(cfg));
        let call = |h: Option<(&'static str, &'static str)>| {
            let app = app.clone();
            async move {
                let mut b = Request::builder().uri("/collections");
                if let Some((k, v)) = h {
                    b = b.header(k, v);
                }
                app.oneshot(b.body(axum::body::Body::empty()).expect("req"))
                    .await
                    .expect("answer")
                    .status()
            }
        };
        assert_eq!(call(None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(call(Some(("api-key", "k2"))).await, StatusCode::UNAUTHORIZED);
        assert_eq!(call(Some(("api-key", "k1x"))).await, StatusCode::UNAUTHORIZED);
        assert_eq!(call(Some(("api-key", "k1"))).await, StatusCode::OK);
        assert_eq!(call(Some(("authorization", "Bearer k1"))).await, StatusCode::OK);
        assert_eq!(call(Some(("authorization", "Basic k1"))).await, StatusCode::UNAUTHORIZED);
        // Health needs no key.
        let r = app
            .oneshot(
                Request::builder().uri("/healthz").body(axum::body::Body::empty()).expect("req"),
            )
            .await
            .expect("answer");
        assert_eq!(r.status(), StatusCode::OK);
    }
}
