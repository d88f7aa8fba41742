//! The bodies of the WAL's upsert and delete records: what a batch of
//! writes is, byte for byte. Decoding checks every count against the bytes
//! that remain before it allocates, and refuses trailing bytes.
//!
//! ```text
//! upsert: version u8 (1) | element tag u8 | dim u32 | count u32 | count x point
//!   point: id (ids.rs) | dim x element bytes | payload length u32 (u32::MAX: none) | payload (JSON, UTF-8)
//! delete: version u8 (1) | count u32 | count x id
//! ```
//!
//! Limits: at most [`BATCH_POINTS_MAX`] points per batch, payloads at most
//! [`PAYLOAD_BYTES_MAX`] bytes.

use super::ids::{ExternalId, IdError};
use crate::distance::DIM_MAX;
use crate::element::ElementType;

/// Most points in one upsert or delete record.
pub const BATCH_POINTS_MAX: usize = 65_536;
/// Largest payload of one point, in bytes of JSON.
pub const PAYLOAD_BYTES_MAX: usize = 64 << 10;
const BATCH_VERSION: u8 = 1;
const NO_PAYLOAD: u32 = u32::MAX;

/// One point of an upsert batch.
#[derive(Clone, Debug, PartialEq)]
pub struct UpsertPoint {
    pub id: ExternalId,
    /// The vector's little-endian element bytes.
    pub vector: Vec<u8>,
    /// The payload as JSON text.
    pub payload: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    #[error("batch of {0} points exceeds BATCH_POINTS_MAX ({BATCH_POINTS_MAX})")]
    TooMany(usize),
    #[error("payload of {0} bytes exceeds PAYLOAD_BYTES_MAX ({PAYLOAD_BYTES_MAX})")]
    PayloadTooLarge(usize),
    #[error("point {index}: vector of {got} bytes, expected {want}")]
    VectorSize { index: usize, got: usize, want: usize },
    #[error("batch body malformed at byte {at}: {what}")]
    Malformed { at: usize, what: String },
    #[error("batch body: point {index}: {source}")]
    Id {
        index: usize,
        #[source]
        source: IdError,
    },
}

fn malformed(at: usize, what: impl Into<String>) -> BatchError {
    BatchError::Malformed { at, what: what.into() }
}

/// Encodes an upsert batch (sizes checked: this is what gets logged).
pub fn encode_upsert(
    element: ElementType,
    dim: usize,
    points: &[UpsertPoint],
) -> Result<Vec<u8>, BatchError> {
    if points.len() > BATCH_POINTS_MAX {
        return Err(BatchError::TooMany(points.len()));
    }
    let want = dim * element.size_bytes();
    let mut out = vec![BATCH_VERSION, element.tag()];
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&(points.len() as u32).to_le_bytes());
    for (index, p) in points.iter().enumerate() {
        if p.vector.len() != want {
            return Err(BatchError::VectorSize { index, got: p.vector.len(), want });
        }
        p.id.encode(&mut out);
        out.extend_from_slice(&p.vector);
        match &p.payload {
            Some(j) if j.len() > PAYLOAD_BYTES_MAX => {
                return Err(BatchError::PayloadTooLarge(j.len()));
            }
            Some(j) => {
                out.extend_from_slice(&(j.len() as u32).to_le_bytes());
                out.extend_from_slice(j.as_bytes());
            }
            None => out.extend_from_slice(&NO_PAYLOAD.to_le_bytes()),
        }
    }
    Ok(out)
}

fn take<'a>(b: &'a [u8], at: &mut usize, n: usize, what: &str) -> Result<&'a [u8], BatchError> {
    let s = b
        .get(*at..at.saturating_add(n))
        .ok_or_else(|| malformed(*at, format!("{what} cut short")))?;
    *at += n;
    Ok(s)
}

