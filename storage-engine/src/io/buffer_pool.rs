//! The per-core buffer pool of decoded pages. A frame holds one Parquet data page of one column
//! chunk, already decompressed and decoded into an Arrow array (primitive values in 64-byte
//! aligned buffers, dictionary codes plus their dictionary, validity bitmap), keyed by
//! (file, row group, column, page). A warm query therefore pays neither I/O nor decoding.
//!
//! The budget counts decoded bytes. Eviction is S3-FIFO (Yang et al., SOSP 2023): new pages enter
//! a small FIFO (10% of the budget); a page touched again before it leaves the small FIFO is
//! promoted to the main FIFO, otherwise it is evicted and its key remembered in a ghost FIFO so a
//! quick re-read goes straight to main. Main evicts with one CLOCK-like second chance per hit.
//! Why S3-FIFO: one sequential scan larger than the pool (a full-table GROUP BY) passes through the
//! small FIFO without flushing the hot set in main — the scan resistance we need — and a hit costs
//! one counter bump, no list reordering.
//!
//! Pinning: a frame handed out is an `Rc`; a frame whose `Rc` is held elsewhere is pinned and is
//! skipped by eviction. Pinning is not a use: a pinned page in the small FIFO that was not touched
//! again goes back to the end of small, never to main, so the pages a big scan holds while it
//! works cannot push the hot set out of main. Pages that do not fit (everything pinned) are returned unpooled, so a query
//! larger than the pool still runs by streaming through it. The pool belongs to one core and is
//! never shared (`Rc`/`RefCell`, no locks).
//!
//! Floors: each page belongs to the group (tenant) whose query pooled it. A tenant given a floor
//! (`set_floor`) keeps at least that many bytes of pages against other tenants' inserts: while
//! evicting for another owner, a page whose owner would drop below its floor is passed over as
//! if pinned. A tenant's own inserts may evict its own pages.

use super::runtime::Group;
use arrow_array::{Array, ArrayRef};
use hashbrown::HashMap;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub file_id: u64,
    pub row_group: u32,
    pub column: u32,
    pub page: u32,
}

/// One decoded page: rows `first_row..first_row + array.len()` of its row group.
#[derive(Debug)]
pub struct Frame {
    pub first_row: u32,
    pub array: ArrayRef,
    pub bytes: usize,
}

