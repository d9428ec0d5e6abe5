//! A module's `.modinfo`, read from its file without modinfo(8): the `key=value` records the
//! kernel's `MODULE_*` macros put in that ELF section (`firmware=`, `softdep=`, `alias=`,
//! `depends=`, …), the way libkmod reads them (`kmod_elf_get_modinfo_strings`).
//!
//! A plan reads the modinfo of every kept module, so the cost per file matters. An uncompressed
//! `.ko` is not read whole: only its ELF header, section headers, section-name table and the
//! `.modinfo` section, four `pread`s in all, through `object`'s lazy `ReadRef`. A compressed one
//! (`.ko.xz`, `.ko.zst`, `.ko.gz`, told apart by their magic bytes as kmod does, not by their
//! name) is decompressed once, streaming, into one buffer.
//!
//! `object` (gimli-rs, the ELF reader under Rust's own backtraces) is used rather than goblin
//! because it reads on demand from any `ReadRef`, so that the four reads above are all that
//! touch the disk, and its lower-level ELF API parses nothing beyond what is asked for. Every
//! offset and size it reads is bounds-checked: no file makes [`parse`] panic.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use memmap2::MmapMut;
use object::elf::{self, FileHeader32, FileHeader64};
use object::read::elf::{FileHeader, SectionHeader};
use object::read::{ReadCache, ReadCacheOps, ReadRef};
use object::Endianness;

use crate::error::{Error, Result};
use crate::fs::Folder;
use crate::kver::Kver;
use crate::root::{cache_name, Root, CACHE_DIR};
use crate::read::tree::Stamp;


/// What a module declares about itself in its `.modinfo` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modinfo {
    /// The section as read: NUL-ended `key=value` records. Kept whole and split on demand,
    /// since a run only wants `firmware=` and a driver may have hundreds of `alias=`.
    section: Vec<u8>,
    /// Every `firmware=` value, in order, each once: the files the module may ask the kernel's
    /// firmware loader for.
    pub firmware: Vec<String>,
}

impl Modinfo {
    /// Every record, in the order of the section: `("license", "GPL")`. A record without `=`
    /// has an empty value, as in libkmod. Values that are not UTF-8 (an author's name in
    /// Latin-1) come with U+FFFD in place of the bad bytes.
    pub fn records(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        split_records(&self.section).map(|(key, value)| (String::from_utf8_lossy(key), String::from_utf8_lossy(value)))
    }

    /// Every value of `key`, in order: `get_all("softdep")`, `get_all("alias")`.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        split_records(&self.section).filter(move |(k, _)| *k == key.as_bytes()).map(|(_, v)| String::from_utf8_lossy(v))
    }

    /// The first value of `key`: `get("depends")`, `get("vermagic")`.
    pub fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        split_records(&self.section).find(|(k, _)| *k == key.as_bytes()).map(|(_, v)| String::from_utf8_lossy(v))
    }
}

/// The `(key, value)` records of a `.modinfo` section.
fn split_records(section: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    section.split(|&b| b == 0).filter(|r| !r.is_empty()).map(|record| match memchr::memchr(b'=', record) {
        Some(at) => (&record[..at], &record[at + 1..]),
        None => (record, &[][..]),
    })
}

/// How a module file is stored, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Elf,
    Xz,
    Zstd,
    Gzip,
}

impl Format {
    fn of(magic: &[u8]) -> Option<Format> {
        Some(if magic.starts_with(b"\x7fELF") {
            Format::Elf
        } else if magic.starts_with(b"\xfd7zXZ\0") {
            Format::Xz
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::Zstd
        } else if magic.starts_with(&[0x1f, 0x8b]) {
            Format::Gzip
        } else {
            return None;
        })
    }

    fn name(self) -> &'static str {
        match self {
            Format::Elf => "ELF",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
            Format::Gzip => "gzip",
        }
    }
}

/// Read the `.modinfo` of the module file at `path`: `.ko`, `.ko.xz`, `.ko.zst` or `.ko.gz`.
pub fn read(path: &Path) -> Result<Modinfo> {
    // A plain module is read in four small pieces, whatever its size.
    let (file, len) = crate::fs::open_regular(path, u64::MAX)?;
    from_file(path, file, len, &mut Buffers::new(&Mutex::default()))
}

/// [`read`] the module `rel` of the tree `tree`, never leaving the tree through a link.
fn read_in(tree: &Folder, rel: &str, buffers: &mut Buffers) -> Result<Modinfo> {
    let (file, len) = tree.open_regular(rel, u64::MAX)?;
    from_file(&tree.path().join(rel), file, len, buffers)
}

