//! Debian binary packages, as limopack uses them to bring back a pruned file: found in apt's
//! cache or fetched with `apt-get download`, and read in place. Only the `ar` members and, of
//! `data.tar.*`, the files asked for are read; nothing else is unpacked.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::root::Root;

/// Where apt keeps the packages it downloaded.
pub const APT_CACHE_DIR: &str = "/var/cache/apt/archives";

/// The `.deb` files in apt's cache, by package name and version. apt names them
/// `NAME_VERSION_ARCH.deb`, with the version's `:` written as `%3a`.
#[derive(Debug, Default, Clone)]
pub struct AptCache {
    debs: HashMap<(String, String), PathBuf>,
}

impl AptCache {
    /// List the cache of the root; a missing cache is an empty one.
    pub fn scan(root: &Root) -> Result<AptCache> {
        let dir = root.resolve(APT_CACHE_DIR)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AptCache::default()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut cache = AptCache::default();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let Some(file) = entry.file_name().to_str().map(str::to_string) else { continue };
            let Some(stem) = file.strip_suffix(".deb") else { continue };
            let mut parts = stem.splitn(3, '_');
            if let (Some(name), Some(version), Some(_arch)) = (parts.next(), parts.next(), parts.next()) {
                cache.debs.insert((name.to_string(), unescape(version)), entry.path());
            }
        }
        Ok(cache)
    }

    /// The cached `.deb` of `package` (an architecture qualifier is ignored) at `version`.
    pub fn find(&self, package: &str, version: &str) -> Option<&Path> {
        let name = package.split(':').next().unwrap_or(package);
        self.debs.get(&(name.to_string(), version.to_string())).map(PathBuf::as_path)
    }
}

/// apt's file names escape with `%XX`; in practice only the epoch's `:`.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        match rest.get(at + 1..at + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
            Some(byte) if byte.is_ascii() => {
                out.push(byte as char);
                rest = &rest[at + 3..];
            }
            _ => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Read the data archive of `deb` and hand each regular file whose path, as dpkg lists it
/// (`/lib/modules/…`), is in `wanted` to `each`. Stops reading once all were seen, so a file
/// near the front of a big package costs little. Returns the paths found.
pub fn extract(
    deb: &Path,
    wanted: &HashSet<String>,
    mut each: impl FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<HashSet<String>> {
    // apt keeps its packages as files, never links; a package is as large as it is.
    let (file, _) = crate::fs::open_entry(deb, u64::MAX)?;
    let mut archive = ar::Archive::new(file);
    let mut found = HashSet::new();
    while let Some(member) = archive.next_entry() {
        let member = member.map_err(|e| Error::io(deb, e))?;
        let name = String::from_utf8_lossy(member.header().identifier()).into_owned();
        let Some(compression) = name.strip_prefix("data.tar") else { continue };
        let data: Box<dyn Read + '_> = match compression {
            "" => Box::new(member),
            ".xz" => Box::new(liblzma::read::XzDecoder::new(member)),
            ".zst" => Box::new(zstd::stream::read::Decoder::new(member).map_err(|e| Error::io(deb, e))?),
            ".gz" => Box::new(flate2::read::GzDecoder::new(member)),
            other => {
                return Err(Error::damaged(deb, format!("data.tar{other}: compression limopack cannot read")));
            }
        };
        let mut tar = tar::Archive::new(data);
        let entries = tar.entries().map_err(|e| Error::io(deb, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::io(deb, e))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map_err(|e| Error::io(deb, e))?;
            // Members are `./lib/modules/…`; dpkg lists them as `/lib/modules/…`.
            let listed = format!("/{}", path.to_string_lossy().trim_start_matches("./"));
            if wanted.contains(&listed) {
                each(&listed, &mut entry)?;
                found.insert(listed);
                if found.len() == wanted.len() {
                    break;
                }
            }
        }
        return Ok(found);
    }
    Err(Error::damaged(deb, "no data.tar member: not a Debian binary package"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_file_names_give_name_and_version() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("var/cache/apt/archives");
        std::fs::create_dir_all(cache.join("partial")).unwrap();
        for f in ["linux-image-6.1.0-56-cloud-amd64_6.1.192-2_amd64.deb", "foo_1%3a2.0-1_all.deb", "lock", "odd.deb"] {
            std::fs::write(cache.join(f), "").unwrap();
        }
        let apt = AptCache::scan(&Root::new(dir.path()).unwrap()).unwrap();
        assert!(apt.find("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2").is_some());
        assert!(apt.find("linux-image-6.1.0-56-cloud-amd64:amd64", "6.1.192-2").is_some());
        assert!(apt.find("linux-image-6.1.0-56-cloud-amd64", "6.1.192-1").is_none());
        assert!(apt.find("foo", "1:2.0-1").is_some());
        assert_eq!(apt.debs.len(), 2);
    }

    #[test]
    fn unescape_keeps_what_is_not_an_escape() {
        assert_eq!(unescape("1%3a2.0"), "1:2.0");
        assert_eq!(unescape("100%"), "100%");
        assert_eq!(unescape("%zz1"), "%zz1");
    }
}
