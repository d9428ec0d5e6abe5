//! A declaration file as bytes: parsing either gives a declaration or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use limopack::read::declaration::{Declaration, Origin};

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("/usr/share/limopack/fuzz.yaml");
    if let Ok(decl) = Declaration::parse(path, data, Origin::Vendor) {
        let _ = decl.applies_to("6.1.0-1-amd64");
    }
});