/// The `.modinfo` of the module `file`, open, `len` bytes long; `path` names it.
fn from_file(path: &Path, file: File, len: u64, buffers: &mut Buffers) -> Result<Modinfo> {
    // The ELF header, which object reads again in pieces, is read once here.
    let mut head = [0u8; 64];
    let head_len = read_full_at(&file, &mut head, 0).map_err(|e| Error::io(path, e))?;
    let format = Format::of(&head[..head_len]).ok_or_else(|| {
        Error::damaged(path, "not a kernel module: neither an ELF object nor xz, zstd or gzip compressed")
    })?;
    if format == Format::Elf {
        let reader = Pread { file, len, pos: 0, head, head_len, error: None };
        let cache = ReadCache::new(reader);
        let result = records(path, modinfo_section(&cache));
        // A failed read shows up as a bad offset in object's answer; say what really failed.
        return match (result, cache.into_inner().error) {
            (Err(_), Some(e)) => Err(Error::io(path, e)),
            (result, _) => result,
        };
    }
    decompress(path, format, file, buffers)
}

/// Where a reading thread decompresses modules: a buffer of its own, reused, for the many
/// that decompress to at most [`Buffers::SMALL`], and for a larger one a buffer of its size,
/// given back once it is read. Those larger than [`Buffers::LARGE`] (xfs and btrfs, about
/// 5 MiB) are read by one thread of a [`read_all`] at a time, so that a run never holds two.
///
/// The buffers are anonymous mappings rather than heap blocks: a run pads its heaps by
/// 16 MiB (`M_TOP_PAD`), so glibc carves even a large block out of a heap, and keeps the
/// pages it touched there until the process ends. A mapping is given back when dropped.
struct Buffers<'a> {
    own: Option<MmapMut>,
    one_large: &'a Mutex<()>,
}

impl<'a> Buffers<'a> {
    /// Most modules decompress to less.
    const SMALL: usize = 1 << 20;
    /// Only the largest decompress to more.
    const LARGE: usize = 4 << 20;

    fn new(one_large: &'a Mutex<()>) -> Buffers<'a> {
        Buffers { own: None, one_large }
    }

    /// The thread's own buffer, made on first use: a plain `.ko` needs none.
    fn own(&mut self) -> io::Result<&mut MmapMut> {
        match &mut self.own {
            Some(own) => Ok(own),
            own => Ok(own.insert(MmapMut::map_anon(Self::SMALL)?)),
        }
    }
}

/// Read each module of `rels` in the tree `tree`, on two threads: a run reads the modules it
/// keeps, about a hundred, and each read is an open and a few small reads that wait on the
/// kernel, or the decompression of a `.ko.xz` (see `Buffers`).
pub fn read_all(tree: &Folder, rels: &[&str]) -> Vec<Result<Modinfo>> {
    let one_large = Mutex::default();
    let read = |rels: &[&str]| {
        let mut buffers = Buffers::new(&one_large);
        rels.iter().map(|rel| read_in(tree, rel, &mut buffers)).collect::<Vec<_>>()
    };
    // A thread costs more than a few reads.
    if rels.len() < 8 {
        return read(rels);
    }
    let (first, second) = rels.split_at(rels.len() / 2);
    std::thread::scope(|s| {
        let other = s.spawn(|| read(second));
        let mut infos = read(first);
        infos.extend(crate::joined(other));
        infos
    })
}

/// The `firmware=` names of a tree's modules as a run read them, each with the stamp of its
/// file (inode and change time, which any write or rename changes), kept between runs in
/// `/var/cache/limopack/KVER.firmware`. A run asks for the names of every kept module: one
/// `statx` shows a file is the one read before, where reading it takes an open, a stat, four
/// reads and a close (and all of a compressed module). A real run keeps what it read.
#[derive(Debug, Default)]
pub struct FirmwareNames {
    by_path: rustc_hash::FxHashMap<String, (Stamp, Vec<String>)>,
    /// Some names were read anew: the cache is worth writing.
    changed: bool,
}

const NAMES_HEADER: &str = "limopack firmware names 1";

impl FirmwareNames {

    /// The cache of kernel `version`; an empty one when there is none or a line of it does not
    /// read back whole. A line is `INO CTIME_S CTIME_NS PATH`, then each name after a tab.
    pub fn read(root: &Root, version: &Kver) -> FirmwareNames {
        let bytes = root.own(CACHE_DIR).ok().flatten().and_then(|caches| caches.read_if_there(&cache_name(version, "firmware"), crate::fs::limits::STATE).ok().flatten());
        let text = bytes.and_then(|bytes| String::from_utf8(bytes).ok()).unwrap_or_default();
        let mut lines = text.lines();
        let read = |lines: std::str::Lines| -> Option<FirmwareNames> {
            let mut names = FirmwareNames::default();
            for line in lines {
                let mut fields = line.split('\t');
                let mut head = fields.next()?.splitn(4, ' ');
                let [ino, secs, nanos] = [head.next()?, head.next()?, head.next()?].map(str::parse::<i64>);
                let stamp = Stamp { ino: u64::try_from(ino.ok()?).ok()?, ctime: (secs.ok()?, nanos.ok()?) };
                names.by_path.insert(head.next()?.to_string(), (stamp, fields.map(str::to_string).collect()));
            }
            Some(names)
        };
        match lines.next() == Some(NAMES_HEADER) {
            true => read(lines).unwrap_or_default(),
            false => FirmwareNames::default(),
        }
    }