fn u32_at(b: &[u8], at: &mut usize, what: &str) -> Result<u32, BatchError> {
    let s = take(b, at, 4, what)?;
    Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

/// Decodes an upsert batch: (element type, dim, points).
pub fn decode_upsert(b: &[u8]) -> Result<(ElementType, usize, Vec<UpsertPoint>), BatchError> {
    let mut at = 0;
    let head = take(b, &mut at, 2, "header")?;
    if head[0] != BATCH_VERSION {
        return Err(malformed(0, format!("version {}", head[0])));
    }
    let element = ElementType::from_tag(head[1]).ok_or_else(|| malformed(1, "unknown element"))?;
    let dim = u32_at(b, &mut at, "dim")? as usize;
    if dim == 0 || dim > DIM_MAX {
        return Err(malformed(2, format!("dimension {dim}")));
    }
    let count = u32_at(b, &mut at, "count")? as usize;
    let vbytes = dim * element.size_bytes();
    // The smallest point: a u64 id, the vector, a payload length.
    let min_point = 9 + vbytes + 4;
    if count > BATCH_POINTS_MAX || count.saturating_mul(min_point) > b.len() - at {
        return Err(malformed(
            6,
            format!("count {count} does not fit the {} bytes left", b.len() - at),
        ));
    }
    let mut points = Vec::with_capacity(count);
    for index in 0..count {
        let (id, used) =
            ExternalId::decode(&b[at..]).map_err(|source| BatchError::Id { index, source })?;
        at += used;
        let vector = take(b, &mut at, vbytes, "vector")?.to_vec();
        let plen = u32_at(b, &mut at, "payload length")?;
        let payload = if plen == NO_PAYLOAD {
            None
        } else {
            let plen = plen as usize;
            if plen > PAYLOAD_BYTES_MAX {
                return Err(BatchError::PayloadTooLarge(plen));
            }
            let p = take(b, &mut at, plen, "payload")?;
            Some(
                String::from_utf8(p.to_vec())
                    .map_err(|_| malformed(at - plen, "payload not UTF-8"))?,
            )
        };
        points.push(UpsertPoint { id, vector, payload });
    }
    if at != b.len() {
        return Err(malformed(at, "trailing bytes"));
    }
    Ok((element, dim, points))
}

/// Encodes a delete batch.
pub fn encode_delete(ids: &[ExternalId]) -> Result<Vec<u8>, BatchError> {
    if ids.len() > BATCH_POINTS_MAX {
        return Err(BatchError::TooMany(ids.len()));
    }
    let mut out = vec![BATCH_VERSION];
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    for id in ids {
        id.encode(&mut out);
    }
    Ok(out)
}

/// Decodes a delete batch.
pub fn decode_delete(b: &[u8]) -> Result<Vec<ExternalId>, BatchError> {
    let mut at = 0;
    if take(b, &mut at, 1, "version")?[0] != BATCH_VERSION {
        return Err(malformed(0, "version"));
    }
    let count = u32_at(b, &mut at, "count")? as usize;
    // The smallest id is 4 bytes (a string id of one byte).
    if count > BATCH_POINTS_MAX || count.saturating_mul(4) > b.len() - at {
        return Err(malformed(1, format!("count {count} does not fit")));
    }
    let mut ids = Vec::with_capacity(count);
    for index in 0..count {
        let (id, used) =
            ExternalId::decode(&b[at..]).map_err(|source| BatchError::Id { index, source })?;
        at += used;
        ids.push(id);
    }
    if at != b.len() {
        return Err(malformed(at, "trailing bytes"));
    }
    Ok(ids)
}

/// What a generation-switch record says: the collection now serves this
/// generation (its files' identity), which reflects the log up to `lsn`.
/// Replay ignores it (the manifest is the authority); a follower of the
/// log (the standby) learns from it that a new generation exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationSwitch {
    pub generation: u64,
    pub build_id: u64,
    pub lsn: u64,
}

/// Bytes of an encoded [`GenerationSwitch`].
const SWITCH_BYTES: usize = 1 + 3 * 8;

/// Encodes a generation-switch record's body.
pub fn encode_switch(s: &GenerationSwitch) -> Vec<u8> {
    let mut out = Vec::with_capacity(SWITCH_BYTES);
    out.push(BATCH_VERSION);
    for v in [s.generation, s.build_id, s.lsn] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Decodes a generation-switch record's body.
pub fn decode_switch(b: &[u8]) -> Result<GenerationSwitch, BatchError> {
    if b.len() != SWITCH_BYTES {
        return Err(malformed(0, format!("a generation switch of {} bytes", b.len())));
    }
    if b[0] != BATCH_VERSION {
        return Err(malformed(0, "version"));
    }
    let u = |i: usize| u64::from_le_bytes(b[1 + 8 * i..9 + 8 * i].try_into().expect("8 bytes"));
    Ok(GenerationSwitch { generation: u(0), build_id: u(1), lsn: u(2) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn points(n: usize) -> Vec<UpsertPoint> {
        (0..n)
            .map(|i| UpsertPoint {
                id: if i % 2 == 0 {
                    ExternalId::Num(i as u64 * 1_000_003)
                } else {
                    ExternalId::Str(format!("doc-{i}"))
                },
                vector: (0..12).map(|j| (i * 12 + j) as u8).collect(),
                payload: (i % 3 != 0).then(|| format!("{{\"n\":{i}}}")),
            })
            .collect()
    }

    // Batches round-trip; wrong vector sizes and oversized payloads are refused.
    #[test]
    fn batches_round_trip_and_limits_hold() {
        let p = points(9);
        let b = encode_upsert(ElementType::F32, 3, &p).unwrap();
        assert_eq!(decode_upsert(&b).unwrap(), (ElementType::F32, 3, p.clone()));
        assert!(matches!(
            encode_upsert(ElementType::F32, 4, &p),
            Err(BatchError::VectorSize { index: 0, .. })
        ));
        let mut big = p.clone();
        big[1].payload = Some("x".repeat(PAYLOAD_BYTES_MAX + 1));
        assert!(matches!(
            encode_upsert(ElementType::F32, 3, &big),
            Err(BatchError::PayloadTooLarge(_))
        ));
        let ids: Vec<ExternalId> = p.iter().map(|x| x.id.clone()).collect();
        assert_eq!(decode_delete(&encode_delete(&ids).unwrap()).unwrap(), ids);
        assert!(decode_delete(&encode_delete(&[]).unwrap()).unwrap().is_empty());
    }

    proptest! {
        /// Any cut, flipped byte or junk is an error or a batch that
        /// re-encodes to the same bytes; never a panic.
        #[test]
        fn hostile_bodies_never_panic(cut in 0usize..400, flip in 0usize..400, v in any::<u8>(),
                                      junk in proptest::collection::vec(any::<u8>(), 0..64)) {
            let b = encode_upsert(ElementType::U8, 12, &points(5)).unwrap();
            for bad in [b[..cut.min(b.len())].to_vec(), { let mut c = b.clone(); let i = flip % c.len(); c[i] ^= v; c }, junk.clone()] {
                if let Ok((e, d, p)) = decode_upsert(&bad) {
                    prop_assert_eq!(&encode_upsert(e, d, &p).unwrap(), &bad);
                }
                if let Ok(ids) = decode_delete(&bad) {
                    prop_assert_eq!(&encode_delete(&ids).unwrap(), &bad);
                }
            }
        }
    }
}
