//! A depmod binary index as the fuzzer writes it, looked up with a key it writes too: the
//! input's first line is the key, the rest the index. Lookups answer or mark the index
//! damaged, never panic or loop; an exact answer is among the wildcard search's, unless the
//! key holds a wildcard (kmod's search then takes it as a pattern) or the index is damaged. The
//! seeds in `fuzz/seeds/binary_index/` are the real indexes of `tests/data/kmod-index/`, each
//! after a key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use limopack::read::binary_index::BinaryIndex;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |&b| b == b'\n');
    let key = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let bytes = parts.next().unwrap_or_default().to_vec();
    let Ok(index) = BinaryIndex::parse(std::path::Path::new("fuzz.bin"), bytes) else { return };
    let exact = index.lookup(&key);
    let mut found = Vec::new();
    index.search_wild(&key, &mut found);
    if let Some(value) = exact.filter(|_| !index.is_damaged() && !key.contains(['*', '?', '['])) {
        assert!(found.contains(&value), "{key:?}: {value} not in {found:?}");
    }
});

