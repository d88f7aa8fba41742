//! The manifest: any bytes decode to a checked manifest (plain file names,
//! exactly the layout's files) or an error.
#![no_main]

use std::path::Path;

use basalt::index::{LAYOUT_FILES, Manifest, check_plain_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(Path::new("manifest"), data) {
        assert!(m.files.iter().all(|f| check_plain_name(&f.name).is_ok()));
        let names: Vec<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, LAYOUT_FILES);
        let _ = m.ident();
    }
});