    /// The firmware names of each module at `rels` in the tree at `dir`: kept ones for a file
    /// whose stamp is the same, the others read (see [`read_all`]).
    pub fn of(&mut self, dir: &Path, rels: &[&str]) -> Vec<Result<Vec<String>>> {
        use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};
        let fd = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok();
        let stamp = |rel: &str| {
            let st = rustix::fs::statx(fd.as_ref()?, rel, AtFlags::STATX_DONT_SYNC, StatxFlags::INO | StatxFlags::CTIME).ok()?;
            Some(Stamp::of_statx(&st))
        };
        let stamps: Vec<Option<Stamp>> = rels.iter().map(|rel| stamp(rel)).collect();
        let mut results: Vec<Option<Result<Vec<String>>>> = rels
            .iter()
            .zip(&stamps)
            .map(|(rel, now)| match (self.by_path.get(*rel), now) {
                (Some((was, names)), Some(now)) if was == now => Some(Ok(names.clone())),
                _ => None,
            })
            .collect();
        let unread: Vec<usize> = (0..rels.len()).filter(|&n| results[n].is_none()).collect();
        let wanted: Vec<&str> = unread.iter().map(|&n| rels[n]).collect();
        let infos = match crate::fs::Folder::open(dir) {
            Ok(tree) => read_all(&tree, &wanted),
            Err(e) => wanted.iter().map(|rel| Err(Error::damaged(dir.join(rel), format!("cannot be read, as its tree cannot: {e}")))).collect(),
        };
        for (n, info) in unread.into_iter().zip(infos) {
            let names = info.map(|info| info.firmware);
            if let (Ok(names), Some(stamp)) = (&names, stamps[n]) {
                let clean = names.iter().all(|name| !name.contains(['\t', '\n']));
                if clean && !rels[n].contains(['\t', '\n']) {
                    self.by_path.insert(rels[n].to_string(), (stamp, names.clone()));
                    self.changed = true;
                }
            }
            results[n] = Some(names);
        }
        results.into_iter().map(|r| r.expect("every module kept or read")).collect()
    }

    /// The cache of the names for the next run, when some were read anew.
    pub fn render(&self) -> Option<String> {
        use std::fmt::Write as _;
        if !self.changed {
            return None;
        }
        let mut text = format!("{NAMES_HEADER}\n");
        for (rel, (stamp, names)) in &self.by_path {
            let _ = write!(text, "{} {} {} {rel}", stamp.ino, stamp.ctime.0, stamp.ctime.1);
            for name in names {
                let _ = write!(text, "\t{name}");
            }
            text.push('\n');
        }
        Some(text)
    }
}

/// Read the `.modinfo` of the uncompressed ELF object `elf_bytes`; `path_for_errors` names it
/// in errors.
pub fn parse(path_for_errors: &Path, elf_bytes: &[u8]) -> Result<Modinfo> {
    if Format::of(elf_bytes) != Some(Format::Elf) {
        return Err(Error::damaged(path_for_errors, "not an ELF object"));
    }
    records(path_for_errors, modinfo_section(elf_bytes))
}

/// The most a module may decompress to before its section headers end.
const LIMIT: u64 = crate::fs::limits::MODULE;

/// Decompress a module file and read its `.modinfo`. Decompression streams up to the end of
/// the section headers, which an object file keeps last: nothing after them is needed. A file
/// that decompresses to more than [`limits::MODULE`](crate::fs::limits::MODULE) before that is
/// refused, so a compressed bomb costs a bounded time and memory.
fn decompress(path: &Path, format: Format, file: File, buffers: &mut Buffers) -> Result<Modinfo> {
    let decoder: Box<dyn Read> = match format {
        // Concatenated streams and members are read through, as kmod's decoders do.
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(io::BufReader::new(file))),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(file).map_err(|e| Error::io(path, e))?),
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file))),
        Format::Elf => unreachable!("an ELF object is not decompressed"),
    };
    let mut decoder = decoder.take(LIMIT + 1);
    let damaged = |e: io::Error| damaged_data(path, format, &e);
    // The ELF header first, which says how much is needed; without it, all there is.
    let mut header = [0u8; 64];
    let head = fill(&mut decoder, &mut header, 0).map_err(damaged)?;
    let needed = match Format::of(&header[..head]) {
        Some(Format::Elf) => headers_end(&header[..head]),
        _ => return Err(Error::damaged(path, format!("{} data is not an ELF object once decompressed", format.name()))),
    };
    let end = needed.map_or(LIMIT + 1, |end| end.min(LIMIT + 1)) as usize;
    // Declared in this order so that a large buffer is given back before the turn is.
    let _turn;
    let mut large;
    let bytes: &mut [u8] = match end <= Buffers::SMALL {
        true => &mut buffers.own().map_err(|e| Error::io(path, e))?[..end],
        false => {
            _turn = (end > Buffers::LARGE).then(|| buffers.one_large.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            large = MmapMut::map_anon(end).map_err(|e| Error::io(path, e))?;
            &mut large
        }
    };
    bytes[..head].copy_from_slice(&header[..head]);
    let len = fill(&mut decoder, bytes, head).map_err(damaged)?;
    checked(path, format, &bytes[..len], needed)
}

