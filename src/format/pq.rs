//! The PQ codebook file (`gen-N/pq`): everything needed to encode vectors
//! and build per-query lookup tables ([`crate::pq::Codebook`]).
//!
//! Layout, little-endian, with M chunks, K = 256 centres per chunk and
//! dimension D:
//!
//! ```text
//! offset          size        field
//! 0               8           magic "BASALTPQ"
//! 8               4           u32 format version (2)
//! 12              4           u32 dimension D (of the PQ space: dim + 1 for ip)
//! 16              4           u32 chunks M
//! 20              4           u32 centres per chunk K (256)
//! 24              8           u64 build id   } the index this codebook
//! 32              8           u64 generation } belongs to
//! 40              1           u8 metric tag of the index
//! 41              3           reserved, zero
//! 44              4           f32 ip_norm_max (M of the MIPS reduction; 0 unless ip)
//! 48              4*(M+1)     u32 chunk offsets: chunk m covers dims [off[m], off[m+1])
//! 52+4M           4*D         f32 centroid (the data mean)
//! 52+4M+4D        4*K*D       f32 centres: per chunk m, K rows of off[m+1]-off[m] values
//! 52+4M+4D+4KD    4           u32 CRC-32C of every byte before it
//! ```
//!
//! [`write_codebook`] writes through a buffer into the path given, then
//! fsyncs; the caller owns temporary names and renames. [`read_codebook`]
//! checks the magic, the version, the header fields, the length they imply
//! (before reading, so a corrupt header cannot ask for a huge buffer), the
//! checksum, then the offsets and values; every defect is a [`FormatError`]
//! naming the file and byte offset, never a panic. Files are at most
//! [`PQ_FILE_BYTES_MAX`] bytes (D <= `DIM_MAX`).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::codes::ChecksumWriter;
use super::{FileIdent, FormatError, IDENT_BYTES, crc32c, le_f32, le_u32};
use crate::distance::{DIM_MAX, Metric};
use crate::pq::{Codebook, PQ_CENTROIDS};

pub const PQ_MAGIC: &[u8; 8] = b"BASALTPQ";
pub const PQ_VERSION: u32 = 2;
/// Bytes of the fixed header, before the chunk offsets.
pub const PQ_HEADER_BYTES: usize = 48;

/// What a codebook file records besides the codebook: whose it is and the
/// space its vectors live in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PqFileMeta {
    pub ident: FileIdent,
    pub metric: Metric,
    /// M of the MIPS-to-L2 reduction for inner product; 0 otherwise.
    pub ip_norm_max: f32,
}

/// Size of a codebook file with `dim` dimensions in `chunks` chunks.
pub const fn pq_file_bytes(dim: usize, chunks: usize) -> usize {
    PQ_HEADER_BYTES + 4 * (chunks + 1) + 4 * dim + 4 * PQ_CENTROIDS * dim + 4
}

/// Largest codebook file: D = M = `DIM_MAX` (about 17 MiB).
pub const PQ_FILE_BYTES_MAX: usize = pq_file_bytes(DIM_MAX, DIM_MAX);

/// Writes `cb` to `path` and fsyncs it.
pub fn write_codebook(path: &Path, cb: &Codebook, meta: &PqFileMeta) -> Result<(), FormatError> {
    let (dim, chunks) = (cb.dim(), cb.chunks());
    debug_assert_eq!(cb.centers().len(), PQ_CENTROIDS * dim, "codebook invariant");
    let mut out = ChecksumWriter::create(path)?;
    let mut header = [0u8; PQ_HEADER_BYTES];
    header[0..8].copy_from_slice(PQ_MAGIC);
    header[8..12].copy_from_slice(&PQ_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(dim as u32).to_le_bytes());
    header[16..20].copy_from_slice(&(chunks as u32).to_le_bytes());
    header[20..24].copy_from_slice(&(PQ_CENTROIDS as u32).to_le_bytes());
    header[24..24 + IDENT_BYTES].copy_from_slice(&meta.ident.encode());
    header[40] = meta.metric.tag();
    header[44..48].copy_from_slice(&meta.ip_norm_max.to_le_bytes());
    out.write(&header)?;
    let mut body = Vec::with_capacity(pq_file_bytes(dim, chunks) - PQ_HEADER_BYTES - 4);
    for &o in cb.chunk_offsets() {
        body.extend_from_slice(&o.to_le_bytes());
    }
    for &v in cb.centroid().iter().chain(cb.centers()) {
        body.extend_from_slice(&v.to_le_bytes());
    }
    out.write(&body)?;
    out.finish()?;
    Ok(())
}

/// A codebook file as read: the codebook, its metadata, and the XXH3-64 of
/// the whole file (for the manifest's check).
#[derive(Clone, Debug)]
pub struct PqFile {
    pub codebook: Codebook,
    pub meta: PqFileMeta,
    pub xxh3: u64,
}

