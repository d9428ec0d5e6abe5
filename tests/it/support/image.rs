//! A root folder as an image builder ships it: its footprint (what each part weighs) and an
//! ext4 disk image of it.
//!
//! External tools used: mkfs.ext4 (e2fsprogs).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use fs_err as fs;
use walkdir::WalkDir;

use super::debian_root::run;

/// One measured part of a root: the regular files under `path` (a folder or one file).
#[derive(Debug, Clone)]
pub struct Part {
    pub what: String,
    pub path: String,
    /// Apparent size in bytes, as `du --apparent-size -b` counts it; None when absent.
    pub bytes: Option<u64>,
    pub files: usize,
}

/// What the parts of a root weigh, each part a `(what, in-root path)` pair.
pub fn footprint(root: &Path, parts: &[(&str, String)]) -> Vec<Part> {
    parts
        .iter()
        .map(|(what, path)| {
            let full = root.join(path.trim_start_matches('/'));
            let (bytes, files) = if std::fs::symlink_metadata(&full).is_err() {
                (None, 0)
            } else {
                let sizes: Vec<u64> = WalkDir::new(&full)
                    .into_iter()
                    .map(|e| e.unwrap())
                    .filter(|e| e.file_type().is_file())
                    .map(|e| e.metadata().unwrap().len())
                    .collect();
                (Some(sizes.iter().sum()), sizes.len())
            };
            Part { what: what.to_string(), path: path.clone(), bytes, files }
        })
        .collect()
}

/// The part named `what` of a footprint.
pub fn part<'a>(parts: &'a [Part], what: &str) -> &'a Part {
    parts.iter().find(|p| p.what == what).unwrap_or_else(|| panic!("no part `{what}` measured"))
}

fn mib(part: &Part) -> String {
    match part.bytes {
        Some(bytes) => format!("{:.1} MiB ({} files)", bytes as f64 / 1048576.0, part.files),
        None => "absent".to_string(),
    }
}

/// A before-and-after table of two footprints of the same parts.
pub fn footprint_table(before: &[Part], after: &[Part]) -> String {
    let rows: Vec<[String; 4]> = before.iter().zip(after).map(|(b, a)| [b.what.clone(), b.path.clone(), mib(b), mib(a)]).collect();
    let header = ["what", "path", "before", "after"].map(String::from);
    let width = |i: usize| rows.iter().chain([&header]).map(|r| r[i].len()).max().unwrap();
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    let mut table = String::new();
    for [what, path, b, a] in [header.clone()].iter().chain(&rows) {
        writeln!(table, "{what:<w0$}  {path:<w1$}  {b:>w2$}  {a:>w3$}").unwrap();
    }
    table
}

/// Writes an ext4 image of `root` to `image`, populated by `mkfs.ext4 -d` (no mount, no loop
/// device), sized from what the root holds plus a quarter and 64 MiB for the journal, the
/// inode tables and what the booted system writes. `root` must have nothing mounted in it.
/// Returns the image's size in MiB.
pub fn ext4_image(root: &Path, image: &Path) -> u64 {
    let (mut bytes, mut inodes) = (0u64, 0u64);
    for entry in WalkDir::new(root) {
        let meta = entry.unwrap().metadata().unwrap();
        bytes += meta.len().div_ceil(4096) * 4096;
        inodes += 1;
    }
    let size_mib = (bytes + bytes / 4) / 1048576 + 64;
    fs::File::create(image).unwrap().set_len(size_mib * 1048576).unwrap();
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-N", &(inodes * 2 + 4096).to_string(), "-d"])
        .arg(root)
        .arg(image));
    size_mib
}
