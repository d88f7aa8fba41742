//! The hot list file (`gen-N/hot`): node ids ranked by how often queries
//! expand them (see `search::hot`), read at open to fill the entry cache.
//!
//! Layout, little-endian:
//!
//! ```text
//! offset  size   field
//! 0       8      magic "BASALTHT"
//! 8       4      u32 format version (2)
//! 12      4      u32 reserved, zero
//! 16      8      u64 count C
//! 24      8      u64 build id   } the index this
//! 32      8      u64 generation } list belongs to
//! 40      4*C    u32 node ids, hottest first
//! 40+4C   4      u32 CRC-32C of bytes [0, 40 + 4C)
//! ```
//!
//! [`decode_hot`] checks the length the header implies before it allocates,
//! then the checksum; the index layer checks the ids against N (and that none
//! repeats). Limits: C <= [`HOT_IDS_MAX`].

use std::path::Path;

use super::{FileIdent, FormatError, crc32c, le_u32, le_u64};

pub const HOT_MAGIC: &[u8; 8] = b"BASALTHT";
pub const HOT_VERSION: u32 = 2;
/// Bytes before the first id.
pub const HOT_HEADER_BYTES: usize = 40;
/// Most ids a hot list may hold.
pub const HOT_IDS_MAX: u64 = crate::search::CACHE_NODES_MAX as u64;

/// Encodes a hot list of `ids` for the index `ident`.
pub fn encode_hot(ids: &[u32], ident: FileIdent) -> Vec<u8> {
    assert!(ids.len() as u64 <= HOT_IDS_MAX, "hot list longer than HOT_IDS_MAX");
    let mut b = Vec::with_capacity(HOT_HEADER_BYTES + 4 * ids.len() + 4);
    b.extend_from_slice(HOT_MAGIC);
    b.extend_from_slice(&HOT_VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    b.extend_from_slice(&ident.encode());
    debug_assert_eq!(b.len(), HOT_HEADER_BYTES);
    for id in ids {
        b.extend_from_slice(&id.to_le_bytes());
    }
    let crc = crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes and verifies a hot list file's bytes: (identity, ids).
pub fn decode_hot(path: &Path, b: &[u8]) -> Result<(FileIdent, Vec<u32>), FormatError> {
    let len = b.len() as u64;
    let framing = (HOT_HEADER_BYTES + 4) as u64;
    if len < framing {
        return Err(FormatError::corrupt(
            path,
            len,
            format!("file is {len} bytes, shorter than {framing}"),
        ));
    }
    if &b[0..8] != HOT_MAGIC {
        return Err(FormatError::corrupt(path, 0, "bad magic, expected \"BASALTHT\""));
    }
    let version = le_u32(b, 8);
    if version != HOT_VERSION {
        return Err(FormatError::Version {
            path: path.to_path_buf(),
            found: version,
            supported: HOT_VERSION,
        });
    }
    if le_u32(b, 12) != 0 {
        return Err(FormatError::corrupt(path, 12, "reserved bytes are not zero"));
    }
    let count = le_u64(b, 16);
    if count > HOT_IDS_MAX {
        return Err(FormatError::corrupt(path, 16, format!("{count} ids, over {HOT_IDS_MAX}")));
    }
    let expected = framing + 4 * count;
    if len != expected {
        return Err(FormatError::corrupt(
            path,
            len.min(expected),
            format!("file is {len} bytes, the header ({count} ids) implies {expected}"),
        ));
    }
    let body = b.len() - 4;
    let stored = le_u32(b, body);
    let computed = crc32c(&b[..body]);
    if stored != computed {
        return Err(FormatError::corrupt(
            path,
            body as u64,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }
    let ident = FileIdent::decode(b, 24);
    if ident.build_id == 0 {
        return Err(FormatError::corrupt(path, 24, "build id is 0"));
    }
    let ids = b[HOT_HEADER_BYTES..body].chunks_exact(4).map(|c| le_u32(c, 0)).collect();
    Ok((ident, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENT: FileIdent = FileIdent { build_id: 99, generation: 0 };

    // A list round-trips; every flipped byte and every truncation is an error.
    #[test]
    fn round_trip_and_damage() {
        let ids = vec![5u32, 1, 900, 3];
        let b = encode_hot(&ids, IDENT);
        assert_eq!(b.len(), HOT_HEADER_BYTES + 16 + 4);
        assert_eq!(decode_hot(Path::new("hot"), &b).unwrap(), (IDENT, ids));
        for at in 0..b.len() {
            let mut c = b.clone();
            c[at] ^= 0x20;
            assert!(decode_hot(Path::new("hot"), &c).is_err(), "flip at {at}");
        }
        for cut in 0..b.len() {
            assert!(decode_hot(Path::new("hot"), &b[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_hot(Path::new("hot"), &encode_hot(&[], IDENT)).unwrap().1.is_empty());
    }
}
