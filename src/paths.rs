//! Paths by the thousand, each with a value: the bytes of all of them in one buffer, and a
//! table of where each is. A map of `String`s makes an allocation for every path, and a run
//! reads two sets of four thousand: a tree's module files and dpkg's list of the tree.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

#[derive(Clone, Default)]
pub struct PathTable<V> {
    text: String,
    /// Where each path is in `text`, and its value.
    table: HashTable<(u32, u32, V)>,
}

fn hash(path: &str) -> u64 {
    FxBuildHasher.hash_one(path)
}

/// The path at `start`, `len` bytes long.
fn at(text: &str, start: u32, len: u32) -> &str {
    &text[start as usize..][..len as usize]
}

impl<V> PathTable<V> {
    /// A table with room for `paths` paths of `bytes` bytes in all.
    pub fn with_capacity(paths: usize, bytes: usize) -> PathTable<V> {
        PathTable { text: String::with_capacity(bytes), table: HashTable::with_capacity(paths) }
    }

    pub fn get(&self, path: &str) -> Option<&V> {
        let found = self.table.find(hash(path), |&(start, len, _)| at(&self.text, start, len) == path);
        found.map(|(_, _, value)| value)
    }

    /// Add `path` with `value`, unless it is here already: then `value` is handed back.
    pub fn insert_new(&mut self, path: &str, value: V) -> Result<(), V> {
        let hashed = hash(path);
        if self.get(path).is_some() {
            return Err(value);
        }
        let start = u32::try_from(self.text.len()).expect("paths under 4 GiB in all");
        let len = u32::try_from(path.len()).expect("a path under 4 GiB");
        self.text.push_str(path);
        let PathTable { text, table } = self;
        table.insert_unique(hashed, (start, len, value), |&(start, len, _)| hash(at(text, start, len)));
        Ok(())
    }

    /// Take `path` out. Its bytes stay in the buffer, unused. Only tests take files away.
    #[cfg(test)]
    pub fn remove(&mut self, path: &str) -> Option<V> {
        let PathTable { text, table } = self;
        let found = table.find_entry(hash(path), |&(start, len, _)| at(text, start, len) == path);
        found.ok().map(|entry| entry.remove().0 .2)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Every path with its value, in no order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.table.iter().map(|(start, len, value)| (at(&self.text, *start, *len), value))
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for PathTable<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: PartialEq> PartialEq for PathTable<V> {
    fn eq(&self, other: &PathTable<V>) -> bool {
        self.len() == other.len() && self.iter().all(|(path, value)| other.get(path) == Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_found_by_their_text_once_each() {
        let mut table = PathTable::with_capacity(1, 4);
        let paths: Vec<String> = (0..1000).map(|n| format!("kernel/drivers/{}/m{n}.ko", n % 7)).collect();
        for (n, path) in paths.iter().enumerate() {
            assert_eq!(table.insert_new(path, n), Ok(()));
        }
        assert_eq!(table.insert_new(&paths[5], 9999), Err(9999));
        assert_eq!(table.len(), 1000);
        assert!(paths.iter().enumerate().all(|(n, path)| table.get(path) == Some(&n)));
        assert_eq!(table.get("kernel/drivers/0/m7.ko"), Some(&7));
        assert_eq!(table.get("kernel/drivers/0/m7.k"), None);
        assert_eq!(table.remove(&paths[3]), Some(3));
        assert_eq!(table.get(&paths[3]), None);
        assert_eq!((table.remove(&paths[3]), table.len()), (None, 999));
        let mut listed: Vec<(&str, &usize)> = table.iter().collect();
        listed.sort_by_key(|(_, n)| **n);
        assert_eq!(listed[3], (paths[4].as_str(), &4));
        let mut same = PathTable::default();
        for (path, n) in table.iter().collect::<Vec<_>>().into_iter().rev() {
            same.insert_new(path, *n).unwrap();
        }
        assert_eq!(same, table);
        same.remove(&paths[0]);
        assert_ne!(same, table);
    }
}