impl Frame {
    pub fn new(first_row: u32, array: ArrayRef) -> Frame {
        let bytes = array.get_array_memory_size();
        Frame {
            first_row,
            array,
            bytes,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub inserts: u64,
    /// Pages returned to a query without being pooled (no room, everything pinned).
    pub bypassed: u64,
    pub bytes_used: u64,
    pub bytes_budget: u64,
    pub pages: u64,
}

struct Entry {
    frame: Rc<Frame>,
    frequency: u8,
    in_main: bool,
    owner: Group,
}

struct Inner {
    entries: HashMap<PageKey, Entry>,
    small: VecDeque<PageKey>,
    main: VecDeque<PageKey>,
    ghost: VecDeque<PageKey>,
    ghost_set: hashbrown::HashSet<PageKey>,
    small_bytes: usize,
    main_bytes: usize,
    counters: PoolCounters,
    /// Bytes of pages per owner, for owners with a floor.
    owned: HashMap<Group, usize>,
    floors: HashMap<Group, usize>,
}

impl Inner {
    /// Whether evicting `entry` for `inserting`'s page would take its owner below its floor.
    fn protected(&self, entry: &Entry, inserting: Group) -> bool {
        entry.owner != inserting
            && self.floors.get(&entry.owner).is_some_and(|&floor| {
                let owned = self.owned.get(&entry.owner).copied().unwrap_or(0);
                owned.saturating_sub(entry.frame.bytes) < floor
            })
    }

    fn add_owned(&mut self, owner: Group, bytes: usize) {
        if self.floors.contains_key(&owner) {
            *self.owned.entry(owner).or_default() += bytes;
        }
    }

    fn remove_owned(&mut self, owner: Group, bytes: usize) {
        if let Some(owned) = self.owned.get_mut(&owner) {
            *owned = owned.saturating_sub(bytes);
        }
    }
}

pub struct BufferPool {
    budget_bytes: usize,
    inner: RefCell<Inner>,
}

const FREQUENCY_MAX: u8 = 3;

impl BufferPool {
    pub fn new(budget_bytes: usize) -> BufferPool {
        BufferPool {
            budget_bytes,
            inner: RefCell::new(Inner {
                entries: HashMap::new(),
                small: VecDeque::new(),
                main: VecDeque::new(),
                ghost: VecDeque::new(),
                ghost_set: hashbrown::HashSet::new(),
                small_bytes: 0,
                main_bytes: 0,
                owned: HashMap::new(),
                floors: HashMap::new(),
                counters: PoolCounters {
                    bytes_budget: budget_bytes as u64,
                    ..Default::default()
                },
            }),
        }
    }

    /// The pinned frame for `key`, counting a hit or a miss.
    pub fn get(&self, key: &PageKey) -> Option<Rc<Frame>> {
        let mut inner = self.inner.borrow_mut();
        match inner.entries.get_mut(key) {
            Some(entry) => {
                entry.frequency = (entry.frequency + 1).min(FREQUENCY_MAX);
                let frame = entry.frame.clone();
                inner.counters.hits += 1;
                Some(frame)
            }
            None => {
                inner.counters.misses += 1;
                None
            }
        }
    }

    /// Adds a decoded page of the node's own (no floor); see `insert_for`.
    pub fn insert(&self, key: PageKey, frame: Frame) -> Rc<Frame> {
        self.insert_for(Group::NODE, key, frame)
    }

    /// Keeps at least `bytes` of `owner`'s pages against other owners' inserts (0: no floor).
    /// Pages pooled before the floor was set count toward it from the next insert of theirs.
    pub fn set_floor(&self, owner: Group, bytes: usize) {
        let mut inner = self.inner.borrow_mut();
        if bytes == 0 {
            inner.floors.remove(&owner);
            inner.owned.remove(&owner);
            return;
        }
        if inner.floors.insert(owner, bytes).is_none() {
            let owned = inner
                .entries
                .values()
                .filter(|e| e.owner == owner)
                .map(|e| e.frame.bytes)
                .sum();
            inner.owned.insert(owner, owned);
        }
    }

    /// Bytes of `owner`'s pages, when it has a floor.
    pub fn owned_bytes(&self, owner: Group) -> Option<usize> {
        self.inner.borrow().owned.get(&owner).copied()
    }

    /// Adds a decoded page pooled by `owner`'s query, evicting unpinned pages as needed (never
    /// taking another owner below its floor); returns the (pinned) frame whether or not it
    /// could be pooled.
    pub fn insert_for(&self, owner: Group, key: PageKey, frame: Frame) -> Rc<Frame> {
        let frame = Rc::new(frame);
        let mut inner = self.inner.borrow_mut();
        if inner.entries.contains_key(&key) || frame.bytes > self.budget_bytes {
            inner.counters.bypassed += 1;
            return frame;
        }
        while inner.small_bytes + inner.main_bytes + frame.bytes > self.budget_bytes {
            if !self.evict_one(&mut inner, owner) {
                inner.counters.bypassed += 1;
                return frame;
            }
        }
        let to_main = inner.ghost_set.remove(&key);
        if to_main {
            inner.main.push_back(key);
            inner.main_bytes += frame.bytes;
        } else {
            inner.small.push_back(key);
            inner.small_bytes += frame.bytes;
        }
        inner.entries.insert(
            key,
            Entry {
                frame: frame.clone(),
                frequency: 0,
                in_main: to_main,
                owner,
            },
        );
        inner.add_owned(owner, frame.bytes);
        inner.counters.inserts += 1;
        frame
    }

    /// Evicts one unpinned page that `inserting` may evict; false when there is none.
    fn evict_one(&self, inner: &mut Inner, inserting: Group) -> bool {
        let small_target = self.budget_bytes / 10;
        // Each queue is walked at most once around per call, so pinned pages cannot loop forever.
        let prefer_small = inner.small_bytes > small_target || inner.main.is_empty();
        let order = if prefer_small {
            [true, false]
        } else {
            [false, true]
        };
        for from_small in order {
            if self.evict_from(inner, from_small, inserting) {
                return true;
            }
        }
        false
    }

    fn evict_from(&self, inner: &mut Inner, from_small: bool, inserting: Group) -> bool {
        let mut rounds = if from_small {
            inner.small.len()
        } else {
            inner.main.len() * (FREQUENCY_MAX as usize + 1)
        };
        while rounds > 0 {
            rounds -= 1;
            let queue = if from_small {
                &mut inner.small
            } else {
                &mut inner.main
            };
            let Some(key) = queue.pop_front() else {
                return false;
            };
            let Some(entry) = inner.entries.get(&key) else {
                continue;
            };
            // Below its owner's floor counts as pinned for this insert.
            let pinned = Rc::strong_count(&entry.frame) > 1 || inner.protected(entry, inserting);
            let Some(entry) = inner.entries.get_mut(&key) else {
                continue;
            };
            let (bytes, owner) = (entry.frame.bytes, entry.owner);
            if from_small {
                if pinned && entry.frequency == 0 {
                    // In use but never touched again: a scan's page, not a hot one. It stays in
                    // small (back of the queue) and leaves as soon as it is let go.
                    inner.small.push_back(key);
                    continue;
                }
                if entry.frequency > 0 {
                    // Touched again while in small: promote to main.
                    entry.in_main = true;
                    entry.frequency = 0;
                    inner.small_bytes -= bytes;
                    inner.main_bytes += bytes;
                    inner.main.push_back(key);
                    continue;
                }
                inner.small_bytes -= bytes;
                inner.entries.remove(&key);
                inner.remove_owned(owner, bytes);
                inner.ghost.push_back(key);
                inner.ghost_set.insert(key);
                while inner.ghost.len() > inner.entries.len().max(1024) {
                    if let Some(old) = inner.ghost.pop_front() {
                        inner.ghost_set.remove(&old);
                    }
                }
            } else {
                if pinned || entry.frequency > 0 {
                    entry.frequency = entry.frequency.saturating_sub(1);
                    inner.main.push_back(key);
                    continue;
                }
                inner.main_bytes -= bytes;
                inner.entries.remove(&key);
                inner.remove_owned(owner, bytes);
            }
            inner.counters.evictions += 1;
            return true;
        }
        false
    }

    pub fn counters(&self) -> PoolCounters {
        let inner = self.inner.borrow();
        PoolCounters {
            bytes_used: (inner.small_bytes + inner.main_bytes) as u64,
            pages: inner.entries.len() as u64,
            ..inner.counters
        }
    }

    /// Drops every unpinned page (for cold benchmarks); returns the pages dropped.
    pub fn clear(&self) -> usize {
        let dropped = self.retain(|_, entry| Rc::strong_count(&entry.frame) > 1);
        let mut inner = self.inner.borrow_mut();
        inner.ghost.clear();
        inner.ghost_set.clear();
        dropped
    }

    /// Drops every page of the given files, pinned or not (a query still holding a frame keeps
    /// its `Rc`; the pool just stops listing it). Used when a table is dropped; returns the pages
    /// dropped.
    pub fn evict_files(&self, file_ids: &hashbrown::HashSet<u64>) -> usize {
        let dropped = self.retain(|key, _| !file_ids.contains(&key.file_id));
        let mut inner = self.inner.borrow_mut();
        let Inner {
            ghost, ghost_set, ..
        } = &mut *inner;
        ghost.retain(|key| !file_ids.contains(&key.file_id));
        ghost_set.retain(|key| !file_ids.contains(&key.file_id));
        dropped
    }

    /// Keeps the pages `keep` accepts, rebuilding the queues and their byte counts.
    fn retain(&self, mut keep: impl FnMut(&PageKey, &Entry) -> bool) -> usize {
        let mut inner = self.inner.borrow_mut();
        let before = inner.entries.len();
        inner.entries.retain(|key, entry| keep(key, entry));
        let Inner {
            entries,
            small,
            main,
            small_bytes,
            main_bytes,
            owned,
            ..
        } = &mut *inner;
        for (owner, bytes) in owned.iter_mut() {
            *bytes = entries
                .values()
                .filter(|e| e.owner == *owner)
                .map(|e| e.frame.bytes)
                .sum();
        }
        small.retain(|k| entries.get(k).is_some_and(|e| !e.in_main));
        main.retain(|k| entries.get(k).is_some_and(|e| e.in_main));
        let bytes = |queue: &VecDeque<PageKey>| -> usize {
            queue
                .iter()
                .filter_map(|k| entries.get(k))
                .map(|e| e.frame.bytes)
                .sum()
        };
        *small_bytes = bytes(small);
        *main_bytes = bytes(main);
        before - inner.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use std::sync::Arc;

    fn key(page: u32) -> PageKey {
        PageKey {
            file_id: 1,
            row_group: 0,
            column: 0,
            page,
        }
    }

    fn frame(rows: usize) -> Frame {
        Frame::new(0, Arc::new(Int64Array::from(vec![0i64; rows])))
    }

    #[test]
    fn budget_is_never_exceeded_and_counters_add_up() {
        let page_bytes = frame(1000).bytes;
        let pool = BufferPool::new(page_bytes * 10);
        for page in 0..100 {
            pool.insert(key(page), frame(1000));
            assert!(pool.counters().bytes_used <= (page_bytes * 10) as u64);
        }
        let counters = pool.counters();
        assert_eq!(counters.inserts, 100);
        assert_eq!(counters.evictions, 100 - counters.pages);
    }

    #[test]
    fn a_scan_does_not_flush_the_hot_set() {
        let page_bytes = frame(1000).bytes;
        let pool = BufferPool::new(page_bytes * 20);
        for page in 0..10 {
            pool.insert(key(page), frame(1000));
        }
        for _ in 0..3 {
            for page in 0..10 {
                assert!(pool.get(&key(page)).is_some());
            }
        }
        // A one-pass scan of 1000 other pages.
        for page in 1000..2000 {
            if pool.get(&key(page)).is_none() {
                pool.insert(key(page), frame(1000));
            }
        }
        let hot_left = (0..10).filter(|p| pool.get(&key(*p)).is_some()).count();
        assert!(
            hot_left >= 9,
            "scan evicted the hot set: {hot_left}/10 left"
        );
    }

    #[test]
    fn a_scan_holding_its_pages_pinned_does_not_flush_the_hot_set() {
        let page_bytes = frame(1000).bytes;
        // Small FIFO target: 4 pages. The scan holds the 12 pages of each row group while it
        // evaluates them, as `exec` does, then lets them go.
        let pool = BufferPool::new(page_bytes * 40);
        for page in 0..30 {
            pool.insert(key(page), frame(1000));
        }
        for _ in 0..3 {
            for page in 0..30 {
                assert!(pool.get(&key(page)).is_some());
            }
        }
        for row_group in 0..100 {
            let held: Vec<Rc<Frame>> = (0..12)
                .map(|i| {
                    let page = 1000 + row_group * 12 + i;
                    match pool.get(&key(page)) {
                        Some(frame) => frame,
                        None => pool.insert(key(page), frame(1000)),
                    }
                })
                .collect();
            drop(held);
        }
        let hot_left = (0..30).filter(|p| pool.get(&key(*p)).is_some()).count();
        assert!(
            hot_left >= 27,
            "a pinned scan evicted the hot set: {hot_left}/30 left"
        );
    }

    #[test]
    fn another_owner_cannot_evict_a_tenant_below_its_floor() {
        let page_bytes = frame(1000).bytes;
        let pool = BufferPool::new(page_bytes * 20);
        let (quiet, noisy) = (Group::tenant("quiet"), Group::tenant("noisy"));
        // Pooled before the floor is set: they count toward it.
        for page in 0..4 {
            pool.insert_for(quiet, key(page), frame(1000));
        }
        pool.set_floor(quiet, page_bytes * 8);
        for page in 4..8 {
            pool.insert_for(quiet, key(page), frame(1000));
        }
        assert_eq!(pool.owned_bytes(quiet), Some(page_bytes * 8));
        // A one-pass scan by another tenant, pages never touched again, far larger than the pool.
        for page in 1000..3000 {
            pool.insert_for(noisy, key(page), frame(1000));
            assert!(pool.counters().bytes_used <= (page_bytes * 20) as u64);
        }
        let quiet_left = (0..8).filter(|p| pool.get(&key(*p)).is_some()).count();
        assert_eq!(quiet_left, 8, "the floor was not kept");
        // The tenant's own inserts may evict its own pages; it keeps its floor's worth at most
        // as long as it needs room.
        for page in 100..140 {
            pool.insert_for(quiet, key(page), frame(1000));
        }
        assert!(pool.owned_bytes(quiet).unwrap() >= page_bytes * 8);
        // Without the floor, the next scan takes the pages like any other.
        pool.set_floor(quiet, 0);
        for page in 5000..7000 {
            pool.insert_for(noisy, key(page), frame(1000));
        }
        let quiet_left = (100..140).filter(|p| pool.get(&key(*p)).is_some()).count();
        assert!(quiet_left < 8, "{quiet_left} pages kept without a floor");
        assert_eq!(pool.owned_bytes(quiet), None);
    }

    #[test]
    fn pinned_pages_are_not_evicted_and_overflow_bypasses() {
        let page_bytes = frame(1000).bytes;
        let pool = BufferPool::new(page_bytes * 2);
        let pinned_a = pool.insert(key(1), frame(1000));
        let pinned_b = pool.insert(key(2), frame(1000));
        let extra = pool.insert(key(3), frame(1000));
        assert_eq!(extra.array.len(), 1000);
        assert_eq!(pool.counters().bypassed, 1);
        assert!(pool.get(&key(1)).is_some() && pool.get(&key(2)).is_some());
        drop((pinned_a, pinned_b));
        pool.insert(key(4), frame(1000));
        assert_eq!(pool.counters().pages, 2);
    }
}
