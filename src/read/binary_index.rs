//! depmod's binary indexes (`modules.alias.bin` and the other `*.bin` files), read the way
//! libkmod reads them, so that a lookup costs a walk down a trie instead of parsing the text
//! twin of the file (1.3 MB of `modules.alias` on a Debian kernel).
//!
//! The format (kmod's `libkmod-index.c`): a big-endian header of magic `0xB007F457`, version
//! `0x0002000x` and the root node's offset. A node offset carries flags in its top bits: a
//! node may have a NUL-terminated prefix, a child table (first and last character, then one
//! offset per character in between, 0 for none) and values (a count, then for each a
//! priority and a NUL-terminated string). Keys are the path of characters from the root.
//!
//! Nodes may lie in any order: kmod up to 33 (bookworm's 30) writes each node after its
//! children, kmod 34 on (trixie) writes the root first and each node before its children. An
//! empty tree's index is its header alone, its root a node of nothing at offset 12.
//!
//! Like libkmod, it reads only the nodes a lookup walks through, not the whole file. What keeps
//! a walk safe does not depend on the order: each node is decoded with bounds checks, past the
//! header and inside the file; no walk meets a node twice (a trie has no loop and no child of
//! two parents); an exact walk takes a byte of the key at each step; a wildcard walk is bounded
//! in depth and in the nodes it visits. So no file can make a lookup go out of bounds or loop.
//! A lookup that meets a node that does not decode marks the index damaged: its answers may be
//! short, and the caller must not trust them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustc_hash::FxHashSet;

use crate::error::{Error, Result};
use crate::fs::bytes::Bytes;
use crate::name::fnmatch;

const MAGIC: u32 = 0xB007_F457;
/// Magic, version and root offset: no node starts before this.
const HEADER: usize = 12;
const VERSION_MAJOR: u32 = 2;
const NODE_PREFIX: u32 = 0x8000_0000;
const NODE_VALUES: u32 = 0x4000_0000;
const NODE_CHILDS: u32 = 0x2000_0000;
const NODE_MASK: u32 = 0x0FFF_FFFF;
/// Keys are module names, aliases and paths: kmod bounds them by `PATH_MAX`.
const MAX_DEPTH: usize = 4096;

/// One depmod binary index, mapped.
#[derive(Debug)]
pub struct BinaryIndex {
    path: PathBuf,
    bytes: Bytes,
    root: u32,
    damaged: AtomicBool,
}

/// A node, decoded: borrowed slices of the file.
struct Node<'a> {
    /// Where it starts in the file.
    at: usize,
    prefix: &'a [u8],
    first: u8,
    /// Big-endian child offsets for `first..`, one per character.
    children: &'a [u8],
    values: Values<'a>,
}

/// The values of a node, decoded as they are read: `(priority, value)` pairs.
#[derive(Clone)]
struct Values<'a> {
    left: u32,
    rest: &'a [u8],
}

impl<'a> Values<'a> {
    /// The next value; `Err` when the node ends before its values do.
    fn next_value(&mut self) -> Option<std::result::Result<&'a str, Damaged>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let value = self.rest.get(4..).and_then(|text| {
            let end = memchr::memchr(0, text)?;
            self.rest = &text[end + 1..];
            std::str::from_utf8(&text[..end]).ok()
        });
        Some(value.ok_or(Damaged))
    }
}

impl Node<'_> {
    fn child_offset(&self, ch: u8) -> Option<u32> {
        let at = usize::from(ch.checked_sub(self.first)?) * 4;
        let raw = self.children.get(at..at + 4)?;
        Some(u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]])).filter(|o| o & NODE_MASK != 0)
    }

    /// Every child, with its character.
    fn children(&self) -> impl Iterator<Item = (u8, u32)> + '_ {
        self.children
            .chunks_exact(4)
            .enumerate()
            .map(|(i, raw)| (self.first.wrapping_add(i as u8), u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]])))
            .filter(|(_, o)| o & NODE_MASK != 0)
    }
}

/// A walk that met a node that does not decode.
struct Damaged;

impl BinaryIndex {
    /// Read the index at `path`; `None` when there is no such file. Only its header is
    /// checked here.
    pub fn read(path: &Path) -> Result<Option<BinaryIndex>> {
        crate::fs::mapped_if_there(path, crate::fs::limits::INDEX)?.map(|bytes| BinaryIndex::parse(path, bytes)).transpose()
    }

