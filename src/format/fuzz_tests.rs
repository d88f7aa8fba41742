//! Decoders on hostile input: random bytes, and valid encodings with one
//! field changed and the checksum then re-sealed, so that the change gets
//! past the checksum and reaches the range checks behind it (a plain
//! mutation fails the checksum first and never tests them). Every case must
//! end in a clear error or a value that round-trips, never a panic, and
//! never an allocation sized by a field that was not checked first (the
//! decoders compare sizes against the input's length before allocating).
//! The cargo-fuzz targets in `fuzz/` drive the same decoders.

use std::path::Path;

use proptest::prelude::*;

use super::codes::{CODES_HEADER_BYTES, decode_codes};
use super::graph::{GraphHeader, Layout, RecordFault};
use super::pq::{PqFileMeta, decode_codebook};
use super::{FileIdent, FormatError, SECTOR_BYTES, crc32c, crc32c_append};
use crate::distance::Metric;
use crate::element::ElementType;
use crate::index::Manifest;

const IDENT: FileIdent = FileIdent { build_id: 0x1234_5678_9abc_def0, generation: 7 };

fn valid_header() -> GraphHeader {
    GraphHeader {
        metric: Metric::L2,
        element: ElementType::F32,
        dim: 8,
        degree_max: 4,
        count: 10,
        medoid: 3,
        pq_chunks: 2,
        list_size: 10,
        alpha: 1.2,
        passes: 2,
        seed: 1,
        ident: IDENT,
        ip_norm_max: 0.0,
        placement: Default::default(),
    }
}

/// Replaces `width` bytes at `at` with the low bytes of `value`.
fn set_field(b: &mut [u8], at: usize, width: usize, value: u64) {
    b[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
}

/// Values that probe range checks: boundaries, their neighbours, huge ones.
fn probe_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(255),
        Just(4096),
        Just(16_384),
        Just(16_385),
        Just(u32::MAX as u64 - 1),
        Just(u32::MAX as u64),
        Just(u32::MAX as u64 + 1),
        Just(u64::MAX),
        Just(f32::NAN.to_bits() as u64),
        Just(f32::INFINITY.to_bits() as u64),
        Just((-1.0f32).to_bits() as u64),
        any::<u64>(),
        0u64..100_000,
    ]
}

/// The graph header's fields as (offset, width).
const HEADER_FIELDS: [(usize, usize); 21] = [
    (8, 4),
    (12, 1),
    (13, 1),
    (14, 2),
    (16, 4),
    (20, 4),
    (24, 8),
    (32, 4),
    (36, 4),
    (40, 4),
    (44, 4),
    (48, 4),
    (52, 4),
    (56, 4),
    (60, 4),
    (64, 8),
    (72, 8),
    (80, 8),
    (88, 8),
    (96, 4),
    (100, 4),
];

