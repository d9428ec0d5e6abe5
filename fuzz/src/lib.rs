//! What the index targets share: one `modules.*` file from the fuzzer, the others fixed and
//! valid, so that the fuzzer's bytes reach deep into the parser of that one file.

use limopack::read::index::{ModuleIndex, Sources};

const DEP: &str = "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko\nkernel/lib/crc16.ko:\nkernel/crypto/crc32c_generic.ko:\n";
const ALIAS: &str = "alias crypto-crc32c crc32c_generic\nalias fs-ext4 ext4\n";
const SOFTDEP: &str = "softdep ext4 pre: crypto-crc32c\n";

/// Parse an index whose file `name` (`modules.dep`, `.alias` or `.softdep`) is `data`; a
/// parsed index must answer lookups and closures. Errors are fine; panics are the bugs.
pub fn index_with(name: &str, data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let file = |this: &str, fixed: &str| {
        let body = if this == name { text.clone() } else { fixed.to_string() };
        Some((std::path::PathBuf::from(this), body))
    };
    let sources = Sources {
        dep: file("modules.dep", DEP).map(|(path, text)| (path, text.into())),
        alias: file("modules.alias", ALIAS),
        softdep: file("modules.softdep", SOFTDEP),
        ..Sources::default()
    };
    if let Ok(index) = ModuleIndex::parse(sources) {
        let all: Vec<_> = (0..index.modules().len()).collect();
        let _ = index.closure(&all);
        for wanted in ["ext4", "fs-ext4", "crc32c", "pci:v00008086d000015B8sv0sd0bc02sc00i00"] {
            let _ = index.lookup(wanted);
        }
    }
}
