//! The bytes of a file that a run reads whole but looks at only in part, or once: depmod's
//! indexes and `modules.dep`, limopack's cache of a tree's files. Mapped read-only as libkmod
//! maps them, so that a lookup touches only the pages it walks and nothing is copied: a page
//! of the page cache is mapped sixteen at a time, where each page a read copies into is a
//! fault of its own.

use std::io;
use std::ops::Deref;

/// Below this a plain read is cheaper than setting up and tearing down a mapping.
pub const MAP_FROM: u64 = 64 * 1024;

/// A file's bytes: mapped, or read into memory (small files, and what tests build).
#[derive(Debug)]
pub enum Bytes {
    /// A mapping, and how much of it is taken (see [`truncate`](Self::truncate)).
    Mapped(memmap2::Mmap, usize),
    Owned(Vec<u8>),
}

impl Bytes {
    /// The bytes of `file`, open and `len` bytes long: mapped from [`MAP_FROM`] on. Only
    /// `len` bytes are read, whatever was written to the file since its size was taken.
    pub fn of_file(file: &std::fs::File, len: u64) -> io::Result<Bytes> {
        if len < MAP_FROM {
            let mut bytes = Vec::with_capacity(len as usize);
            io::Read::read_to_end(&mut io::Read::take(file, len), &mut bytes)?;
            return Ok(Bytes::Owned(bytes));
        }
        // SAFETY: the mapping is read-only and private. depmod, dpkg and limopack replace
        // these files by renaming a new one over them, which leaves a mapped old inode whole;
        // only a tool that truncated one in place while a run reads it could fault the run,
        // and a run that stops so has deleted nothing, since it plans before it deletes.
        // libkmod maps the same files on the same terms.
        unsafe { memmap2::MmapOptions::new().len(len as usize).map(file) }.map(|map| {
            let len = map.len();
            Bytes::Mapped(map, len)
        })
    }

    /// Keep the first `len` bytes only: what is left of a file once its other parts were
    /// copied out, kept in place.
    pub fn truncate(&mut self, len: usize) {
        match self {
            Bytes::Mapped(_, taken) => *taken = len.min(*taken),
            Bytes::Owned(bytes) => bytes.truncate(len),
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(map, len) => &map[..*len],
            Bytes::Owned(bytes) => bytes,
        }
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Bytes {
        Bytes::Owned(bytes)
    }
}

impl Default for Bytes {
    fn default() -> Bytes {
        Bytes::Owned(Vec::new())
    }
}

impl From<String> for Bytes {
    fn from(text: String) -> Bytes {
        Bytes::Owned(text.into_bytes())
    }
}

impl From<&str> for Bytes {
    fn from(text: &str) -> Bytes {
        Bytes::Owned(text.as_bytes().to_vec())
    }
}
