//! `gen-N/changes`: what generation N changed in the id map relative to the
//! generation it was merged from (points placed in slots, with payloads;
//! ids removed). Written by the merge before the manifest switch, applied to
//! the map (`idmap.rs`) after it, and again on open if a crash came between.
//! Its size is bounded by the delta the merge took.
//!
//! ```text
//! "BASALTCH" | version u32 (1) | 0 u32 | base build id u64 | base generation u64
//! | build id u64 | generation u64 | count u64
//! | count x (kind u8: 1 put, 2 remove | id (ids.rs encoding)
//!            | put: slot u32 | payload length u32 (u32::MAX: none) | payload)
//! | CRC-32C of everything before
//! ```

use std::path::Path;

use super::batch::PAYLOAD_BYTES_MAX;
use super::idmap::Change;
use super::ids::ExternalId;
use crate::format::{FileIdent, FormatError, crc32c, le_u32, le_u64};

const MAGIC: &[u8; 8] = b"BASALTCH";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 56;
const NO_PAYLOAD: u32 = u32::MAX;

/// The changes of one generation.
#[derive(Clone, Debug, PartialEq)]
pub struct Changes {
    /// The generation these apply on top of (`None`: an empty map).
    pub base: Option<FileIdent>,
    pub ident: FileIdent,
    pub changes: Vec<Change>,
}

pub fn encode(c: &Changes) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + c.changes.len() * 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&c.base.map_or([0u8; 16], |b| b.encode()));
    out.extend_from_slice(&c.ident.encode());
    out.extend_from_slice(&(c.changes.len() as u64).to_le_bytes());
    for ch in &c.changes {
        match ch {
            Change::Put { id, slot, payload } => {
                out.push(1);
                id.encode(&mut out);
                out.extend_from_slice(&slot.to_le_bytes());
                match payload {
                    Some(p) => {
                        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
                        out.extend_from_slice(p.as_bytes());
                    }
                    None => out.extend_from_slice(&NO_PAYLOAD.to_le_bytes()),
                }
            }
            Change::Remove { id } => {
                out.push(2);
                id.encode(&mut out);
            }
        }
    }
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub fn decode(path: &Path, b: &[u8]) -> Result<Changes, FormatError> {
    let corrupt = |at: usize, what: &str| FormatError::corrupt(path, at as u64, what.to_string());
    if b.len() < HEADER_BYTES + 4 || &b[..8] != MAGIC {
        return Err(FormatError::invalid(path, "not a basalt changes file"));
    }
    let body = b.len() - 4;
    if le_u32(b, body) != crc32c(&b[..body]) {
        return Err(corrupt(body, "changes file checksum mismatch"));
    }
    if le_u32(b, 8) != VERSION {
        return Err(FormatError::invalid(path, format!("changes version {}", le_u32(b, 8))));
    }
    let base = FileIdent::decode(b, 16);
    let base = (base.build_id != 0).then_some(base);
    let ident = FileIdent::decode(b, 32);
    let count = le_u64(b, 48);
    // Each change takes at least 10 bytes: a count past that is corrupt,
    // checked before allocating.
    if count > (body - HEADER_BYTES) as u64 / 10 {
        return Err(corrupt(48, "change count larger than the file"));
    }
    let mut changes = Vec::with_capacity(count as usize);
    let mut at = HEADER_BYTES;
    for _ in 0..count {
        let kind = *b.get(at).ok_or_else(|| corrupt(at, "cut short"))?;
        at += 1;
        let (id, used) =
            ExternalId::decode(&b[at..body]).map_err(|e| corrupt(at, &e.to_string()))?;
        at += used;
        match kind {
            1 => {
                if at + 8 > body {
                    return Err(corrupt(at, "cut short"));
                }
                let slot = le_u32(b, at);
                let len = le_u32(b, at + 4);
                at += 8;
                let payload = if len == NO_PAYLOAD {
                    None
                } else {
                    let len = len as usize;
                    if len > PAYLOAD_BYTES_MAX || at + len > body {
                        return Err(corrupt(at, "payload length"));
                    }
                    let p = std::str::from_utf8(&b[at..at + len])
                        .map_err(|_| corrupt(at, "payload not UTF-8"))?;
                    at += len;
                    Some(p.to_string())
                };
                changes.push(Change::Put { id, slot, payload });
            }
            2 => changes.push(Change::Remove { id }),
            _ => return Err(corrupt(at - 1, "unknown change kind")),
        }
    }
    if at != body {
        return Err(corrupt(at, "trailing bytes"));
    }
    Ok(Changes { base, ident, changes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changes round-trip, and every truncation or flipped byte is refused.
    #[test]
    fn changes_round_trip_and_damage() {
        let c = Changes {
            base: Some(FileIdent { build_id: 5, generation: 1 }),
            ident: FileIdent { build_id: 6, generation: 2 },
            changes: vec![
                Change::Put { id: ExternalId::Num(3), slot: 7, payload: Some("{\"a\":1}".into()) },
                Change::Put { id: ExternalId::Str("x".into()), slot: 0, payload: None },
                Change::Remove { id: ExternalId::Num(9) },
            ],
        };
        let b = encode(&c);
        let p = Path::new("changes");
        assert_eq!(decode(p, &b).unwrap(), c);
        for cut in 0..b.len() {
            assert!(decode(p, &b[..cut]).is_err(), "cut at {cut} accepted");
        }
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x20;
            assert!(decode(p, &d).is_err(), "flip at {i} accepted");
        }
    }
}
