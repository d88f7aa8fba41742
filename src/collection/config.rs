//! `DIR/collection`: a collection's parameters (shape, durability, graph
//! and PQ parameters its merges use, and the limits and thresholds of its
//! write path). Pretty JSON then a `crc32c 0x........` line over the raw
//! bytes, as the index manifest is; written at create (temp + fsync +
//! rename + directory fsync) and read at every open, unknown keys refused.
//! The current generation and its LSN are in `DIR/manifest` (the index
//! manifest, so a collection's generation opens with every index tool);
//! an empty collection has this file and no manifest yet.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::distance::{DIM_MAX, Metric};
use crate::element::ElementType;
use crate::format::FormatError;
use crate::vamana::{DEGREE_MAX, DEGREE_MIN};
use crate::wal::Durability;

pub const CONFIG_FILE: &str = "collection";
pub const CONFIG_VERSION: u32 = 1;
const CONFIG_BYTES_MAX: usize = 64 << 10;

/// Default: merge once the delta holds this many points.
pub const DELTA_POINTS_MERGE_DEFAULT: u64 = 100_000;
/// Default: merge once this many disk points are deleted or replaced.
pub const TOMBSTONES_MERGE_DEFAULT: u64 = 100_000;
/// Default memory bound of one delta (writes wait past it, then get "busy").
pub const DELTA_BYTES_MAX_DEFAULT: u64 = 1 << 30;
/// Default longest wait of a write for room in the delta.
pub const WRITE_WAIT_MS_MAX_DEFAULT: u64 = 10_000;
/// Default: a merge retrains PQ when the points exceed this many times the
/// points the codebook was trained on.
pub const RETRAIN_GROWTH_FACTOR_DEFAULT: f64 = 4.0;

/// A collection's parameters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    pub format_version: u32,
    pub dim: u32,
    pub metric: Metric,
    pub element: ElementType,
    /// "fsync" (each acknowledged batch is on disk) or "none" (opt-in: an
    /// acknowledged batch can be lost to a power cut or kernel crash).
    pub durability: String,
    pub degree_max: usize,
    pub list_size: usize,
    pub alpha: f32,
    pub pq_chunks: usize,
    pub seed: u64,
    pub delta_points_merge: u64,
    pub tombstones_merge: u64,
    pub delta_bytes_max: u64,
    pub write_wait_ms_max: u64,
    pub retrain_growth_factor: f64,
    /// Merge in the background when a threshold is passed.
    pub auto_merge: bool,
}

impl CollectionConfig {
    /// Defaults for a collection of this shape.
    pub fn new(dim: u32, metric: Metric, element: ElementType) -> CollectionConfig {
        CollectionConfig {
            format_version: CONFIG_VERSION,
            dim,
            metric,
            element,
            durability: "fsync".into(),
            degree_max: 64,
            list_size: 100,
            alpha: 1.2,
            pq_chunks: (dim as usize).min(32),
            seed: 1,
            delta_points_merge: DELTA_POINTS_MERGE_DEFAULT,
            tombstones_merge: TOMBSTONES_MERGE_DEFAULT,
            delta_bytes_max: DELTA_BYTES_MAX_DEFAULT,
            write_wait_ms_max: WRITE_WAIT_MS_MAX_DEFAULT,
            retrain_growth_factor: RETRAIN_GROWTH_FACTOR_DEFAULT,
            auto_merge: true,
        }
    }

    pub fn durability(&self) -> Durability {
        if self.durability == "none" { Durability::None } else { Durability::Fsync }
    }

    /// Every field in range, with the reason when not.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != CONFIG_VERSION {
            return Err(format!(
                "format_version {} (this basalt reads {CONFIG_VERSION})",
                self.format_version
            ));
        }
        if self.dim == 0 || self.dim as usize > DIM_MAX {
            return Err(format!("dim {} outside 1..={DIM_MAX}", self.dim));
        }
        if self.metric == Metric::Cosine && self.element != ElementType::F32 {
            return Err("cosine needs f32 vectors".into());
        }
        if self.durability != "fsync" && self.durability != "none" {
            return Err(format!("durability {:?}: \"fsync\" or \"none\"", self.durability));
        }
        if !(DEGREE_MIN..=DEGREE_MAX).contains(&self.degree_max) {
            return Err(format!(
                "degree_max {} outside {DEGREE_MIN}..={DEGREE_MAX}",
                self.degree_max
            ));
        }
        if self.list_size < self.degree_max.min(16)
            || self.list_size > crate::vamana::SEARCH_LIST_MAX
        {
            return Err(format!("list_size {} out of range", self.list_size));
        }
        if !(1.0..=2.0).contains(&self.alpha) {
            return Err(format!("alpha {} outside 1..=2", self.alpha));
        }
        if self.pq_chunks == 0 || self.pq_chunks > self.dim as usize {
            return Err(format!("pq_chunks {} outside 1..=dim", self.pq_chunks));
        }
        if self.delta_points_merge == 0 || self.tombstones_merge == 0 {
            return Err("merge thresholds must be at least 1".into());
        }
        if self.delta_bytes_max < 1 << 20 {
            return Err(format!("delta_bytes_max {} below 1 MiB", self.delta_bytes_max));
        }
        if self.write_wait_ms_max > 600_000 {
            return Err(format!("write_wait_ms_max {} above 10 minutes", self.write_wait_ms_max));
        }
        if self.retrain_growth_factor.is_nan() || self.retrain_growth_factor < 1.0 {
            return Err(format!("retrain_growth_factor {} below 1", self.retrain_growth_factor));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("config serialises");
        out.push(b'\n');
        let crc = crate::format::crc32c(&out);
        out.extend_from_slice(format!("crc32c {crc:#010x}\n").as_bytes());
        out
    }

    pub fn decode(path: &Path, b: &[u8]) -> Result<CollectionConfig, FormatError> {
        const TRAILER: usize = "crc32c 0x00000000\n".len();
        if b.len() > CONFIG_BYTES_MAX || b.len() < TRAILER {
            return Err(FormatError::invalid(path, "not a basalt collection file"));
        }
        let (body, trailer) = b.split_at(b.len() - TRAILER);
        let stored = std::str::from_utf8(trailer)
            .ok()
            .and_then(|t| t.strip_prefix("crc32c 0x"))
            .and_then(|t| t.strip_suffix('\n'))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| {
                FormatError::invalid(path, "no checksum line: not a basalt collection file")
            })?;
        let crc = crate::format::crc32c(body);
        if crc != stored {
            return Err(FormatError::corrupt(
                path,
                body.len() as u64,
                format!("checksum {stored:#010x} != computed {crc:#010x}"),
            ));
        }
        let c: CollectionConfig = serde_json::from_slice(body)
            .map_err(|e| FormatError::invalid(path, format!("collection parameters: {e}")))?;
        c.validate().map_err(|e| FormatError::invalid(path, e))?;
        Ok(c)
    }
}
