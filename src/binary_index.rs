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
//! Like libkmod, it reads only the nodes a lookup walks through, not the whole file. Each one
//! is decoded with bounds checks, children must come before their parent in the file (depmod
//! writes them so), and a walk is bounded in depth and in the nodes it visits, so no file can
//! make a lookup go out of bounds or loop. A lookup that meets a node that does not decode marks
//! the index damaged; the run checks that after planning and stops before deleting anything.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::mapped::Bytes;
use crate::name::fnmatch;

const MAGIC: u32 = 0xB007_F457;
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
        Bytes::read_if_there(path, crate::fs::limits::INDEX)?.map(|bytes| BinaryIndex::parse(path, bytes)).transpose()
    }

    /// Take `bytes`, read from `path`, as an index, checking its header.
    pub fn parse(path: &Path, bytes: impl Into<Bytes>) -> Result<BinaryIndex> {
        let bytes = bytes.into();
        let word = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let bad = |message: String| Error::refused(path, format!("{message}; run depmod"));
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

    /// Decode the node at `offset`.
    fn node(&self, offset: u32) -> std::result::Result<Node<'_>, Damaged> {
        let start = (offset & NODE_MASK) as usize;
        let bytes = &self.bytes;
        if start < 12 || start >= bytes.len() {
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

    /// The child of `parent` at `offset`. depmod writes every node after its children, so a
    /// child lies before its parent: a walk down always ends.
    fn child(&self, parent: &Node, offset: u32) -> std::result::Result<Node<'_>, Damaged> {
        match (offset & NODE_MASK) as usize {
            at if at < parent.at => self.node(offset),
            _ => Err(Damaged),
        }
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

    /// The node reached by `key` exactly, if any.
    fn find(&self, mut key: &[u8]) -> std::result::Result<Option<Node<'_>>, Damaged> {
        let mut node = self.node(self.root)?;
        loop {
            let Some(rest) = key.strip_prefix(node.prefix) else { return Ok(None) };
            let Some((&ch, rest)) = rest.split_first() else { return Ok(Some(node)) };
            let Some(offset) = node.child_offset(ch) else { return Ok(None) };
            node = self.child(&node, offset)?;
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
        let mut budget = self.bytes.len();
        let mut node = self.node(self.root)?;
        let mut i = 0;
        loop {
            for (j, &ch) in node.prefix.iter().enumerate() {
                if matches!(ch, b'*' | b'?' | b'[') {
                    // The prefix matched the key so far, so `i + j` is within it.
                    return self.all_matching(&node, j, &mut Vec::new(), &key[i + j..], found, &mut budget);
                }
                if key.get(i + j) != Some(&ch) {
                    return Ok(());
                }
            }
            i += node.prefix.len();
            for wild in [b'*', b'?', b'['] {
                if let Some(offset) = node.child_offset(wild) {
                    let child = self.child(&node, offset)?;
                    self.all_matching(&child, 0, &mut vec![wild], &key[i..], found, &mut budget)?;
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
            node = self.child(&node, offset)?;
            i += 1;
        }
    }

    /// The values under `node` whose full pattern (`pattern` so far, then `node`'s prefix from
    /// `skip` on and the rest of the path down to them) matches `rest` of the key. Recursion is
    /// as deep as the pattern is long, at most [`MAX_DEPTH`], and the walk visits at most as
    /// many nodes as the file has bytes.
    fn all_matching<'a>(
        &'a self,
        node: &Node<'a>,
        skip: usize,
        pattern: &mut Vec<u8>,
        rest: &[u8],
        found: &mut Vec<&'a str>,
        budget: &mut usize,
    ) -> std::result::Result<(), Damaged> {
        *budget = budget.checked_sub(1).ok_or(Damaged)?;
        let mark = pattern.len();
        pattern.extend_from_slice(node.prefix.get(skip..).ok_or(Damaged)?);
        if pattern.len() > MAX_DEPTH {
            return Err(Damaged);
        }
        for (ch, offset) in node.children() {
            let child = self.child(node, offset)?;
            pattern.push(ch);
            self.all_matching(&child, 0, pattern, rest, found, budget)?;
            pattern.pop();
        }
        if node.values.left > 0 && fnmatch(pattern, rest) {
            let mut values = node.values.clone();
            while let Some(value) = values.next_value() {
                found.push(value?);
            }
        }
        pattern.truncate(mark);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes an index of `entries` (key, value) the way depmod lays one out: one node per
    /// character, each with its prefix left empty, which the reader must take as well.
    pub(crate) fn build(entries: &[(&str, &str)]) -> Vec<u8> {
        #[derive(Default)]
        struct Trie {
            children: std::collections::BTreeMap<u8, Trie>,
            values: Vec<String>,
        }
        let mut trie = Trie::default();
        for (key, value) in entries {
            let mut node = &mut trie;
            for &b in key.as_bytes() {
                node = node.children.entry(b).or_default();
            }
            node.values.push(value.to_string());
        }
        fn write(node: &Trie, out: &mut Vec<u8>) -> u32 {
            let children: Vec<(u8, u32)> = node.children.iter().map(|(&c, n)| (c, write(n, out))).collect();
            let offset = out.len() as u32;
            let mut flags = 0;
            if let (Some(&(first, _)), Some(&(last, _))) = (children.first(), children.last()) {
                flags |= NODE_CHILDS;
                out.extend([first, last]);
                for c in first..=last {
                    let child = children.iter().find(|(k, _)| *k == c).map_or(0, |(_, o)| *o);
                    out.extend(child.to_be_bytes());
                }
            }
            if !node.values.is_empty() {
                flags |= NODE_VALUES;
                out.extend((node.values.len() as u32).to_be_bytes());
                for (i, v) in node.values.iter().enumerate() {
                    out.extend((i as u32).to_be_bytes());
                    out.extend(v.as_bytes());
                    out.push(0);
                }
            }
            offset | flags
        }
        let mut out = vec![0u8; 12];
        let root = write(&trie, &mut out);
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&0x0002_0001u32.to_be_bytes());
        out[8..12].copy_from_slice(&root.to_be_bytes());
        out
    }

    fn index(entries: &[(&str, &str)]) -> BinaryIndex {
        BinaryIndex::parse(Path::new("modules.alias.bin"), build(entries)).unwrap()
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
    fn exact_and_wildcard_lookups_match_kmod() {
        let idx = index(&ALIASES);
        assert_eq!(idx.lookup("fs_btrfs"), Some("btrfs"));
        assert_eq!(idx.lookup("fs_btrf"), None);
        assert_eq!(wild(&idx, "crypto_crc32c"), ["crc32c_generic", "crc32c_intel"]);
        assert_eq!(wild(&idx, "pci:v00008086d000015B8sv00001028sd0000080Cbc02sc00i00"), ["e1000e", "generic_intel_net"]);
        assert_eq!(wild(&idx, "pci:v00008086d000015B8sv00001028sd0000080Cbc03sc00i00"), ["e1000e"]);
        assert_eq!(wild(&idx, "pci:v000010ECd00008168sv0sd0bc02sc00i00"), Vec::<&str>::new());
        assert_eq!(wild(&idx, "acpi:PNP0C0A:"), ["acpi_thing"]);
        assert_eq!(wild(&idx, "acpi:PNP0C0B:"), Vec::<&str>::new());
        assert_eq!(wild(&idx, "nosuch"), Vec::<&str>::new());
        assert_eq!(wild(&idx, ""), Vec::<&str>::new());
    }

    #[test]
    fn prefixed_nodes_are_read_too() {
        // Root with prefix "fs_", one child 'b' whose node has prefix "trfs" and a value.
        let mut out = vec![0u8; 12];
        let leaf = out.len() as u32;
        out.extend(b"trfs\0");
        out.extend(1u32.to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend(b"btrfs\0");
        let root = out.len() as u32;
        out.extend(b"fs_\0");
        out.extend([b'b', b'b']);
        out.extend((leaf | NODE_PREFIX | NODE_VALUES).to_be_bytes());
        out[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        out[4..8].copy_from_slice(&0x0002_0001u32.to_be_bytes());
        out[8..12].copy_from_slice(&(root | NODE_PREFIX | NODE_CHILDS).to_be_bytes());
        let idx = BinaryIndex::parse(Path::new("x.bin"), out).unwrap();
        assert_eq!(idx.lookup("fs_btrfs"), Some("btrfs"));
        assert_eq!(wild(&idx, "fs_btrfs"), ["btrfs"]);
        assert_eq!(idx.lookup("fs_b"), None);
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
        // Cut short, the walk to that key meets a node past the end.
        let cut = BinaryIndex::parse(Path::new("x"), good[..good.len() - 8].to_vec()).unwrap();
        wild(&cut, key);
        assert!(cut.is_damaged());
        // Every single-byte change either answers as before, answers otherwise, or is marked:
        // none may panic or loop.
        for at in 12..good.len() {
            let mut bytes = good.clone();
            bytes[at] ^= 0xA5;
            if let Ok(idx) = BinaryIndex::parse(Path::new("x"), bytes) {
                wild(&idx, key);
                idx.lookup("fs_btrfs");
            }
        }
        // A child that points back at its parent is damage, not a loop.
        let mut looped = build(&[("ab", "x")]);
        let root = u32::from_be_bytes(looped[8..12].try_into().unwrap());
        let at = (root & NODE_MASK) as usize + 2;
        looped[at..at + 4].copy_from_slice(&root.to_be_bytes());
        let idx = BinaryIndex::parse(Path::new("x"), looped).unwrap();
        assert_eq!(wild(&idx, "ab"), Vec::<&str>::new());
        assert!(idx.is_damaged());
    }
}
