//! The PQ codebook file: any bytes decode to a codebook whose size matches
//! the file, or an error.
#![no_main]

use std::path::Path;

use basalt::format::pq::{decode_codebook, pq_file_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((cb, _)) = decode_codebook(Path::new("pq"), data) {
        assert_eq!(pq_file_bytes(cb.dim(), cb.chunks()), data.len());
    }
});
