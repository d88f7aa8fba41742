//! The Qdrant REST shapes basalt reads and writes, and their checks. A
//! request field basalt cannot honour is a 400 naming it (never ignored);
//! an unknown field is a 400 naming it too (`deny_unknown_fields`).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::collection::ids::ExternalId;
use crate::distance::Metric;

/// A request error: the HTTP status and what was wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub msg: String,
    /// Seconds for Retry-After (503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError { status: 400, msg: msg.into(), retry_after: None }
    }
    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError { status: 404, msg: msg.into(), retry_after: None }
    }
    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError { status: 500, msg: msg.into(), retry_after: None }
    }
    pub fn unavailable(msg: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError { status: 503, msg: msg.into(), retry_after: Some(retry_after) }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Refuses a field that is present and not null.
pub fn refuse(field: &str, v: &Option<Value>, why: &str) -> ApiResult<()> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(ApiError::bad(format!("{field}: {why}"))),
    }
}

/// Refuses a sharding field: one node, no shards.
pub fn no_shards(field: &str, v: &Option<Value>) -> ApiResult<()> {
    refuse(field, v, "one node, no shards")
}

/// Refuses a filter until filters exist; `doing` says what it would filter.
pub fn no_filter(field: &str, v: &Option<Value>, doing: &str) -> ApiResult<()> {
    refuse(
        field,
        v,
        &format!("{doing} by filter is not supported yet (filters come with issue 11)"),
    )
}

/// Parses a JSON body into `T`, naming what was wrong.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad("the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "malformed JSON"
            }
            _ => "invalid request",
        };
        ApiError::bad(format!("{kind}: {e}"))
    })
}

/// A point id: an unsigned integer or a string (UUIDs normalised; other
/// strings are basalt's extension).
pub fn parse_id(v: &Value, what: &str) -> ApiResult<ExternalId> {
    match v {
        Value::Number(n) => n.as_u64().map(ExternalId::Num).ok_or_else(|| {
            ApiError::bad(format!("{what}: id {n} is not an unsigned 64-bit integer"))
        }),
        Value::String(s) => {
            ExternalId::from_string(s).map_err(|e| ApiError::bad(format!("{what}: id {s:?}: {e}")))
        }
        other => Err(ApiError::bad(format!(
            "{what}: an id is an unsigned integer or a string, not {}",
            type_name(other)
        ))),
    }
}

pub fn id_json(id: &ExternalId) -> Value {
    match id {
        ExternalId::Num(n) => json!(n),
        ExternalId::Str(s) => json!(s),
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A dense vector from JSON: numbers, finite as f32.
pub fn parse_vector(v: &Value, what: &str) -> ApiResult<Vec<f32>> {
    let Value::Array(a) = v else {
        if v.is_object() {
            return Err(ApiError::bad(format!(
                "{what}: named or sparse vectors are not supported (a collection has one unnamed dense vector)"
            )));
        }
        return Err(ApiError::bad(format!(
            "{what}: a vector is an array of numbers, not {}",
            type_name(v)
        )));
    };
    if a.is_empty() {
        return Err(ApiError::bad(format!("{what}: the vector is empty")));
    }
    let mut out = Vec::with_capacity(a.len());
    for (i, x) in a.iter().enumerate() {
        let f = x.as_f64().ok_or_else(|| {
            ApiError::bad(format!("{what}: value {i} is {}, not a number", type_name(x)))
        })?;
        let f32v = f as f32;
        if !f32v.is_finite() {
            return Err(ApiError::bad(format!(
                "{what}: value {i} ({f}) is not a finite 32-bit float"
            )));
        }
        out.push(f32v);
    }
    Ok(out)
}

/// `with_payload`: true/false, or a list of keys to keep.
#[derive(Clone, Debug)]
pub enum PayloadSel {
    None,
    All,
    Keys(Vec<String>),
}

impl PayloadSel {
    pub fn parse(v: &Option<Value>, default: bool) -> ApiResult<PayloadSel> {
        match v {
            None | Some(Value::Null) => {
                Ok(if default { PayloadSel::All } else { PayloadSel::None })
            }
            Some(Value::Bool(true)) => Ok(PayloadSel::All),
            Some(Value::Bool(false)) => Ok(PayloadSel::None),
            Some(Value::Array(keys)) => keys
                .iter()
                .map(|k| {
                    k.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::bad("with_payload: a list of payload keys holds strings")
                    })
                })
                .collect::<ApiResult<Vec<_>>>()
                .map(PayloadSel::Keys),
            Some(_) => Err(ApiError::bad(
                "with_payload: true, false or a list of keys (include/exclude objects are not supported)",
            )),
        }
    }

    pub fn wanted(&self) -> bool {
        !matches!(self, PayloadSel::None)
    }

    /// The payload to send for a stored one (a JSON object's text).
    pub fn apply(&self, stored: Option<&str>) -> ApiResult<Value> {
        let obj = || -> ApiResult<Map<String, Value>> {
            match stored {
                None => Ok(Map::new()),
                Some(s) => match serde_json::from_str(s) {
                    Ok(Value::Object(m)) => Ok(m),
                    _ => Err(ApiError::internal("a stored payload is not a JSON object")),
                },
            }
        };
        Ok(match self {
            PayloadSel::None => Value::Null,
            PayloadSel::All => Value::Object(obj()?),
            PayloadSel::Keys(keys) => {
                let mut m = obj()?;
                m.retain(|k, _| keys.contains(k));
                Value::Object(m)
            }
        })
    }
}

