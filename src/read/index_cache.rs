//! Parsed `modules.dep` files, kept between runs in `/var/cache/limopack/VERSION.index`.
//!
//! Parsing a tree's `modules.dep` is the largest part of a plan: four thousand lines, each
//! module named from its path and each dependency looked up by its path. A real run keeps
//! what it parsed for a kernel, the tree's `modules.dep` and limopack's saved copy of it, each
//! under the XXH3-128 hash of its text, and a later run takes the parse of a text that hashes
//! the same. Keyed by the text, not by the file: after a prune the saved copy holds the text
//! the tree had before, so the parse the pruning run kept serves every run after it.
//!
//! Anything in the cache that does not read back whole is ignored, and the text is parsed.
//! Like the tree cache, it is root's and only limopack writes it.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::read::index::{DepList, ModuleIndex};
use crate::fs::bytes::Bytes;
use crate::name::Shared;
use crate::kver::Kver;
use crate::root::{cache_name, Root, CACHE_DIR};

const HEADER: &str = "limopack parsed modules.dep 1";

/// What a parse is kept under: the hash of the text it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(u128);

impl Key {
    pub fn of(text: &[u8]) -> Key {
        Key(xxhash_rust::xxh3::xxh3_128(text))
    }
}

/// One kernel's cache, as a run found it.
#[derive(Debug, Default)]
pub struct IndexCache {
    bytes: Option<Bytes>,
}

impl IndexCache {
    /// The cache of kernel `version`; an empty one when there is none, or it cannot be read.
    pub fn read(root: &Root, version: &Kver) -> IndexCache {
        let bytes = root.own(CACHE_DIR).ok().flatten().and_then(|caches| caches.bytes_if_there(&cache_name(version, "index"), crate::fs::limits::STATE).ok().flatten());
        IndexCache { bytes }
    }

    /// The parse kept for the text with `key`, if there is one and it reads back whole: every
    /// line complete, no name twice, and every dependency a module of the list.
    pub fn lookup(&self, key: Key) -> Option<DepList> {
        let section = self.sections()?.into_iter().find(|s| s.key == key)?;
        // One copy of the text, of which every name and path is a part.
        let text: Arc<str> = std::str::from_utf8(section.text).ok()?.into();
        // A line has a few bytes at least: the counts of a broken header ask for no more.
        let mut list = DepList::with_capacity(section.modules.min(text.len()), section.deps.min(text.len()));
        let mut deps = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let end = memchr::memchr(b'\n', &text.as_bytes()[start..]).map_or(text.len(), |n| start + n);
            let line = &text[start..end];
            let name_end = memchr::memchr(b'\t', line.as_bytes())?;
            let path_end = name_end + 1 + memchr::memchr(b'\t', &line.as_bytes()[name_end + 1..])?;
            if name_end == 0 || path_end == name_end + 1 {
                return None;
            }
            deps.clear();
            positions(&line[path_end + 1..], &mut deps)?;
            let (name, path) = (Shared::part_of(&text, start..start + name_end), Shared::part_of(&text, start + name_end + 1..start + path_end));
            list.push(name, path, deps.drain(..)).then_some(())?;
            start = end + 1;
        }
        list.is_whole().then_some(list)
    }

    /// Each kept parse: a header line, then one line for each parse with its key, its length
    /// and how many modules and dependencies it lists, an empty line, and the parses one after
    /// the other.
    fn sections(&self) -> Option<Vec<Section<'_>>> {
        let bytes = self.bytes.as_deref()?;
        let end = memchr::memmem::find(bytes, b"\n\n")?;
        let head = std::str::from_utf8(&bytes[..end]).ok()?;
        let mut body = &bytes[end + 2..];
        let mut lines = head.split('\n');
        (lines.next()? == HEADER).then_some(())?;
        let mut sections = Vec::new();
        for line in lines {
            let mut words = line.split(' ');
            let key = Key(u128::from_str_radix(words.next()?, 16).ok()?);
            let [len, modules, deps] = [words.next()?, words.next()?, words.next()?].map(str::parse::<usize>);
            let (text, rest) = body.split_at_checked(len.ok()?)?;
            sections.push(Section { key, text, modules: modules.ok()?, deps: deps.ok()? });
            body = rest;
        }
        body.is_empty().then_some(sections)
    }

    /// The cache of the parses a run made or took, to keep in place of what was kept. Each
    /// line is a module's name, its path and its dependencies by position; a module's
    /// name and path never hold a tab or a line break, as depmod splits its lines at both.
    pub fn render<'a>(parsed: impl IntoIterator<Item = (Key, &'a ModuleIndex)>) -> String {
        let mut head = format!("{HEADER}\n");
        let mut body = String::new();
        for (key, index) in parsed {
            let (start, mut deps) = (body.len(), 0);
            for (id, module) in index.modules().iter().enumerate() {
                let _ = write!(body, "{}\t{}\t", module.name, module.path);
                for (n, dep) in index.deps(id).iter().enumerate() {
                    let _ = write!(body, "{}{dep}", if n == 0 { "" } else { " " });
                }
                body.push('\n');
                deps += index.deps(id).len();
            }
            let _ = writeln!(head, "{:032x} {} {} {deps}", key.0, body.len() - start, index.modules().len());
        }
        head.push('\n');
        head.push_str(&body);
        head
    }
}