/// Read from `decoder` into `buf`, which holds `len` bytes already, until it is full or the
/// decoder ends; how many bytes it holds then.
fn fill(decoder: &mut impl Read, buf: &mut [u8], mut len: usize) -> io::Result<usize> {
    while len < buf.len() {
        match decoder.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    Ok(len)
}

/// The `.modinfo` of `bytes`, decompressed from `format` up to where the ELF header said
/// (`needed`), unless they are too many or too few.
fn checked(path: &Path, format: Format, bytes: &[u8], needed: Option<u64>) -> Result<Modinfo> {
    if bytes.len() as u64 > LIMIT {
        return Err(Error::damaged(path, format!("decompresses to more than {} MiB, which no kernel module does", LIMIT >> 20)));
    }
    if needed.is_some_and(|end| (bytes.len() as u64) < end) {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "it ends before the ELF object does");
        return Err(damaged_data(path, format, &eof));
    }
    parse(path, bytes)
}

fn damaged_data(path: &Path, format: Format, e: &io::Error) -> Error {
    Error::damaged(path, format!("{} data is truncated or damaged: {}", format.name(), crate::error::plain(e)))
}

/// Where the section headers of the ELF object starting `bytes` end, from its header.
fn headers_end(bytes: &[u8]) -> Option<u64> {
    let read = |at: usize, size: usize| -> Option<u64> {
        let raw = bytes.get(at..at + size)?;
        let mut word = [0u8; 8];
        match bytes.get(5)? {
            1 => word[..size].copy_from_slice(raw),
            2 => word[8 - size..].copy_from_slice(raw),
            _ => return None,
        }
        Some(match bytes[5] {
            1 => u64::from_le_bytes(word),
            _ => u64::from_be_bytes(word),
        })
    };
    // e_shoff, e_shentsize and e_shnum, where each class keeps them.
    let (shoff, entsize, num) = match bytes.get(4)? {
        2 => (read(0x28, 8)?, read(0x3a, 2)?, read(0x3c, 2)?),
        1 => (read(0x20, 4)?, read(0x2e, 2)?, read(0x30, 2)?),
        _ => return None,
    };
    shoff.checked_add(entsize.checked_mul(num)?)
}

/// Why a file's `.modinfo` section could not be found.
enum NotFound {
    /// The ELF structure is damaged; object's words.
    Damaged(String),
    /// The ELF object has no section named `.modinfo`.
    NoSection,
    /// The section is compressed (`SHF_COMPRESSED`), which kernel modules never are.
    Compressed,
}

impl From<object::read::Error> for NotFound {
    fn from(e: object::read::Error) -> Self {
        NotFound::Damaged(e.to_string())
    }
}

/// The bytes of the `.modinfo` section of the ELF object in `data`, of either class and
/// byte order.
fn modinfo_section<'data, R: ReadRef<'data>>(data: R) -> std::result::Result<&'data [u8], NotFound> {
    let ident = data.read_bytes_at(0, 16).map_err(|_| NotFound::Damaged("file too short for an ELF header".into()))?;
    match elf::FileClass(ident[4]) {
        elf::ELFCLASS64 => section_of::<FileHeader64<Endianness>, R>(data),
        elf::ELFCLASS32 => section_of::<FileHeader32<Endianness>, R>(data),
        _ => Err(NotFound::Damaged("unknown ELF class".into())),
    }
}