    /// Take `bytes`, read from `path`, as an index, checking its header.
    pub fn parse(path: &Path, bytes: impl Into<Bytes>) -> Result<BinaryIndex> {
        let bytes = bytes.into();
        let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let bad = |message: String| Error::damaged(path, format!("{message}; run depmod"));
        match (word(0), word(4), word(8)) {
            (Some(MAGIC), Some(version), Some(root)) if version >> 16 == VERSION_MAJOR => {
                Ok(BinaryIndex { path: path.to_path_buf(), bytes, root, damaged: AtomicBool::new(false) })
            }
            (Some(MAGIC), Some(version), Some(_)) => Err(bad(format!("kmod index version {:#x}, expected 2.x", version >> 16))),
            _ => Err(bad("not a kmod index".into())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a lookup met a node that does not decode: answers given since may be short.
    pub fn is_damaged(&self) -> bool {
        self.damaged.load(Ordering::Relaxed)
    }

    fn mark(&self, _: Damaged) {
        self.damaged.store(true, Ordering::Relaxed);
    }

    /// Decode the node at `offset`. A node with no flags has no bytes, so it may start where
    /// the file ends: that is the root of an empty tree's index, as depmod writes it.
    fn node(&self, offset: u32) -> std::result::Result<Node<'_>, Damaged> {
        let start = (offset & NODE_MASK) as usize;
        let bytes = &self.bytes;
        if start < HEADER || start > bytes.len() {
            return Err(Damaged);
        }
        let mut at = start;
        let mut prefix: &[u8] = &[];
        if offset & NODE_PREFIX != 0 {
            let end = at + memchr::memchr(0, &bytes[at..]).ok_or(Damaged)?;
            prefix = &bytes[at..end];
            at = end + 1;
        }
        let (mut first, mut children): (u8, &[u8]) = (0, &[]);
        if offset & NODE_CHILDS != 0 {
            let (&f, &l) = (bytes.get(at).ok_or(Damaged)?, bytes.get(at + 1).ok_or(Damaged)?);
            let len = (usize::from(l.checked_sub(f).ok_or(Damaged)?) + 1) * 4;
            first = f;
            children = bytes.get(at + 2..at + 2 + len).ok_or(Damaged)?;
            at += 2 + len;
        }
        let mut values = Values { left: 0, rest: &[] };
        if offset & NODE_VALUES != 0 {
            let count = bytes.get(at..at + 4).ok_or(Damaged)?;
            values = Values { left: u32::from_be_bytes([count[0], count[1], count[2], count[3]]), rest: &bytes[at + 4..] };
        }
        Ok(Node { at: start, prefix, first, children, values })
    }

    /// The first value stored under `key` exactly, as kmod's `index_mm_search` gives it.
    pub fn lookup(&self, key: &str) -> Option<&str> {
        match self.find(key.as_bytes()) {
            Ok(node) => node?.values.next_value()?.map_err(|e| self.mark(e)).ok(),
            Err(e) => {
                self.mark(e);
                None
            }
        }
    }

    /// The node reached by `key` exactly, if any. Each step takes a byte of the key, so the
    /// walk ends after `key.len() + 1` nodes at most, whatever the file says.
    fn find(&self, mut key: &[u8]) -> std::result::Result<Option<Node<'_>>, Damaged> {
        let mut seen = Seen::default();
        let mut node = self.node(self.root)?;
        seen.visit(&node)?;
        loop {
            let Some(rest) = key.strip_prefix(node.prefix) else { return Ok(None) };
            let Some((&ch, rest)) = rest.split_first() else { return Ok(Some(node)) };
            let Some(offset) = node.child_offset(ch) else { return Ok(None) };
            node = self.node(offset)?;
            seen.visit(&node)?;
            key = rest;
        }
    }

    /// Every value whose pattern matches `key`, as kmod's `index_mm_searchwild`: the values of
    /// the key itself, and those of every pattern with a wildcard (`*`, `?`, `[`) met on the
    /// way down that matches the rest of the key as fnmatch(3) does.
    pub fn search_wild<'a>(&'a self, key: &str, found: &mut Vec<&'a str>) {
        if let Err(e) = self.search_wild_from(key.as_bytes(), found) {
            self.mark(e);
        }
    }

