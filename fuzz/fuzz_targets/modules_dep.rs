//! `modules.dep` as the fuzzer writes it: the index parses or refuses, never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| limopack_fuzz::index_with("modules.dep", data));
