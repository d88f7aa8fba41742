//! The hot list file: any bytes decode to ids whose count matches the file,
//! or an error; nothing is allocated from an unchecked count.
#![no_main]

use std::path::Path;

use basalt::format::hot::{HOT_HEADER_BYTES, decode_hot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, ids)) = decode_hot(Path::new("hot"), data) {
        assert_eq!(HOT_HEADER_BYTES + 4 * ids.len() + 4, data.len());
    }
});
