//! Simulated power loss, for tests. Every durability point of the write path (a file's fsync,
//! a directory's fsync, a rename, a removal) reports here; in normal builds the reports compile
//! to nothing.
//!
//! A test watches a directory (`watch`), runs a workload, and names the event at which power
//! is lost. The model keeps what a disk would keep: a file's bytes as of its last fsync (by
//! inode and birth time, as inode numbers are reused), and a directory's entries as of its last
//! fsync. At the chosen event (before its
//! effect), it builds the image a restart would find: the durable directory tree, each file
//! with its durable bytes, and every 4 KiB block written since then either kept or lost, at
//! random (seeded); a file's length is its durable or its current one, also at random. The
//! workload runs on; the test then recovers from the image and checks its invariants.

use std::path::Path;

/// A durability point of the write path.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// The file's data and size are durable (fsync, fdatasync).
    SyncFile(&'a Path),
    /// The directory's entries are durable.
    SyncDir(&'a Path),
    /// A rename (durable once its directory is synced).
    Rename(&'a Path),
    /// A removal (durable once its directory is synced).
    Remove(&'a Path),
}

/// Reports a durability point, after the operation succeeded.
#[inline]
pub fn after(event: Event<'_>) {
    #[cfg(test)]
    sim::after(event);
    #[cfg(not(test))]
    let _ = event;
}

#[cfg(test)]
#[allow(clippy::disallowed_types)] // a test-only model shared by test threads and cores
pub mod sim {
    use super::Event;
    use std::collections::{BTreeMap, HashMap};
    use std::ffi::OsString;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    const BLOCK: usize = 4096;

    /// A file: its inode number and birth time (a number freed by a deletion names the next
    /// file created, so the number alone would mix two files' bytes).
    type FileId = (u64, u128);

    fn file_id(metadata: &std::fs::Metadata) -> FileId {
        let born = metadata
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        (metadata.ino(), born)
    }

    #[derive(Clone)]
    enum Entry {
        File(FileId),
        Dir(u64),
    }

    impl Entry {
        fn ino(&self) -> u64 {
            match self {
                Entry::File((ino, _)) | Entry::Dir(ino) => *ino,
            }
        }
    }

    struct Watch {
        root: PathBuf,
        /// Durable bytes by file.
        contents: HashMap<FileId, Vec<u8>>,
        /// Durable entries by directory inode.
        listings: HashMap<u64, BTreeMap<OsString, Entry>>,
        root_ino: u64,
        events: u64,
        crash_at: Option<u64>,
        seed: u64,
        image: Option<PathBuf>,
    }

    static WATCHES: Mutex<Vec<Watch>> = Mutex::new(Vec::new());

    /// Starts modelling `root` (everything in it now counts as durable). At event `crash_at`
    /// (counted from 1), the image a restart would find is written to `image`.
    pub fn watch(root: &Path, crash_at: Option<u64>, seed: u64, image: &Path) {
        let mut watch = Watch {
            root: root.to_owned(),
            contents: HashMap::new(),
            listings: HashMap::new(),
            root_ino: std::fs::metadata(root).unwrap().ino(),
            events: 0,
            crash_at,
            seed,
            image: Some(image.to_owned()),
        };
        watch.snapshot_tree(root);
        let mut watches = WATCHES.lock().unwrap();
        watches.retain(|w| w.root != root);
        watches.push(watch);
    }

    /// Stops modelling `root`; returns how many events it saw and whether the image was made.
    pub fn unwatch(root: &Path) -> (u64, bool) {
        let mut watches = WATCHES.lock().unwrap();
        let index = watches
            .iter()
            .position(|w| w.root == root)
            .expect("watched");
        let watch = watches.remove(index);
        (watch.events, watch.image.is_none())
    }

    /// Events seen so far under `root`.
    pub fn events(root: &Path) -> u64 {
        let watches = WATCHES.lock().unwrap();
        watches
            .iter()
            .find(|w| w.root == root)
            .map_or(0, |w| w.events)
    }

    pub(super) fn after(event: Event<'_>) {
        let path = match event {
            Event::SyncFile(p) | Event::SyncDir(p) | Event::Rename(p) | Event::Remove(p) => p,
        };
        let mut watches = WATCHES.lock().unwrap();
        let Some(watch) = watches.iter_mut().find(|w| path.starts_with(&w.root)) else {
            return;
        };
        watch.events += 1;
        if std::env::var_os("TESSERA_CRASH_TRACE").is_some() {
            eprintln!("crash model: event {} {event:?}", watch.events);
        }
        if watch.crash_at == Some(watch.events) {
            if let Some(image) = watch.image.take() {
                watch.write_image(&image);
            }
        }
        match event {
            Event::SyncFile(path) => {
                if let (Ok(metadata), Ok(bytes)) = (std::fs::metadata(path), std::fs::read(path)) {
                    if let Some(dir) = path.parent().and_then(|d| std::fs::metadata(d).ok()) {
                        watch.scrub(metadata.ino(), dir.ino(), path.file_name());
                    }
                    watch.contents.insert(file_id(&metadata), bytes);
                }
            }
            Event::SyncDir(dir) => {
                if let Ok(metadata) = std::fs::metadata(dir) {
                    let listing = list(dir);
                    if std::env::var_os("TESSERA_CRASH_TRACE").is_some() {
                        eprintln!(
                            "   ino {} lists {:?}",
                            metadata.ino(),
                            listing.keys().collect::<Vec<_>>()
                        );
                    }
                    for (name, entry) in &listing {
                        watch.scrub(entry.ino(), metadata.ino(), Some(name));
                    }
                    watch.listings.insert(metadata.ino(), listing);
                }
            }
            Event::Rename(_) | Event::Remove(_) => {}
        }
    }

    fn list(dir: &Path) -> BTreeMap<OsString, Entry> {
        let mut listing = BTreeMap::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let item = if metadata.is_dir() {
                Entry::Dir(metadata.ino())
            } else {
                Entry::File(file_id(&metadata))
            };
            listing.insert(entry.file_name(), item);
        }
        listing
    }

    impl Watch {
        /// Inode `ino` is durable as `name` in directory `dir_ino` now, so every other durable
        /// name for that number is gone: the unlink or rename that freed or moved it is
        /// committed no later (a journaling file system commits metadata in order, and reuses
        /// an inode number only after the unlink that freed it).
        fn scrub(&mut self, ino: u64, dir_ino: u64, name: Option<&std::ffi::OsStr>) {
            for (listing_ino, listing) in self.listings.iter_mut() {
                listing.retain(|entry_name, entry| {
                    entry.ino() != ino
                        || (*listing_ino == dir_ino && Some(entry_name.as_os_str()) == name)
                });
            }
        }

        fn snapshot_tree(&mut self, dir: &Path) {
            let listing = list(dir);
            for (name, entry) in &listing {
                let path = dir.join(name);
                match entry {
                    Entry::Dir(_) => self.snapshot_tree(&path),
                    Entry::File(id) => {
                        self.contents
                            .insert(*id, std::fs::read(&path).unwrap_or_default());
                    }
                }
            }
            let ino = std::fs::metadata(dir).unwrap().ino();
            self.listings.insert(ino, listing);
        }

        fn next_random(&mut self) -> u64 {
            self.seed = self
                .seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.seed >> 33
        }

        /// Writes the tree a restart would find now.
        fn write_image(&mut self, image: &Path) {
            // Where each file lives now, to know what was written since its last fsync.
            let mut current: HashMap<FileId, PathBuf> = HashMap::new();
            collect_current(&self.root, &mut current);
            std::fs::create_dir_all(image).unwrap();
            self.write_dir(self.root_ino, image, &current);
        }

        fn write_dir(&mut self, ino: u64, to: &Path, current: &HashMap<FileId, PathBuf>) {
            let listing = self.listings.get(&ino).cloned().unwrap_or_default();
            for (name, entry) in listing {
                let path = to.join(&name);
                match entry {
                    Entry::Dir(child) => {
                        std::fs::create_dir_all(&path).unwrap();
                        self.write_dir(child, &path, current);
                    }
                    Entry::File(child) => {
                        let durable = self.contents.get(&child).cloned().unwrap_or_default();
                        let now = current
                            .get(&child)
                            .and_then(|p| read_if_same(p, child))
                            .unwrap_or_else(|| durable.clone());
                        let bytes = self.torn(&durable, &now);
                        std::fs::write(&path, bytes).unwrap();
                    }
                }
            }
        }

        /// The durable bytes with each block written since kept or lost, at random.
        fn torn(&mut self, durable: &[u8], now: &[u8]) -> Vec<u8> {
            if durable == now {
                return durable.to_vec();
            }
            let length = if self.next_random().is_multiple_of(2) {
                durable.len()
            } else {
                now.len()
            };
            let mut bytes = vec![0u8; length];
            for start in (0..length).step_by(BLOCK) {
                let end = (start + BLOCK).min(length);
                let old = durable.get(start..end.min(durable.len())).unwrap_or(&[]);
                let new = now.get(start..end.min(now.len())).unwrap_or(&[]);
                let source = if old != new && self.next_random().is_multiple_of(2) {
                    new
                } else {
                    old
                };
                bytes[start..start + source.len()].copy_from_slice(source);
            }
            bytes
        }
    }

    /// The bytes of the file `id` at `path`, if that is still the file there: writers go on
    /// while the image is written, and a rename may have put another file at the path since
    /// `collect_current` looked (reading it would mix two files' bytes). `None` then: the
    /// file's writes since its last fsync count as lost, which a power loss may do.
    fn read_if_same(path: &Path, id: FileId) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut file = std::fs::File::open(path).ok()?;
        if file_id(&file.metadata().ok()?) != id {
            return None;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    fn collect_current(dir: &Path, into: &mut HashMap<FileId, PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(metadata) = std::fs::symlink_metadata(entry.path()) else {
                continue;
            };
            if metadata.is_dir() {
                collect_current(&entry.path(), into);
            } else {
                into.insert(file_id(&metadata), entry.path());
            }
        }
    }
}