    fn search_wild_from<'a>(&'a self, key: &[u8], found: &mut Vec<&'a str>) -> std::result::Result<(), Damaged> {
        let mut path = Seen::default();
        let mut walk = Walk { seen: Seen::default(), budget: self.bytes.len() };
        let mut node = self.node(self.root)?;
        let mut i = 0;
        loop {
            path.visit(&node)?;
            for (j, &ch) in node.prefix.iter().enumerate() {
                if matches!(ch, b'*' | b'?' | b'[') {
                    // The prefix matched the key so far, so `i + j` is within it.
                    return self.all_matching(&node, j, &mut Vec::new(), &key[i + j..], found, walk.anew());
                }
                if key.get(i + j) != Some(&ch) {
                    return Ok(());
                }
            }
            i += node.prefix.len();
            for wild in [b'*', b'?', b'['] {
                if let Some(offset) = node.child_offset(wild) {
                    let child = self.node(offset)?;
                    self.all_matching(&child, 0, &mut vec![wild], &key[i..], found, walk.anew())?;
                }
            }
            let Some(&ch) = key.get(i) else {
                let mut values = node.values.clone();
                while let Some(value) = values.next_value() {
                    found.push(value?);
                }
                return Ok(());
            };
            let Some(offset) = node.child_offset(ch) else { return Ok(()) };
            node = self.node(offset)?;
            i += 1;
        }
    }

    /// The values under `node` whose full pattern (`pattern` so far, then `node`'s prefix from
    /// `skip` on and the rest of the path down to them) matches `rest` of the key. Recursion is
    /// as deep as the pattern is long, at most [`MAX_DEPTH`].
    fn all_matching<'a>(
        &'a self,
        node: &Node<'a>,
        skip: usize,
        pattern: &mut Vec<u8>,
        rest: &[u8],
        found: &mut Vec<&'a str>,
        walk: &mut Walk,
    ) -> std::result::Result<(), Damaged> {
        walk.enter(node)?;
        let mark = pattern.len();
        pattern.extend_from_slice(node.prefix.get(skip..).ok_or(Damaged)?);
        if pattern.len() > MAX_DEPTH {
            return Err(Damaged);
        }
        for (ch, offset) in node.children() {
            let child = self.node(offset)?;
            pattern.push(ch);
            self.all_matching(&child, 0, pattern, rest, found, walk)?;
            pattern.pop();
        }
        if node.values.left > 0 && fnmatch(pattern, rest) {
            let mut values = node.values.clone();
            while let Some(value) = values.next_value() {
                walk.spend()?;
                found.push(value?);
            }
        }
        pattern.truncate(mark);
        Ok(())
    }
}

/// The nodes one walk has met, by where they start. A trie has no loop and no child of two
/// parents, so a node met again is damage, whatever order the file's nodes are in.
#[derive(Default)]
struct Seen(FxHashSet<usize>);

impl Seen {
    fn visit(&mut self, node: &Node) -> std::result::Result<(), Damaged> {
        self.0.insert(node.at).then_some(()).ok_or(Damaged)
    }
}

/// The bounds of the subtree walks of one wildcard search: the nodes the current one has met,
/// and how many more nodes all of them may visit and values they may give, as many as the file
/// has bytes. A valid index has fewer (a node takes 6 bytes or more, a value 5); a hostile one
/// whose nodes overlap could otherwise give a number of values that grows as its size squared.
struct Walk {
    seen: Seen,
    budget: usize,
}

impl Walk {
    /// Start the walk of another subtree. Each has its own nodes met: a key with a wildcard in
    /// it goes down through a subtree that was walked already, as kmod's does.
    fn anew(&mut self) -> &mut Walk {
        self.seen.0.clear();
        self
    }

    fn enter(&mut self, node: &Node) -> std::result::Result<(), Damaged> {
        self.spend()?;
        self.seen.visit(node)
    }

    fn spend(&mut self) -> std::result::Result<(), Damaged> {
        self.budget = self.budget.checked_sub(1).ok_or(Damaged)?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Where a written index puts a node: after its children, as kmod up to 33 does, or
    /// before them with the root first, as kmod 34 does.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Layout {
        ChildrenFirst,
        RootFirst,
    }

