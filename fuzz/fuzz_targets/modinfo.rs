//! A module file's bytes as the fuzzer writes them: its `.modinfo` comes out, or an error,
//! never a panic. The seeds in `fuzz/seeds/modinfo/` are `gcc -Os -c` (and `-m32`) of a C
//! file of `static const char x[] __attribute__((section(".modinfo"), used, aligned(1))) =
//! "firmware=…";` lines, as the kernel's `MODULE_*` macros write them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = limopack::read::modinfo::parse(std::path::Path::new("fuzz.ko"), data) {
        assert!(info.firmware.len() <= info.get_all("firmware").count());
    }
});