/// One kept parse, where it is in the cache.
struct Section<'a> {
    key: Key,
    text: &'a [u8],
    /// How many modules and dependencies it lists: the room to make for them.
    modules: usize,
    deps: usize,
}

/// The positions of `ids`, a module's dependencies as the cache writes them: decimal numbers
/// with a space between two. `None` for anything else.
fn positions(ids: &str, into: &mut Vec<usize>) -> Option<()> {
    if ids.is_empty() {
        return Some(());
    }
    // One pass over the bytes, the digits so far in `id`: ten thousand of these on every run.
    let mut id = None;
    for b in ids.bytes().chain([b' ']) {
        match (b, id) {
            (b'0'..=b'9', _) => id = Some(id.unwrap_or(0usize).checked_mul(10)?.checked_add(usize::from(b - b'0'))?),
            (b' ', Some(done)) => {
                into.push(done);
                id = None;
            }
            _ => return None,
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::index::Sources;

    const DEP: &str = "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko\n\
                       kernel/lib/crc16.ko:\nkernel/fs/jbd2/jbd2.ko:\nkernel/crypto/crc32c-generic.ko:\n";

    fn parse(dep: &str, parsed: Option<DepList>) -> ModuleIndex {
        ModuleIndex::parse(Sources { dep: Some(("modules.dep".into(), dep.into())), parsed_dep: parsed, ..Sources::default() }).unwrap()
    }

    /// Every module with its path, its dependencies by name and its position by name: what a
    /// plan sees of the list.
    fn shown(index: &ModuleIndex) -> Vec<String> {
        (0..index.modules().len())
            .map(|id| {
                let deps: Vec<&str> = index.deps(id).iter().map(|&d| &*index.module(d).name).collect();
                let m = index.module(id);
                format!("{} {} [{}] {:?}", m.name, m.path, deps.join(" "), index.by_name(&m.name))
            })
            .collect()
    }

    #[test]
    fn a_kept_parse_is_taken_for_the_same_text_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let other = "kernel/lib/crc16.ko:\n";
        let (index, small) = (parse(DEP, None), parse(other, None));
        assert_eq!(shown(&index)[3], "crc32c_generic kernel/crypto/crc32c-generic.ko [] Some(3)");
        crate::apply::store::keep_cache(&root, &crate::kver::kv("6.1"), "index", &IndexCache::render([(Key::of(DEP.as_bytes()), &index), (Key::of(other.as_bytes()), &small)])).unwrap();

        // Taken: an index of no text at all holds the kept list.
        let cache = IndexCache::read(&root, &crate::kver::kv("6.1"));
        assert_eq!(shown(&parse("", cache.lookup(Key::of(DEP.as_bytes())))), shown(&index));
        assert_eq!(shown(&parse("", cache.lookup(Key::of(other.as_bytes())))), shown(&small));
        assert!(cache.lookup(Key::of(b"kernel/fs/jbd2/jbd2.ko:\n")).is_none());
        assert!(IndexCache::read(&root, &crate::kver::kv("6.2")).lookup(Key::of(DEP.as_bytes())).is_none());

        crate::apply::store::forget_kernel(&root, &crate::kver::kv("6.1")).unwrap();
        assert!(IndexCache::read(&root, &crate::kver::kv("6.1")).lookup(Key::of(DEP.as_bytes())).is_none());
    }

    #[test]
    fn a_cache_that_does_not_read_back_whole_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let key = Key::of(DEP.as_bytes());
        crate::apply::store::keep_cache(&root, &crate::kver::kv("6.1"), "index", &IndexCache::render([(key, &parse(DEP, None))])).unwrap();
        let path = root.cache_path(&crate::kver::kv("6.1"), "index");
        let good = std::fs::read_to_string(&path).unwrap();
        let body = good.split_once("\n\n").unwrap().1;
        let file = |body: &str| format!("{HEADER}\n{:032x} {} 4 2\n\n{body}", key.0, body.len());
        assert_eq!(file(body), good);
        assert!(IndexCache::read(&root, &crate::kver::kv("6.1")).lookup(key).is_some());
        let broken = [
            file(body).replace("parsed modules.dep 1", "parsed modules.dep 2"),
            good[..good.len() - 1].to_string(),
            format!("{good}extra\tkernel/extra.ko\t\n"),
            file(&body.replacen("\t1 2\n", "\t1 x\n", 1)),
            file(&body.replacen("\t1 2\n", "\t1  2\n", 1)),
            file(&body.replacen("\t\n", "\n", 1)),
            file(&body.replacen("crc16\t", "\t", 1)),
            // Well formed, but a dependency past the end, or a name twice.
            file(&body.replacen("\t1 2\n", "\t1 9\n", 1)),
            file(&body.replacen("crc16\t", "jbd2\t", 1)),
        ];
        for text in &broken {
            assert_ne!(text, &good);
            std::fs::write(&path, text).unwrap();
            assert!(IndexCache::read(&root, &crate::kver::kv("6.1")).lookup(key).is_none(), "{text}");
        }
    }
}