    const LAYOUTS: [Layout; 2] = [Layout::ChildrenFirst, Layout::RootFirst];

    #[derive(Default)]
    struct Trie {
        children: std::collections::BTreeMap<u8, Trie>,
        values: Vec<String>,
    }

    impl Trie {
        fn flags(&self) -> u32 {
            let children = if self.children.is_empty() { 0 } else { NODE_CHILDS };
            children | if self.values.is_empty() { 0 } else { NODE_VALUES }
        }

        /// Write this node with `children` as its child offsets; where it starts.
        fn write_node(&self, children: &[(u8, u32)], out: &mut Vec<u8>) -> usize {
            let at = out.len();
            if let (Some(&(first, _)), Some(&(last, _))) = (children.first(), children.last()) {
                out.extend([first, last]);
                for c in first..=last {
                    let child = children.iter().find(|(k, _)| *k == c).map_or(0, |(_, o)| *o);
                    out.extend(child.to_be_bytes());
                }
            }
            if !self.values.is_empty() {
                out.extend((self.values.len() as u32).to_be_bytes());
                for (i, v) in self.values.iter().enumerate() {
                    out.extend((i as u32).to_be_bytes());
                    out.extend(v.as_bytes());
                    out.push(0);
                }
            }
            at
        }

        /// Write the subtree in `layout`; its node's offset, flags included.
        fn write(&self, layout: Layout, out: &mut Vec<u8>) -> u32 {
            let at = match layout {
                Layout::ChildrenFirst => {
                    let children: Vec<(u8, u32)> = self.children.iter().map(|(&c, n)| (c, n.write(layout, out))).collect();
                    self.write_node(&children, out)
                }
                Layout::RootFirst => {
                    // Child offsets are filled in as each child is written after this node.
                    let unknown: Vec<(u8, u32)> = self.children.keys().map(|&c| (c, 0)).collect();
                    let at = self.write_node(&unknown, out);
                    let first = unknown.first().map_or(0, |&(c, _)| c);
                    for (&c, child) in &self.children {
                        let offset = child.write(layout, out);
                        let slot = at + 2 + 4 * usize::from(c - first);
                        out[slot..slot + 4].copy_from_slice(&offset.to_be_bytes());
                    }
                    at
                }
            };
            at as u32 | self.flags()
        }
    }