/// `with_vector`: true or false (named-vector lists are not supported).
pub fn parse_with_vector(v: &Option<Value>) -> ApiResult<bool> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => {
            Err(ApiError::bad("with_vector: true or false (a collection has one unnamed vector)"))
        }
    }
}

pub fn distance_name(m: Metric) -> &'static str {
    match m {
        Metric::L2 => "Euclid",
        Metric::InnerProduct => "Dot",
        Metric::Cosine => "Cosine",
    }
}

pub fn metric_from_distance(s: &str) -> ApiResult<Metric> {
    match s {
        "Euclid" => Ok(Metric::L2),
        "Dot" => Ok(Metric::InnerProduct),
        "Cosine" => Ok(Metric::Cosine),
        "Manhattan" => Err(ApiError::bad(
            "vectors.distance: Manhattan is not supported (Cosine, Euclid or Dot)",
        )),
        other => Err(ApiError::bad(format!(
            "vectors.distance: {other:?} is not one of Cosine, Euclid, Dot"
        ))),
    }
}

/// Qdrant's score for basalt's internal distance: cosine similarity, dot
/// product, or Euclidean distance (not squared).
pub fn score(m: Metric, distance: f32) -> f32 {
    match m {
        Metric::L2 => distance.max(0.0).sqrt(),
        _ => m.score_from_distance(distance),
    }
}

/// Whether a score passes `score_threshold` (Euclid: at most; else at least).
pub fn passes(m: Metric, score: f32, threshold: Option<f32>) -> bool {
    match (threshold, m) {
        (None, _) => true,
        (Some(t), Metric::L2) => score <= t,
        (Some(t), _) => score >= t,
    }
}

