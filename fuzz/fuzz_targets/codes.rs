//! The PQ codes file: any bytes decode to codes whose count matches the
//! file, or an error; nothing is allocated from an unchecked count.
#![no_main]

use std::path::Path;

use basalt::format::codes::decode_codes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = decode_codes(Path::new("codes"), data) {
        assert_eq!(c.bytes().len() as u64, c.n() * c.chunks() as u64);
    }
});