    /// Writes an index of `entries` (key, value) in `layout`: one node per character, each
    /// with its prefix left empty, which the reader must take as well.
    pub(crate) fn build_in(layout: Layout, entries: &[(&str, &str)]) -> Vec<u8> {
        let mut trie = Trie::default();
        for (key, value) in entries {
            let mut node = &mut trie;
            for &b in key.as_bytes() {
                node = node.children.entry(b).or_default();
            }
            node.values.push(value.to_string());
        }
        let mut out = vec![0u8; HEADER];
        let root = trie.write(layout, &mut out);
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&0x0002_0001u32.to_be_bytes());
        out[8..12].copy_from_slice(&root.to_be_bytes());
        out
    }

    /// An index of `entries` laid out as kmod 30 does.
    pub(crate) fn build(entries: &[(&str, &str)]) -> Vec<u8> {
        build_in(Layout::ChildrenFirst, entries)
    }

    fn parse(bytes: Vec<u8>) -> BinaryIndex {
        BinaryIndex::parse(Path::new("modules.alias.bin"), bytes).unwrap()
    }

    fn wild<'a>(index: &'a BinaryIndex, key: &str) -> Vec<&'a str> {
        let mut found = Vec::new();
        index.search_wild(key, &mut found);
        found.sort();
        found
    }

    const ALIASES: [(&str, &str); 6] = [
        ("crypto_crc32c", "crc32c_generic"),
        ("crypto_crc32c", "crc32c_intel"),
        ("fs_btrfs", "btrfs"),
        ("pci:v00008086d000015B8sv*sd*bc*sc*i*", "e1000e"),
        ("pci:v00008086d*sv*sd*bc02sc00i*", "generic_intel_net"),
        ("acpi*:PNP0C0[0-9A]:*", "acpi_thing"),
    ];

    #[test]
    fn exact_and_wildcard_lookups_match_kmod_in_either_layout() {
        for layout in LAYOUTS {
            let idx = parse(build_in(layout, &ALIASES));
            assert_eq!(idx.lookup("fs_btrfs"), Some("btrfs"), "{layout:?}");
            assert_eq!(idx.lookup("fs_btrf"), None);
            assert_eq!(wild(&idx, "crypto_crc32c"), ["crc32c_generic", "crc32c_intel"]);
            assert_eq!(wild(&idx, "pci:v00008086d000015B8sv00001028sd0000080Cbc02sc00i00"), ["e1000e", "generic_intel_net"]);
            assert_eq!(wild(&idx, "pci:v00008086d000015B8sv00001028sd0000080Cbc03sc00i00"), ["e1000e"]);
            assert_eq!(wild(&idx, "pci:v000010ECd00008168sv0sd0bc02sc00i00"), Vec::<&str>::new());
            assert_eq!(wild(&idx, "acpi:PNP0C0A:"), ["acpi_thing"]);
            assert_eq!(wild(&idx, "acpi:PNP0C0B:"), Vec::<&str>::new());
            assert_eq!(wild(&idx, "nosuch"), Vec::<&str>::new());
            assert_eq!(wild(&idx, ""), Vec::<&str>::new());
            assert!(!idx.is_damaged(), "{layout:?}");
        }
    }

    /// Root with prefix "fs_", one child 'b' whose node has prefix "trfs" and a value, in
    /// `layout`.
    fn prefixed(layout: Layout) -> Vec<u8> {
        let leaf = |out: &mut Vec<u8>| {
            let at = out.len() as u32;
            out.extend(b"trfs\0");
            out.extend(1u32.to_be_bytes());
            out.extend(0u32.to_be_bytes());
            out.extend(b"btrfs\0");
            at | NODE_PREFIX | NODE_VALUES
        };
        let root = |out: &mut Vec<u8>, leaf: u32| {
            let at = out.len() as u32;
            out.extend(b"fs_\0");
            out.extend([b'b', b'b']);
            out.extend(leaf.to_be_bytes());
            at | NODE_PREFIX | NODE_CHILDS
        };
        let mut out = [MAGIC.to_be_bytes(), 0x0002_0001u32.to_be_bytes(), [0; 4]].concat();
        let root = match layout {
            Layout::ChildrenFirst => {
                let leaf = leaf(&mut out);
                root(&mut out, leaf)
            }
            Layout::RootFirst => {
                let at = root(&mut out, 0);
                let leaf = leaf(&mut out);
                out[HEADER + 6..HEADER + 10].copy_from_slice(&leaf.to_be_bytes());
                at
            }
        };
        out[8..12].copy_from_slice(&root.to_be_bytes());
        out
    }

    #[test]
    fn prefixed_nodes_are_read_too() {
        for layout in LAYOUTS {
            let idx = parse(prefixed(layout));
            assert_eq!(idx.lookup("fs_btrfs"), Some("btrfs"), "{layout:?}");
            assert_eq!(wild(&idx, "fs_btrfs"), ["btrfs"]);
            assert_eq!(idx.lookup("fs_b"), None);
            assert!(!idx.is_damaged());
        }
    }

    /// What depmod wrote over the tree that `tests/data/kmod-index/make.sh` makes: its binary
    /// and text alias tables, the binary one of an empty tree, and what `modprobe -R` answered.
    struct Real {
        kmod: &'static str,
        bin: &'static [u8],
        text: &'static str,
        empty: &'static [u8],
        modprobe: &'static str,
    }

    macro_rules! real {
        ($kmod:literal) => {
            Real {
                kmod: $kmod,
                bin: include_bytes!(concat!("../../tests/data/kmod-index/", $kmod, "/modules.alias.bin")),
                text: include_str!(concat!("../../tests/data/kmod-index/", $kmod, "/modules.alias")),
                empty: include_bytes!(concat!("../../tests/data/kmod-index/", $kmod, "/empty.modules.alias.bin")),
                modprobe: include_str!(concat!("../../tests/data/kmod-index/", $kmod, "/modprobe-R.txt")),
            }
        };
    }

    const REAL: [Real; 2] = [real!("kmod30"), real!("kmod34")];

    impl Real {
        /// `(pattern, module)` of each line of the text table, the pattern as depmod keys it.
        fn aliases(&self) -> Vec<(String, &str)> {
            self.text
                .lines()
                .filter_map(|line| line.strip_prefix("alias ")?.split_once(' '))
                .map(|(pattern, module)| (crate::name::normalize(pattern).into_owned(), module))
                .collect()
        }

        /// The modules whose pattern in the text table matches `key`, as modprobe finds them
        /// when there is no binary table.
        fn text_answer(&self, key: &str) -> Vec<&str> {
            let mut found: Vec<&str> =
                self.aliases().into_iter().filter(|(p, _)| fnmatch(p.as_bytes(), key.as_bytes())).map(|(_, m)| m).collect();
            found.sort();
            found
        }

        /// Each modalias string given to `modprobe -R`, normalised, with its answer.
        fn modprobe_answers(&self) -> impl Iterator<Item = (String, Vec<&str>)> {
            self.modprobe.lines().map(|line| {
                let (key, modules) = line.rsplit_once(':').unwrap();
                let mut modules: Vec<&str> = modules.split_whitespace().collect();
                modules.sort();
                (crate::name::normalize(key).into_owned(), modules)
            })
        }
    }

    /// Every (parent, child) pair of nodes in the file, by where they start.
    fn edges(idx: &BinaryIndex) -> Vec<(usize, usize)> {
        fn walk(idx: &BinaryIndex, node: &Node, out: &mut Vec<(usize, usize)>) {
            for (_, offset) in node.children() {
                let child = idx.node(offset).ok().unwrap();
                out.push((node.at, child.at));
                walk(idx, &child, out);
            }
        }
        let mut out = Vec::new();
        walk(idx, &idx.node(idx.root).ok().unwrap(), &mut out);
        out
    }

    #[test]
    fn kmod_30_writes_children_first_and_kmod_34_the_root_first() {
        let [kmod30, kmod34] = REAL.map(|real| edges(&parse(real.bin.to_vec())));
        assert!(kmod30.len() > 30 && kmod30.len() == kmod34.len());
        assert!(kmod30.iter().all(|(parent, child)| child < parent));
        assert!(kmod34.iter().all(|(parent, child)| child > parent));
        assert_eq!(REAL[1].bin[8..12], [0x20, 0, 0, 12], "kmod 34's root comes right after the header");
    }

    #[test]
    fn real_indexes_answer_as_their_text_and_modprobe_do() {
        for real in &REAL {
            let idx = parse(real.bin.to_vec());
            let aliases = real.aliases();
            assert!(aliases.len() > 20, "{}", real.kmod);
            for (pattern, _) in &aliases {
                // The first module of that pattern in the text, which is in modules.order.
                let first = aliases.iter().find(|(p, _)| p == pattern).map(|(_, m)| *m);
                assert_eq!(idx.lookup(pattern), first, "{} {pattern}", real.kmod);
                let mut text = real.text_answer(pattern);
                let mut binary = wild(&idx, pattern);
                text.dedup();
                binary.dedup();
                assert_eq!(binary, text, "{} {pattern}", real.kmod);
            }
            for (key, modprobe) in real.modprobe_answers() {
                assert_eq!(wild(&idx, &key), modprobe, "{} {key}", real.kmod);
                assert_eq!(real.text_answer(&key), modprobe, "{} {key}", real.kmod);
            }
            assert!(!idx.is_damaged(), "{}", real.kmod);
        }
    }

    #[test]
    fn an_empty_trees_index_is_empty_not_damaged() {
        for real in &REAL {
            assert_eq!(real.empty, [&MAGIC.to_be_bytes()[..], &0x0002_0001u32.to_be_bytes(), &12u32.to_be_bytes()].concat());
            let idx = parse(real.empty.to_vec());
            assert_eq!(idx.lookup("fs_btrfs"), None);
            assert_eq!(wild(&idx, "pci:v00008086d000015B8sv0sd0bc02sc00i00"), Vec::<&str>::new());
            assert_eq!(wild(&idx, ""), Vec::<&str>::new());
            assert!(!idx.is_damaged(), "{}", real.kmod);
        }
        for layout in LAYOUTS {
            assert_eq!(build_in(layout, &[]), REAL[0].empty, "{layout:?}");
        }
    }

    /// Look up every key of `real` in `bytes`, which may be anything: it must not panic or loop.
    fn look_everywhere(real: &Real, bytes: Vec<u8>) {
        if let Ok(idx) = BinaryIndex::parse(Path::new("x"), bytes) {
            for (key, _) in real.modprobe_answers() {
                wild(&idx, &key);
                idx.lookup(&key);
            }
        }
    }

    #[test]
    fn damaged_indexes_are_refused_or_marked_whatever_the_damage() {
        let good = build(&ALIASES);
        let refuse = |bytes: Vec<u8>| BinaryIndex::parse(Path::new("modules.alias.bin"), bytes).unwrap_err().to_string();
        assert_eq!(refuse(b"garbage".to_vec()), "modules.alias.bin: not a kmod index; run depmod");
        let mut v3 = good.clone();
        v3[4..8].copy_from_slice(&0x0003_0000u32.to_be_bytes());
        assert_eq!(refuse(v3), "modules.alias.bin: kmod index version 0x3, expected 2.x; run depmod");
        let key = "pci:v00008086d000015B8sv00001028sd0000080Cbc02sc00i00";
        for layout in LAYOUTS {
            // Cut short, the walk to that key meets a node past the end.
            let good = build_in(layout, &ALIASES);
            let cut = parse(good[..good.len() - 8].to_vec());
            wild(&cut, key);
            assert!(cut.is_damaged(), "{layout:?}");
        }
        // Every single-byte change and every cut of a real index either answers as before,
        // answers otherwise, or is marked: none may panic or loop.
        for real in &REAL {
            for at in HEADER..real.bin.len() {
                for flip in [0x01, 0xA5] {
                    let mut bytes = real.bin.to_vec();
                    bytes[at] ^= flip;
                    look_everywhere(real, bytes);
                }
            }
            for len in 0..real.bin.len() {
                look_everywhere(real, real.bin[..len].to_vec());
            }
        }
    }

    /// Where the child offset for `ch` of the node at `path` is, in an index built with
    /// one node per character.
    fn slot(bytes: &[u8], path: &str, ch: u8) -> usize {
        let idx = parse(bytes.to_vec());
        let node = idx.find(path.as_bytes()).ok().flatten().unwrap();
        node.at + 2 + 4 * usize::from(ch - node.first)
    }

    /// The offset, flags included, by which the node at `path` is reached.
    fn offset_of(bytes: &[u8], path: &str) -> [u8; 4] {
        let at = match path.as_bytes().split_last() {
            None => 8,
            Some((&ch, parent)) => slot(bytes, std::str::from_utf8(parent).unwrap(), ch),
        };
        bytes[at..at + 4].try_into().unwrap()
    }

    #[test]
    fn a_child_that_points_back_up_is_damage_not_a_loop_in_either_layout() {
        for layout in LAYOUTS {
            // An exact walk: the child 'c' of "ab" points at "ab" itself, its parent, the root.
            for target in ["ab", "a", ""] {
                let mut bytes = build_in(layout, &[("abc", "x")]);
                let (at, offset) = (slot(&bytes, "ab", b'c'), offset_of(&bytes, target));
                bytes[at..at + 4].copy_from_slice(&offset);
                let idx = parse(bytes);
                assert_eq!(idx.lookup("abcabc"), None, "{layout:?} {target:?}");
                assert!(idx.is_damaged(), "{layout:?} {target:?}");
                let idx = parse(idx.bytes.to_vec());
                assert_eq!(wild(&idx, "abc"), Vec::<&str>::new());
                assert!(idx.is_damaged(), "{layout:?} {target:?}");
            }
            // A walk of the subtree under a wildcard: "a*b"'s child 'c' points at itself, at
            // nodes of the subtree and at ancestors outside it.
            for target in ["a*b", "a*", "a", ""] {
                let mut bytes = build_in(layout, &[("a*bc", "x")]);
                let (at, offset) = (slot(&bytes, "a*b", b'c'), offset_of(&bytes, target));
                bytes[at..at + 4].copy_from_slice(&offset);
                let idx = parse(bytes);
                assert_eq!(wild(&idx, "axbc"), Vec::<&str>::new(), "{layout:?} {target:?}");
                assert!(idx.is_damaged(), "{layout:?} {target:?}");
            }
        }
    }
}