/// Reads and verifies a codebook file.
pub fn read_codebook(path: &Path) -> Result<PqFile, FormatError> {
    let mut file = File::open(path).map_err(|e| FormatError::io(path, "open", e))?;
    let len = file.metadata().map_err(|e| FormatError::io(path, "stat", e))?.len();
    if len > PQ_FILE_BYTES_MAX as u64 {
        return Err(FormatError::corrupt(
            path,
            PQ_FILE_BYTES_MAX as u64,
            format!("file is {len} bytes, over the {PQ_FILE_BYTES_MAX}-byte limit of a codebook"),
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes).map_err(|e| FormatError::io(path, "read", e))?;
    let (codebook, meta) = decode_codebook(path, &bytes)?;
    Ok(PqFile { codebook, meta, xxh3: xxhash_rust::xxh3::xxh3_64(&bytes) })
}

/// Decodes and verifies the bytes of a codebook file; `path` only names the
/// file in errors.
pub fn decode_codebook(path: &Path, bytes: &[u8]) -> Result<(Codebook, PqFileMeta), FormatError> {
    let len = bytes.len();
    let minimum = pq_file_bytes(1, 1);
    if len < minimum {
        return Err(FormatError::corrupt(
            path,
            len as u64,
            format!("file is {len} bytes, shorter than the smallest codebook ({minimum})"),
        ));
    }
    if &bytes[0..8] != PQ_MAGIC {
        return Err(FormatError::corrupt(
            path,
            0,
            format!(
                "bad magic {:?}, expected {:?}",
                bytes[0..8].escape_ascii().to_string(),
                "BASALTPQ"
            ),
        ));
    }
    let version = le_u32(bytes, 8);
    if version != PQ_VERSION {
        return Err(FormatError::Version {
            path: path.to_path_buf(),
            found: version,
            supported: PQ_VERSION,
        });
    }
    let dim = le_u32(bytes, 12) as usize;
    if !(1..=DIM_MAX).contains(&dim) {
        return Err(FormatError::corrupt(
            path,
            12,
            format!("dimension {dim} is outside 1..={DIM_MAX}"),
        ));
    }
    let chunks = le_u32(bytes, 16) as usize;
    if !(1..=dim).contains(&chunks) {
        return Err(FormatError::corrupt(path, 16, format!("{chunks} chunks for dimension {dim}")));
    }
    let centres = le_u32(bytes, 20) as usize;
    if centres != PQ_CENTROIDS {
        return Err(FormatError::corrupt(
            path,
            20,
            format!("{centres} centres per chunk, this build uses {PQ_CENTROIDS}"),
        ));
    }
    let expected = pq_file_bytes(dim, chunks);
    if len != expected {
        return Err(FormatError::corrupt(
            path,
            len.min(expected) as u64,
            format!(
                "file is {len} bytes, the header (dimension {dim}, {chunks} chunks) implies {expected}"
            ),
        ));
    }
    let stored = le_u32(bytes, len - 4);
    let computed = crc32c(&bytes[..len - 4]);
    if stored != computed {
        return Err(FormatError::corrupt(
            path,
            (len - 4) as u64,
            format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"),
        ));
    }

    let ident = FileIdent::decode(bytes, 24);
    if ident.build_id == 0 {
        return Err(FormatError::corrupt(path, 24, "build id is 0"));
    }
    let Some(metric) = Metric::from_tag(bytes[40]) else {
        return Err(FormatError::corrupt(path, 40, format!("unknown metric tag {}", bytes[40])));
    };
    if bytes[41..44] != [0, 0, 0] {
        return Err(FormatError::corrupt(path, 41, "reserved bytes are not zero"));
    }
    let ip_norm_max = le_f32(bytes, 44);
    let norm_ok = if metric == Metric::InnerProduct {
        ip_norm_max.is_finite() && ip_norm_max >= 0.0
    } else {
        ip_norm_max == 0.0
    };
    if !norm_ok {
        return Err(FormatError::corrupt(
            path,
            44,
            format!("ip_norm_max {ip_norm_max} is invalid for metric {metric}"),
        ));
    }
    let meta = PqFileMeta { ident, metric, ip_norm_max };
    let offsets_at = PQ_HEADER_BYTES;
    let offsets: Vec<u32> = (0..=chunks).map(|m| le_u32(bytes, offsets_at + 4 * m)).collect();
    if offsets[0] != 0 {
        return Err(FormatError::corrupt(path, offsets_at as u64, "first chunk offset is not 0"));
    }
    if let Some(m) = offsets.windows(2).position(|w| w[0] >= w[1]) {
        return Err(FormatError::corrupt(
            path,
            (offsets_at + 4 * (m + 1)) as u64,
            format!(
                "chunk offsets not strictly increasing: {} then {}",
                offsets[m],
                offsets[m + 1]
            ),
        ));
    }
    if offsets[chunks] as usize != dim {
        return Err(FormatError::corrupt(
            path,
            (offsets_at + 4 * chunks) as u64,
            format!("last chunk offset {} is not the dimension {dim}", offsets[chunks]),
        ));
    }
    let centroid_at = offsets_at + 4 * (chunks + 1);
    let values: Vec<f32> =
        (0..dim + PQ_CENTROIDS * dim).map(|i| le_f32(bytes, centroid_at + 4 * i)).collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(FormatError::corrupt(
            path,
            (centroid_at + 4 * i) as u64,
            format!("value {} is not finite", values[i]),
        ));
    }
    let centers = values[dim..].to_vec();
    let mut centroid = values;
    centroid.truncate(dim);
    // Every invariant from_parts checks was checked above, so a failure here
    // would be a disagreement between the two checkers: still an error, not a panic.
    let cb = Codebook::from_parts(dim, offsets, centroid, centers)
        .map_err(|e| FormatError::invalid(path, format!("codebook: {e}")))?;
    Ok((cb, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pq::PqParams;

    /// A small trained codebook: dimension 5 in 3 uneven chunks (2, 2, 1).
    fn small_codebook() -> Codebook {
        let sample: Vec<f32> =
            (0..300 * 5).map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0).collect();
        Codebook::train(&sample, 5, &PqParams::new(3, 1)).unwrap()
    }

    fn meta() -> PqFileMeta {
        PqFileMeta {
            ident: FileIdent { build_id: 0xabc, generation: 2 },
            metric: Metric::L2,
            ip_norm_max: 0.0,
        }
    }

    // A written codebook reads back equal, at the documented size, and encodes identically.
    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pq");
        let cb = small_codebook();
        write_codebook(&path, &cb, &meta()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), pq_file_bytes(5, 3));
        assert_eq!(&bytes[..8], PQ_MAGIC);
        let file = read_codebook(&path).unwrap();
        let back = file.codebook;
        assert_eq!(back, cb);
        assert_eq!(file.meta, meta());
        assert_eq!(file.xxh3, xxhash_rust::xxh3::xxh3_64(&bytes));
        let (mut a, mut b) = ([0u8; 3], [0u8; 3]);
        cb.encode(&[1.0, -2.0, 0.5, 3.0, -4.0], &mut a);
        back.encode(&[1.0, -2.0, 0.5, 3.0, -4.0], &mut b);
        assert_eq!(a, b);
    }

    // Flipping any byte of the file (every position, two patterns) is an error, never a panic.
    #[test]
    fn flipped_bytes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pq");
        write_codebook(&path, &small_codebook(), &meta()).unwrap();
        let good = std::fs::read(&path).unwrap();
        for at in 0..good.len() {
            for pattern in [0x01u8, 0xa5] {
                let mut bytes = good.clone();
                bytes[at] ^= pattern;
                assert!(
                    decode_codebook(&path, &bytes).is_err(),
                    "change at byte {at} not detected"
                );
            }
        }
        // And through the file reader, for a few positions.
        for at in [0, 9, 13, 30, good.len() / 2, good.len() - 1] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            assert!(read_codebook(&path).is_err());
        }
    }

    // A file cut at any length, or with a byte added, is an error.
    #[test]
    fn truncated_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pq");
        write_codebook(&path, &small_codebook(), &meta()).unwrap();
        let good = std::fs::read(&path).unwrap();
        for len in 0..good.len() {
            assert!(decode_codebook(&path, &good[..len]).is_err(), "cut to {len} not detected");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode_codebook(&path, &longer).is_err());
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        let err = read_codebook(&path).unwrap_err();
        assert!(err.to_string().contains("pq"), "error names the file: {err}");
    }

    // Wrong magic is a corruption at offset 0; a future version is a Version error.
    #[test]
    fn wrong_magic_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pq");
        write_codebook(&path, &small_codebook(), &meta()).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut bytes = good.clone();
        bytes[..8].copy_from_slice(b"BASALTPC");
        assert!(matches!(
            decode_codebook(&path, &bytes),
            Err(FormatError::Corrupt { offset: 0, .. })
        ));
        let mut bytes = good;
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(
            decode_codebook(&path, &bytes),
            Err(FormatError::Version { found: 7, supported: PQ_VERSION, .. })
        ));
    }

    // Offsets that pass the checksum but do not tile 0..dim are reported at their byte offset.
    #[test]
    fn bad_offsets_with_valid_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pq");
        write_codebook(&path, &small_codebook(), &meta()).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // Offsets are 0,2,4,5 at bytes 48..64; make chunk 1 empty (0,2,2,5).
        bytes[56..60].copy_from_slice(&2u32.to_le_bytes());
        let n = bytes.len();
        let crc = crc32c(&bytes[..n - 4]);
        bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let err = decode_codebook(&path, &bytes).unwrap_err();
        assert!(matches!(err, FormatError::Corrupt { offset: 56, .. }), "{err}");
    }
}