fn reseal_header(b: &mut [u8]) {
    let crc = crc32c(&b[..SECTOR_BYTES - 4]);
    b[SECTOR_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// A small valid codebook file and its metadata.
fn valid_codebook_bytes(metric: Metric) -> Vec<u8> {
    let sample: Vec<f32> = (0..300 * 5).map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0).collect();
    let cb = crate::pq::Codebook::train(&sample, 5, &crate::pq::PqParams::new(3, 1))
        .expect("small codebook trains");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pq");
    let ip_norm_max = if metric == Metric::InnerProduct { 9.0 } else { 0.0 };
    super::pq::write_codebook(&path, &cb, &PqFileMeta { ident: IDENT, metric, ip_norm_max })
        .expect("write codebook");
    std::fs::read(&path).expect("read back")
}

fn reseal_trailing_crc(b: &mut [u8]) {
    let n = b.len();
    let crc = crc32c(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

fn valid_codes_bytes(chunks: usize, n: usize) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(super::codes::CODES_MAGIC);
    b.extend_from_slice(&super::codes::CODES_VERSION.to_le_bytes());
    b.extend_from_slice(&(chunks as u32).to_le_bytes());
    b.extend_from_slice(&(n as u64).to_le_bytes());
    b.extend_from_slice(&IDENT.encode());
    b.extend((0..chunks * n).map(|i| (i * 31) as u8));
    b.extend_from_slice(&[0; 4]);
    reseal_trailing_crc(&mut b);
    b
}

/// An error must say which file it is about.
fn names_file(e: &FormatError, name: &str) -> bool {
    e.to_string().contains(name)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Header decode on random bytes and on randomly overwritten valid headers.
    #[test]
    fn graph_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000),
                                 flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8)) {
        let _ = GraphHeader::decode(Path::new("g"), &bytes);
        let mut h = valid_header().encode();
        for (at, v) in flips {
            h[at] = v;
        }
        let _ = GraphHeader::decode(Path::new("g"), &h);
    }

    /// One header field set to a probing value, checksum re-sealed: either a
    /// clear error naming the file, or a header that re-encodes to the same bytes.
    #[test]
    fn graph_header_field_resealed(field in 0usize..HEADER_FIELDS.len(), value in probe_value(),
                                   ip in any::<bool>()) {
        let mut h = valid_header();
        if ip {
            h.metric = Metric::InnerProduct;
            h.ip_norm_max = 3.5;
        }
        let mut b = h.encode();
        let (at, width) = HEADER_FIELDS[field];
        set_field(&mut b, at, width, value);
        reseal_header(&mut b);
        match GraphHeader::decode(Path::new("graphfile"), &b) {
            Ok(d) => {
                prop_assert_eq!(d.encode(), b, "an accepted header must round-trip");
                prop_assert!(d.count <= u32::MAX as u64 && d.medoid as u64 <= d.count);
            }
            Err(e) => prop_assert!(names_file(&e, "graphfile"), "{}", e),
        }
    }

    /// Node records with the degree or one neighbour id changed and the
    /// (build-seeded) checksum re-sealed: the graph checks refuse every bad
    /// value, and an accepted record holds only valid ids.
    #[test]
    fn record_field_resealed(degree in probe_value(), slot in 0usize..4, id in probe_value(),
                             node in 0u32..10, which in 0u8..2) {
        let l = valid_header().layout();
        let mut rec = vec![0u8; l.record_bytes as usize];
        let vector = [0.5f32; 8];
        let nb: Vec<u32> = (0..3).map(|i| (node + 1 + i) % 10).collect();
        l.encode_record(node, &vector, &nb, &mut rec);
        let vb = 8 * 4;
        if which == 0 {
            set_field(&mut rec, vb, 4, degree);
        } else {
            set_field(&mut rec, vb + 4 + 4 * slot, 4, id);
        }
        let body_end = rec.len() - 4;
        let crc = crc32c_append(crc32c_append(l.crc_seed, &node.to_le_bytes()), &rec[..body_end]);
        rec[body_end..].copy_from_slice(&crc.to_le_bytes());
        match l.decode_record(node, &rec, true) {
            Ok(v) => {
                prop_assert!(v.degree() <= l.degree_max as usize);
                for n in v.neighbors() {
                    prop_assert!((n as u64) < l.count && n != node);
                }
            }
            Err(f) => prop_assert!(matches!(
                f,
                RecordFault::Degree { .. } | RecordFault::NeighborOutOfRange { .. } | RecordFault::SelfLoop
            ), "{f}"),
        }
    }

    /// Record decode on random bytes of the record's size, with and without graph checks.
    #[test]
    fn record_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 56), id in 0u32..10) {
        let l = Layout::new(8, ElementType::F32, 4, 10, IDENT.record_crc_seed());
        prop_assert_eq!(l.record_bytes as usize, 56);
        let _ = l.decode_record(id, &bytes, true);
        let _ = l.decode_record(id, &bytes, false);
    }

    /// Codebook decode on random bytes.
    #[test]
    fn codebook_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_codebook(Path::new("pq"), &bytes);
    }

    /// One codebook header field, chunk offset or value changed and the
    /// checksum re-sealed: a clear error, or a codebook whose shape matches
    /// the file's length.
    #[test]
    fn codebook_field_resealed(at in prop_oneof![
                                   (8usize..48).prop_map(|a| a & !3),
                                   (48usize..64).prop_map(|a| a & !3),
                                   (64usize..200).prop_map(|a| a & !3)],
                               value in probe_value(), ip in any::<bool>()) {
        let metric = if ip { Metric::InnerProduct } else { Metric::L2 };
        let mut b = valid_codebook_bytes(metric);
        let width = if at == 24 || at == 32 { 8 } else { 4 };
        set_field(&mut b, at, width, value);
        reseal_trailing_crc(&mut b);
        match decode_codebook(Path::new("pqfile"), &b) {
            Ok((cb, meta)) => {
                prop_assert_eq!(
                    super::pq::pq_file_bytes(cb.dim(), cb.chunks()), b.len());
                prop_assert!(meta.ident.build_id != 0);
                prop_assert!(cb.centroid().iter().chain(cb.centers()).all(|v| v.is_finite()));
            }
            Err(e) => prop_assert!(names_file(&e, "pqfile"), "{}", e),
        }
    }

    /// One codes header field changed and the checksum re-sealed.
    #[test]
    fn codes_field_resealed(field in 0usize..5, value in probe_value()) {
        let mut b = valid_codes_bytes(4, 9);
        let (at, width) = [(8, 4), (12, 4), (16, 8), (24, 8), (32, 8)][field];
        set_field(&mut b, at, width, value);
        reseal_trailing_crc(&mut b);
        match decode_codes(Path::new("codesfile"), &b) {
            Ok(c) => {
                prop_assert_eq!(CODES_HEADER_BYTES + 4 + c.bytes().len(), b.len());
                prop_assert_eq!(c.bytes().len() as u64, c.n() * c.chunks() as u64);
            }
            Err(e) => prop_assert!(names_file(&e, "codesfile"), "{}", e),
        }
    }

    /// Codes decode on random bytes.
    #[test]
    fn codes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_codes(Path::new("codes"), &bytes);
    }

    /// Hot list decode on random bytes, and with the count changed and the
    /// checksum re-sealed.
    #[test]
    fn hot_list_field_resealed(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                               field in 0usize..4, value in probe_value()) {
        let _ = super::hot::decode_hot(Path::new("hot"), &bytes);
        let mut b = super::hot::encode_hot(&[3, 1, 4, 1, 5], IDENT);
        let (at, width) = [(8, 4), (12, 4), (16, 8), (24, 8)][field];
        set_field(&mut b, at, width, value);
        reseal_trailing_crc(&mut b);
        match super::hot::decode_hot(Path::new("hotfile"), &b) {
            Ok((_, ids)) => prop_assert_eq!(super::hot::HOT_HEADER_BYTES + 4 * ids.len() + 4, b.len()),
            Err(e) => prop_assert!(names_file(&e, "hotfile"), "{}", e),
        }
    }

    /// Manifest decode on random bytes.
    #[test]
    fn manifest_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Manifest::decode(Path::new("m"), &bytes);
    }

    /// One manifest field replaced by a hostile value (wrong types, path
    /// names, huge numbers) and the checksum line re-sealed: a clear error,
    /// or a manifest whose files are exactly the layout's plain names.
    #[test]
    fn manifest_field_resealed(field in 0usize..12, value in manifest_value()) {
        let mut v = serde_json::to_value(crate::index::tests_support::sample_manifest())
            .expect("serialises");
        let key = ["format_version", "build_id", "generation", "lsn", "metric", "element", "dim",
                   "count", "ip_norm_max", "build", "files", "files.0.name"][field];
        if let Some(name_key) = key.strip_prefix("files.0.") {
            v["files"][0][name_key] = value;
        } else {
            v[key] = value;
        }
        let mut bytes = serde_json::to_vec_pretty(&v).expect("serialises");
        bytes.push(b'\n');
        let crc = crc32c(&bytes);
        bytes.extend_from_slice(format!("crc32c {crc:#010x}\n").as_bytes());
        match Manifest::decode(Path::new("manifestfile"), &bytes) {
            Ok(m) => {
                let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
                prop_assert_eq!(&names[..4], &crate::index::LAYOUT_FILES[..]);
                prop_assert!(m.dim > 0 && m.count > 0);
                let _ = m.ident();
            }
            Err(e) => prop_assert!(names_file(&e, "manifestfile"), "{}", e),
        }
    }
}

fn manifest_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    prop_oneof![
        Just(json!(null)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(u64::MAX)),
        Just(json!(1e300)),
        Just(json!("../../etc/passwd")),
        Just(json!("/etc/passwd")),
        Just(json!("gen-0/graph")),
        Just(json!("..")),
        Just(json!("")),
        Just(json!("graph")),
        Just(json!("ffffffffffffffff")),
        Just(json!("0000000000000000")),
        Just(json!("ip")),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"name": "graph", "bytes": 1, "xxh3": 1}])),
        any::<i64>().prop_map(|x| json!(x)),
        "[a-z./]{0,12}".prop_map(|s| json!(s)),
    ]
}
