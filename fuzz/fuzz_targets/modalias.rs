//! A device's modalias as a hostile device (a USB gadget) could send it, looked up as the udev
//! rule and `restore --modalias` do: in a real kernel's alias index (kmod 34's, of
//! `tests/data/kmod-index/`) as limopack's copy from before the prune, with the tree's own
//! index empty, as after a prune of everything. The lookup never panics or loops; it answers
//! only a key of printable ASCII without blanks of at most 4096 bytes; what it calls pruned
//! is among what the copy matches; and every answer is a module name, never a path. The seeds
//! in `fuzz/seeds/modalias/` are modaliases of real devices and hostile strings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use limopack::read::hotplug::{key, Indexes, MAX_MODALIAS};

const SAVED: &[u8] = include_bytes!("../../tests/data/kmod-index/kmod34/modules.alias.bin");
const EMPTY: &[u8] = include_bytes!("../../tests/data/kmod-index/kmod34/empty.modules.alias.bin");

fuzz_target!(|data: &[u8]| {
    let modalias = String::from_utf8_lossy(data);
    let indexes = Indexes::from_bytes(SAVED.to_vec(), Some(EMPTY.to_vec())).expect("the real index reads");
    let matching = indexes.matching(&modalias);
    let pruned = indexes.pruned_for(&modalias);
    assert!(pruned.iter().all(|m| matching.contains(m)), "{modalias:?}: {pruned:?} not in {matching:?}");
    if !matching.is_empty() {
        let key = key(&modalias).expect("an answer for no key");
        assert!(key.len() <= MAX_MODALIAS && key.bytes().all(|b| b.is_ascii_graphic()));
    }
    for module in &matching {
        assert!(!module.is_empty() && !module.contains(['/', '.', ' ']), "{modalias:?}: {module:?}");
    }
});