/// [`modinfo_section`] for one ELF class: the header, the section headers and the section-name
/// table are all that is read before the section itself.
fn section_of<'data, Elf: FileHeader<Endian = Endianness>, R: ReadRef<'data>>(
    data: R,
) -> std::result::Result<&'data [u8], NotFound> {
    let header = Elf::parse(data)?;
    let endian = header.endian()?;
    let sections = header.section_headers(endian, data)?;
    let names_index = header.shstrndx(endian, data)? as usize;
    let names = sections.get(names_index).ok_or(NotFound::Damaged("section-name table index out of range".into()))?;
    let names = names.data(endian, data)?;
    let section = sections
        .iter()
        .find(|section| {
            let start = section.sh_name(endian) as usize;
            names.get(start..).and_then(|name| name.strip_prefix(b".modinfo")).is_some_and(|rest| rest.first() == Some(&0))
        })
        .ok_or(NotFound::NoSection)?;
    if section.sh_flags(endian).0 & elf::SHF_COMPRESSED.0 != 0 {
        return Err(NotFound::Compressed);
    }
    Ok(section.data(endian, data)?)
}

/// Split the section into its NUL-separated records, skipping the empty ones that alignment
/// leaves between them.
fn records(path: &Path, section: std::result::Result<&[u8], NotFound>) -> Result<Modinfo> {
    let section = section.map_err(|why| {
        Error::damaged(
            path,
            match why {
                NotFound::Damaged(what) => format!("damaged ELF object: {what}"),
                NotFound::NoSection => "ELF object without a .modinfo section: not a kernel module".into(),
                NotFound::Compressed => "the .modinfo section is compressed (SHF_COMPRESSED), which no kernel module's is".into(),
            },
        )
    })?;
    let mut info = Modinfo { section: section.to_vec(), firmware: Vec::new() };
    // Found by a search for the key rather than record by record: a driver's section is
    // mostly `alias=` records.
    const KEY: &[u8] = b"firmware=";
    for at in memchr::memmem::find_iter(section, KEY).filter(|&at| at == 0 || section[at - 1] == 0) {
        let rest = &section[at + KEY.len()..];
        let value = &rest[..memchr::memchr(0, rest).unwrap_or(rest.len())];
        let name = std::str::from_utf8(value).map_err(|_| {
            Error::damaged(path, format!("firmware name `{}` in .modinfo is not UTF-8", String::from_utf8_lossy(value)))
        })?;
        if !info.firmware.iter().any(|f| f == name) {
            info.firmware.push(name.to_owned());
        }
    }
    Ok(info)
}

/// `pread` until `buf` is full or the file ends; the number of bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A file read with `pread` at a position object's cache sets, its first bytes (the ELF
/// header) served from memory. It keeps the first I/O error, so that it can be reported as
/// such rather than as a damaged ELF object.
struct Pread {
    file: File,
    len: u64,
    pos: u64,
    head: [u8; 64],
    head_len: usize,
    error: Option<io::Error>,
}

impl Pread {
    fn keep<T>(&mut self, result: io::Result<T>) -> std::result::Result<T, ()> {
        result.map_err(|e| {
            self.error.get_or_insert(e);
        })
    }

    /// Fill `buf` from the head when it lies within it.
    fn read_head(&mut self, buf: &mut [u8]) -> bool {
        if self.pos >= self.head_len as u64 {
            return false;
        }
        let start = self.pos as usize;
        match self.head[..self.head_len].get(start..start.saturating_add(buf.len())) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                self.pos += buf.len() as u64;
                true
            }
            _ => false,
        }
    }
}

impl ReadCacheOps for Pread {
    fn len(&mut self) -> std::result::Result<u64, ()> {
        Ok(self.len)
    }

    fn seek(&mut self, pos: u64) -> std::result::Result<u64, ()> {
        self.pos = pos;
        Ok(pos)
    }

