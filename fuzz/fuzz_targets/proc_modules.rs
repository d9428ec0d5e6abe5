//! `/proc/modules` as the fuzzer writes it: names come out, or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = limopack::read::loaded::parse(std::path::Path::new("/proc/modules"), &text);
});