// ---- request bodies ------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    pub vectors: Value,
    pub hnsw_config: Option<HnswConfig>,
    pub quantization_config: Option<Value>,
    pub shard_number: Option<u32>,
    pub replication_factor: Option<u32>,
    pub write_consistency_factor: Option<u32>,
    pub on_disk_payload: Option<bool>,
    pub sharding_method: Option<Value>,
    pub wal_config: Option<Value>,
    pub optimizers_config: Option<Value>,
    pub init_from: Option<Value>,
    pub sparse_vectors: Option<Value>,
    pub strict_mode_config: Option<Value>,
    pub metadata: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorParams {
    pub size: u64,
    pub distance: String,
    pub on_disk: Option<bool>,
    pub datatype: Option<String>,
    pub hnsw_config: Option<Value>,
    pub quantization_config: Option<Value>,
    pub multivector_config: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HnswConfig {
    pub m: Option<u64>,
    pub ef_construct: Option<u64>,
    pub on_disk: Option<bool>,
    pub full_scan_threshold: Option<Value>,
    pub max_indexing_threads: Option<Value>,
    pub payload_m: Option<Value>,
    pub inline_storage: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductQuantization {
    pub product: ProductConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    pub compression: String,
    pub always_ram: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointStruct {
    pub id: Value,
    pub vector: Value,
    pub payload: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub ids: Vec<Value>,
    pub vectors: Value,
    pub payloads: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upsert {
    pub points: Option<Vec<PointStruct>>,
    pub batch: Option<Batch>,
    pub shard_key: Option<Value>,
    pub update_filter: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletePoints {
    pub points: Option<Vec<Value>>,
    pub filter: Option<Value>,
    pub shard_key: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retrieve {
    pub ids: Vec<Value>,
    pub with_payload: Option<Value>,
    pub with_vector: Option<Value>,
    pub shard_key: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Count {
    pub exact: Option<bool>,
    pub filter: Option<Value>,
    pub shard_key: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Scroll {
    pub offset: Option<Value>,
    pub limit: Option<u64>,
    pub with_payload: Option<Value>,
    pub with_vector: Option<Value>,
    pub filter: Option<Value>,
    pub order_by: Option<Value>,
    pub shard_key: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPayload {
    pub payload: Value,
    pub points: Option<Vec<Value>>,
    pub filter: Option<Value>,
    pub key: Option<Value>,
    pub shard_key: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SearchParamsIn {
    pub hnsw_ef: Option<u64>,
    /// basalt's extension: reads in flight per round.
    pub beam_width: Option<u64>,
    pub exact: Option<bool>,
    pub quantization: Option<Value>,
    pub indexed_only: Option<bool>,
    pub acorn: Option<Value>,
    pub idf: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub query: Option<Value>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub with_payload: Option<Value>,
    pub with_vector: Option<Value>,
    pub params: Option<SearchParamsIn>,
    pub score_threshold: Option<f32>,
    pub filter: Option<Value>,
    pub using: Option<Value>,
    pub prefetch: Option<Value>,
    pub lookup_from: Option<Value>,
    pub shard_key: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateIndex {
    pub field_name: String,
    pub field_schema: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBatch {
    pub searches: Vec<Query>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    pub wait: Option<String>,
    pub ordering: Option<String>,
    pub timeout: Option<u64>,
    pub consistency: Option<String>,
}

/// Checks a write's query string: `wait` true/false (basalt always waits
/// for durability: stronger than asked), `ordering` any (one node).
pub fn check_wait(p: &WaitParams) -> ApiResult<()> {
    if let Some(w) = &p.wait
        && w != "true"
        && w != "false"
    {
        return Err(ApiError::bad(format!("wait={w:?}: true or false")));
    }
    if let Some(o) = &p.ordering
        && !matches!(o.as_str(), "weak" | "medium" | "strong")
    {
        return Err(ApiError::bad(format!("ordering={o:?}: weak, medium or strong")));
    }
    Ok(())
}

/// PQ bytes for a Qdrant compression ratio of f32 vectors of `dim`.
pub fn pq_bytes_for(compression: &str, dim: usize) -> ApiResult<usize> {
    let ratio: usize = match compression {
        "x4" => 4,
        "x8" => 8,
        "x16" => 16,
        "x32" => 32,
        "x64" => 64,
        other => {
            return Err(ApiError::bad(format!(
                "quantization_config.product.compression: {other:?} is not one of x4, x8, x16, x32, x64"
            )));
        }
    };
    let b = (dim * 4 / ratio).clamp(1, dim);
    Ok(b)
}

/// The compression ratio name of `pq_bytes` for `dim`, if it is one.
pub fn compression_for(pq_bytes: usize, dim: usize) -> Option<&'static str> {
    [("x4", 4), ("x8", 8), ("x16", 16), ("x32", 32), ("x64", 64)]
        .into_iter()
        .find(|(_, r)| (dim * 4 / r).clamp(1, dim) == pq_bytes)
        .map(|(n, _)| n)
}
