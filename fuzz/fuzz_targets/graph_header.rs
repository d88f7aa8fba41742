//! The graph file's header sector: any bytes decode to a checked header or
//! an error; an accepted header re-encodes to the same bytes.
#![no_main]

use std::path::Path;

use basalt::format::graph::GraphHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = GraphHeader::decode(Path::new("graph"), data) {
        assert_eq!(&h.encode()[..], &data[..h.encode().len()], "accepted headers round-trip");
        let l = h.layout();
        assert!(l.file_bytes() >= 4096);
    }
});