    fn read(&mut self, buf: &mut [u8]) -> std::result::Result<usize, ()> {
        if self.read_head(buf) {
            return Ok(buf.len());
        }
        let result = self.file.read_at(buf, self.pos);
        let n = self.keep(result)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> std::result::Result<(), ()> {
        if self.read_head(buf) {
            return Ok(());
        }
        let result = read_full_at(&self.file, buf, self.pos).and_then(|n| match n == buf.len() {
            true => Ok(n),
            false => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file ended early; was it truncated while being read?")),
        });
        let n = self.keep(result)?;
        self.pos += n as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROGBITS: u32 = 1;
    const STRTAB: u32 = 3;
    const NOBITS: u32 = 8;

    /// A relocatable x86-64 ELF object with a null section, the given sections and a
    /// section-name table, of either class and byte order, laid out as a linker would.
    fn elf(class64: bool, big_endian: bool, sections: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let (ehsize, shentsize, w) = if class64 { (64, 64, 8) } else { (52, 40, 4) };
        let put = |out: &mut Vec<u8>, at: usize, value: u64, width: usize| {
            let bytes = if big_endian { value.to_be_bytes() } else { value.to_le_bytes() };
            let bytes = if big_endian { &bytes[8 - width..] } else { &bytes[..width] };
            out[at..at + width].copy_from_slice(bytes);
        };
        let mut names = vec![0u8];
        let mut all: Vec<(usize, u32, Vec<u8>)> = Vec::new();
        for (name, ty, data) in sections {
            all.push((names.len(), *ty, data.to_vec()));
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        all.push((names.len(), STRTAB, Vec::new()));
        names.extend_from_slice(b".shstrtab\0");
        all.last_mut().unwrap().2 = names;
        let mut out = vec![0u8; ehsize];
        let mut placed = Vec::new();
        for (_, _, data) in &all {
            placed.push((out.len(), data.len()));
            out.extend_from_slice(data);
        }
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let shoff = out.len();
        let count = all.len() + 1;
        out.resize(shoff + count * shentsize, 0);
        out[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', if class64 { 2 } else { 1 }, if big_endian { 2 } else { 1 }, 1]);
        put(&mut out, 16, 1, 2); // e_type: ET_REL
        put(&mut out, 18, 62, 2); // e_machine: EM_X86_64
        put(&mut out, 20, 1, 4); // e_version
        put(&mut out, 24 + 2 * w, shoff as u64, w);
        let flags = 24 + 3 * w; // e_flags, after e_entry, e_phoff and e_shoff
        put(&mut out, flags + 4, ehsize as u64, 2);
        put(&mut out, flags + 10, shentsize as u64, 2);
        put(&mut out, flags + 12, count as u64, 2);
        put(&mut out, flags + 14, (count - 1) as u64, 2);
        for (i, ((name, ty, _), (offset, size))) in all.iter().zip(placed).enumerate() {
            let at = shoff + (i + 1) * shentsize;
            put(&mut out, at, *name as u64, 4);
            put(&mut out, at + 4, u64::from(*ty), 4);
            // sh_flags and sh_addr come before sh_offset and sh_size.
            put(&mut out, at + 8 + 2 * w, offset as u64, w);
            put(&mut out, at + 8 + 3 * w, size as u64, w);
        }
        out
    }

    const RECORDS: &[u8] =
        b"license=GPL\0\0\0firmware=rtl_nic/rtl8168h-2.fw\0alias=pci:v000010ECd00008168sv*\0firmware=a.bin\0\
          softdep=pre: crc32c\0firmware=rtl_nic/rtl8168h-2.fw\0intree\0author=J\xf6rg\0";

    fn info(bytes: &[u8]) -> Result<Modinfo> {
        parse(Path::new("test.ko"), bytes)
    }

    #[test]
    fn records_of_every_class_and_byte_order() {
        for class64 in [true, false] {
            for big_endian in [true, false] {
                let bytes = elf(class64, big_endian, &[(".text", PROGBITS, b"\xc3"), (".modinfo", PROGBITS, RECORDS)]);
                let got = info(&bytes).unwrap_or_else(|e| panic!("class64 {class64} big {big_endian}: {e}"));
                assert_eq!(got.firmware, ["rtl_nic/rtl8168h-2.fw", "a.bin"]);
                assert_eq!(got.get("license").as_deref(), Some("GPL"));
                assert_eq!(got.get_all("firmware").count(), 3);
                assert_eq!(got.get("softdep").as_deref(), Some("pre: crc32c"));
                assert_eq!(got.get("intree").as_deref(), Some(""));
                assert_eq!(got.get("author").as_deref(), Some("J\u{fffd}rg"));
                assert_eq!(got.records().count(), 8);
            }
        }
    }

    #[test]
    fn a_section_whose_name_only_starts_with_modinfo_is_not_it() {
        let bytes = elf(true, false, &[(".modinfo.x", PROGBITS, b"firmware=no\0"), (".modinfo", PROGBITS, b"firmware=yes\0")]);
        assert_eq!(info(&bytes).unwrap().firmware, ["yes"]);
    }

    #[test]
    fn an_empty_or_nobits_section_has_no_records() {
        for ty in [PROGBITS, NOBITS] {
            let bytes = elf(true, false, &[(".modinfo", ty, b"")]);
            assert_eq!(info(&bytes).unwrap(), Modinfo::default());
        }
    }

    #[test]
    fn damaged_objects_are_refused_with_the_file_named() {
        let good = elf(true, false, &[(".modinfo", PROGBITS, RECORDS)]);
        let message = |bytes: &[u8]| info(bytes).unwrap_err().to_string();
        assert_eq!(message(b"hello"), "test.ko: not an ELF object");
        assert!(message(&good[..40]).starts_with("test.ko: damaged ELF object: "), "{}", message(&good[..40]));
        assert!(message(&good[..good.len() - 10]).starts_with("test.ko: damaged ELF object: "));
        let no_section = elf(true, false, &[(".text", PROGBITS, b"\xc3")]);
        assert_eq!(message(&no_section), "test.ko: ELF object without a .modinfo section: not a kernel module");
        let mut bad_class = good.clone();
        bad_class[4] = 9;
        assert_eq!(message(&bad_class), "test.ko: damaged ELF object: unknown ELF class");
        let mut bad_names = good.clone();
        bad_names[62] = 200; // e_shstrndx
        assert!(message(&bad_names).contains("damaged ELF object"), "{}", message(&bad_names));
        let mut compressed = good.clone();
        let shoff = u64::from_le_bytes(good[40..48].try_into().unwrap()) as usize;
        compressed[shoff + 64 + 9] = 0x08; // sh_flags of .modinfo: SHF_COMPRESSED is bit 11
        assert!(message(&compressed).contains("compressed (SHF_COMPRESSED)"));
    }

    #[test]
    fn a_firmware_name_that_is_not_utf8_is_refused() {
        let bytes = elf(true, false, &[(".modinfo", PROGBITS, b"firmware=a\xff.bin\0")]);
        assert_eq!(info(&bytes).unwrap_err().to_string(), "test.ko: firmware name `a\u{fffd}.bin` in .modinfo is not UTF-8");
    }

    fn compress(format: Format, bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        match format {
            Format::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(bytes).unwrap();
                e.finish().unwrap()
            }
            Format::Zstd => zstd::stream::encode_all(bytes, 1).unwrap(),
            Format::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(bytes).unwrap();
                e.finish().unwrap()
            }
            Format::Elf => bytes.to_vec(),
        }
    }

    #[test]
    fn files_plain_and_compressed_read_alike_and_truncation_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let elf_bytes = elf(true, false, &[(".text", PROGBITS, &[0x90; 4096]), (".modinfo", PROGBITS, RECORDS)]);
        let want = info(&elf_bytes).unwrap();
        for (format, name) in [(Format::Elf, "m.ko"), (Format::Xz, "m.ko.xz"), (Format::Zstd, "m.ko.zst"), (Format::Gzip, "m.ko.gz")] {
            let path = dir.path().join(name);
            let bytes = compress(format, &elf_bytes);
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(read(&path).unwrap(), want, "{name}");
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            let message = read(&path).unwrap_err().to_string();
            let expected = match format {
                Format::Elf => format!("{}: damaged ELF object: ", path.display()),
                _ => format!("{}: {} data is truncated or damaged: ", path.display(), format.name()),
            };
            assert!(message.starts_with(&expected), "{name}: {message}");
        }
        let text = dir.path().join("text.ko");
        std::fs::write(&text, "not a module").unwrap();
        assert!(read(&text).unwrap_err().to_string().ends_with("not a kernel module: neither an ELF object nor xz, zstd or gzip compressed"));
        let not_elf = dir.path().join("text.ko.zst");
        std::fs::write(&not_elf, compress(Format::Zstd, b"#!/bin/sh\n")).unwrap();
        assert!(read(&not_elf).unwrap_err().to_string().ends_with("zstd data is not an ELF object once decompressed"));
        let missing = dir.path().join("missing.ko");
        assert!(matches!(read(&missing), Err(Error::Io { .. })));
    }

    #[test]
    fn modules_of_every_size_read_alike_on_two_threads() {
        // Below the thread's own buffer, between it and the large ones, and two large ones,
        // which the threads read one at a time; each module names itself in its records.
        let dir = tempfile::tempdir().unwrap();
        let sizes = [4 << 10, 3 << 20, 6 << 20, 100 << 10, 5 << 20, 8 << 10, 2 << 20, 16 << 10, 6 << 20, 1 << 10];
        let mut rels = Vec::new();
        let mut want = Vec::new();
        for (n, size) in sizes.into_iter().enumerate() {
            let records = format!("name=m{n}\0firmware=m{n}.fw\0");
            let elf_bytes = elf(true, false, &[(".text", PROGBITS, &vec![0x90; size]), (".modinfo", PROGBITS, records.as_bytes())]);
            let (format, rel) = match n % 3 {
                0 => (Format::Zstd, format!("m{n}.ko.zst")),
                1 => (Format::Xz, format!("m{n}.ko.xz")),
                _ => (Format::Gzip, format!("m{n}.ko.gz")),
            };
            let mut bytes = compress(format, &elf_bytes);
            if n == 8 {
                bytes.truncate(bytes.len() / 2);
            }
            std::fs::write(dir.path().join(&rel), bytes).unwrap();
            want.push(match n {
                8 => Err(format!("{}: {} data is truncated or damaged: ", dir.path().join(&rel).display(), format.name())),
                _ => Ok(info(&elf_bytes).unwrap()),
            });
            rels.push(rel);
        }
        let rels: Vec<&str> = rels.iter().map(String::as_str).collect();
        let got = read_all(&Folder::open(dir.path()).unwrap(), &rels);
        assert_eq!(got.len(), want.len());
        for ((got, want), rel) in got.into_iter().zip(want).zip(&rels) {
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{rel}"),
                (Err(e), Err(start)) => assert!(e.to_string().starts_with(&start), "{rel}: {e}"),
                (got, want) => panic!("{rel}: read {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn a_compressed_bomb_costs_a_bounded_read() {
        // An ELF header whose section headers lie past 1 GiB, then zeros: each format stops
        // at the bound, having held at most that much.
        let dir = tempfile::tempdir().unwrap();
        let mut head = elf(true, false, &[(".modinfo", PROGBITS, RECORDS)]);
        head[0x28..0x30].copy_from_slice(&(1u64 << 30).to_le_bytes());
        let zeros = std::io::Read::take(std::io::repeat(0), 80 << 20);
        let mut plain = head.clone();
        std::io::Read::read_to_end(&mut std::io::Read::chain(&head[..0], zeros), &mut plain).unwrap();
        for (format, name) in [(Format::Zstd, "bomb.ko.zst"), (Format::Gzip, "bomb.ko.gz")] {
            let path = dir.path().join(name);
            std::fs::write(&path, compress(format, &plain)).unwrap();
            let e = read(&path).unwrap_err().to_string();
            assert!(e.ends_with("decompresses to more than 64 MiB, which no kernel module does"), "{name}: {e}");
        }
        // Section headers that end early: reading stops there, and the rest is never looked at.
        let mut short = elf(true, false, &[(".modinfo", PROGBITS, RECORDS)]);
        let want = info(&short).unwrap();
        short.extend(std::iter::repeat_n(0, 1 << 20));
        let path = dir.path().join("tail.ko.zst");
        std::fs::write(&path, compress(Format::Zstd, &short)).unwrap();
        assert_eq!(read(&path).unwrap(), want);
    }

    #[test]
    fn firmware_names_are_kept_for_the_file_they_were_read_from() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let tree = dir.path().join("lib/modules/6.1");
        std::fs::create_dir_all(tree.join("kernel")).unwrap();
        let module = |names: &[&str]| {
            let records: Vec<u8> = names.iter().flat_map(|n| format!("firmware={n}\0").into_bytes()).collect();
            elf(true, false, &[(".modinfo", PROGBITS, &records)])
        };
        std::fs::write(tree.join("kernel/a.ko"), module(&["a.fw", "b.fw"])).unwrap();
        std::fs::write(tree.join("kernel/c.ko"), module(&[])).unwrap();
        let rels = ["kernel/a.ko", "kernel/c.ko", "kernel/gone.ko"];
        let names_of = |found: Vec<Result<Vec<String>>>| -> Vec<String> {
            found.into_iter().map(|r| r.map_or_else(|e| format!("error: {e}"), |n| n.join(" "))).collect()
        };

        let mut cache = FirmwareNames::read(&root, &crate::kver::kv("6.1"));
        let first = names_of(cache.of(&tree, &rels));
        assert_eq!(first[..2], ["a.fw b.fw", ""]);
        assert!(first[2].starts_with("error:"), "{first:?}");
        crate::apply::store::keep_cache(&root, &crate::kver::kv("6.1"), "firmware", &cache.render().unwrap()).unwrap();

        // Kept: a module whose file has the stamp it had is not read again; the names come
        // from the cache (here edited to tell them apart). One written in place, or replaced,
        // has a new stamp and is read.
        let path = root.cache_path(&crate::kver::kv("6.1"), "firmware");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\ta.fw", "\tkept.fw")).unwrap();
        let mut kept = FirmwareNames::read(&root, &crate::kver::kv("6.1"));
        assert_eq!(names_of(kept.of(&tree, &rels[..2])), ["kept.fw b.fw", ""]);
        std::fs::write(tree.join("kernel/c.ko"), module(&["c.fw"])).unwrap();
        assert_eq!(names_of(kept.of(&tree, &rels[1..2])), ["c.fw"]);
        let a = tree.join("kernel/a.ko");
        let before = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&a).unwrap());
        std::fs::write(tree.join("kernel/a.ko.new"), module(&["new.fw"])).unwrap();
        std::fs::rename(tree.join("kernel/a.ko.new"), &a).unwrap();
        assert_ne!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&a).unwrap()), before);
        assert_eq!(names_of(kept.of(&tree, &rels[..1])), ["new.fw"]);

        // A cache that does not read back whole is none.
        let good = std::fs::read_to_string(&path).unwrap();
        for broken in [good.replacen("limopack firmware names 1", "limopack firmware names 2", 1), good.replacen(' ', "x", 1)] {
            std::fs::write(&path, &broken).unwrap();
            assert!(FirmwareNames::read(&root, &crate::kver::kv("6.1")).by_path.is_empty(), "{broken}");
        }
        crate::apply::store::forget_kernel(&root, &crate::kver::kv("6.1")).unwrap();
        assert!(!path.exists());
    }
}
