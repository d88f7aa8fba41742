//! Node records of three layouts (f32 packed, u8, f32 spanning sectors):
//! any bytes decode to a record whose degree and ids are in range, or a fault.
#![no_main]

use basalt::element::ElementType;
use basalt::format::FileIdent;
use basalt::format::graph::Layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let seed = FileIdent { build_id: 7, generation: 1 }.record_crc_seed();
    for l in [
        Layout::new(8, ElementType::F32, 4, 10, seed),
        Layout::new(16, ElementType::U8, 8, 1000, seed),
        Layout::new(1100, ElementType::F32, 8, 3, seed),
    ] {
        let len = l.record_bytes as usize;
        if data.len() < len + 4 {
            continue;
        }
        let id = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) % l.count as u32;
        if let Ok(v) = l.decode_record(id, &data[4..4 + len], true) {
            assert!(v.degree() <= l.degree_max as usize);
            assert!(v.neighbors().all(|n| (n as u64) < l.count && n != id));
        }
    }
});
