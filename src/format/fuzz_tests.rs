//! Decoders never panic on arbitrary bytes: random inputs and random
//! mutations of valid encodings either decode or return an error.
//! (Property tests standing in for fuzz targets until those exist.)

use std::path::Path;

use proptest::prelude::*;

use super::graph::{GraphHeader, Layout};
use crate::distance::Metric;
use crate::element::ElementType;
use crate::index::Manifest;

fn valid_header() -> Vec<u8> {
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
    }
    .encode()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Header decode on random bytes and on mutated valid headers.
    #[test]
    fn graph_header_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000),
                                 flips in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8)) {
        let _ = GraphHeader::decode(Path::new("g"), &bytes);
        let mut h = valid_header();
        for (at, v) in flips {
            h[at] = v;
        }
        let _ = GraphHeader::decode(Path::new("g"), &h);
    }

    /// Record decode on random bytes of the record's size, with and without graph checks.
    #[test]
    fn record_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 56), id in 0u32..10) {
        let l = Layout::new(8, ElementType::F32, 4, 10);
        prop_assert_eq!(l.record_bytes as usize, 56);
        let _ = l.decode_record(id, &bytes, true);
        let _ = l.decode_record(id, &bytes, false);
    }

    /// Codebook decode on random bytes.
    #[test]
    fn codebook_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = super::pq::decode_codebook(Path::new("pq"), &bytes);
    }

    /// Manifest decode on random bytes and on truncated valid JSON.
    #[test]
    fn manifest_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), cut in 0usize..200) {
        let _ = Manifest::decode(Path::new("m"), &bytes);
        let valid = br#"{"body": {"format_version": 1}, "crc32c": 0}"#;
        let _ = Manifest::decode(Path::new("m"), &valid[..cut.min(valid.len())]);
    }
}
