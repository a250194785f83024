//! The partial-result cache: what one query fragment computed over one immutable Parquet file
//! (its groups with their accumulator states, or its count), kept on the core that owns the
//! file, so a repeated aggregation scans only the files it has not seen (and the rows still
//! buffered by streaming ingestion, which are never cached).
//!
//! An entry is keyed by the file's cache id (tenant, table, incarnation, file id and path: a
//! file never changes once published, and a re-created table has a new incarnation) and by a
//! fingerprint of everything the fragment's result depends on: the bound filter, group keys,
//! aggregates and the columns' types. A cached part is exactly what a scan of the file makes,
//! and parts are folded in file order as scanned ones are, so a cached answer is bit-identical
//! to a scanned one. Entries are bounded in bytes and evicted first in, first out; files
//! removed by compaction, retention or a drop are forgotten with their pages.

use crate::query::aggregate::GroupRows;
use crate::query::plan::{Mode, Plan};
use hashbrown::{HashMap, HashSet};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

/// What a fragment computed over one file.
#[derive(Clone, Debug, PartialEq)]
pub enum Partial {
    Groups(Rc<GroupRows>),
    Count(u64),
}

impl Partial {
    fn bytes(&self) -> usize {
        const ENTRY: usize = 64;
        match self {
            Partial::Count(_) => ENTRY,
            Partial::Groups(rows) => ENTRY + rows.memory_bytes() as usize,
        }
    }
}

/// Hit and size counters of one core's cache.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PartialCounters {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub entries: u64,
    pub bytes_used: u64,
    pub bytes_budget: u64,
}

type Key = (u64, u64);

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, (Partial, usize)>,
    order: VecDeque<Key>,
    bytes: usize,
    counters: PartialCounters,
    /// Per plan (its filterless fingerprint): how many groups its last run here made.
    groups_seen: HashMap<u64, u64>,
}

/// Grouped plans without float sums keep per-file parts (and so are cached per file) once a run
/// on this core made at most this many groups: below it a merge per file costs little, above
/// it (a GROUP BY over a million users) one shared state is several times faster.
pub const PER_FILE_GROUPS_MAX: u64 = 4096;

/// Plans whose group counts a core remembers.
const GROUPS_SEEN_MAX: usize = 4096;

/// One core's cache of partial results, bounded in bytes.
pub struct PartialCache {
    budget_bytes: usize,
    inner: RefCell<Inner>,
}

/// Fingerprints of a plan's fragment: the same for two plans exactly when a file's partial
/// result is the same for both.
#[derive(Clone, Copy, Debug)]
pub struct Fingerprints {
    /// Of the plan as it is.
    filtered: u64,
    /// Of the plan without its filter: the fragment over a file whose statistics prove every
    /// row matches (a day inside a date range), whatever the range's ends.
    all_rows: u64,
}

/// The fingerprint a fold of several files' parts is kept under (its key names the parts).
pub const FOLD: u64 = u64::MAX;

/// Names the fold of the parts of `files` (cache id and manifest truth, in fold order).
pub fn fold_key(
    fingerprints: &Fingerprints,
    files: impl Iterator<Item = (u64, crate::query::prune::Truth)>,
) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    "fold".hash(&mut hasher);
    for (file, truth) in files {
        (file, fingerprints.for_file(truth)).hash(&mut hasher);
    }
    hasher.finish()
}

impl Fingerprints {
    pub fn of(plan: &Plan) -> Option<Fingerprints> {
        let Mode::Groups { keys, aggregates } = &plan.mode else {
            return None;
        };
        let hash = |filter: Option<&crate::query::plan::Filter>| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            // Debug renderings of the bound plan: every literal, column index and type, exactly.
            format!("{filter:?}|{keys:?}|{aggregates:?}").hash(&mut hasher);
            for column in &plan.columns {
                (&column.name, format!("{:?}", column.column_type)).hash(&mut hasher);
            }
            hasher.finish()
        };
        Some(Fingerprints {
            filtered: hash(plan.filter.as_ref()),
            all_rows: hash(None),
        })
    }

    /// Names the plan whatever its filter (a date range's ends change from run to run).
    pub fn plan_key(&self) -> u64 {
        self.all_rows
    }

    /// The fingerprint for a file of which the manifest says `truth`.
    pub fn for_file(&self, truth: crate::query::prune::Truth) -> u64 {
        match truth {
            crate::query::prune::Truth::Always => self.all_rows,
            _ => self.filtered,
        }
    }
}

impl PartialCache {
    pub fn new(budget_bytes: usize) -> PartialCache {
        PartialCache {
            budget_bytes,
            inner: RefCell::new(Inner::default()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.budget_bytes > 0
    }

    /// Whether the plan's last run on this core made few enough groups for per-file parts.
    pub fn few_groups(&self, plan_key: u64) -> bool {
        let inner = self.inner.borrow();
        inner
            .groups_seen
            .get(&plan_key)
            .is_some_and(|&groups| groups <= PER_FILE_GROUPS_MAX)
    }

    /// Remembers how many groups a run of the plan made on this core.
    pub fn saw_groups(&self, plan_key: u64, groups: u64) {
        let mut inner = self.inner.borrow_mut();
        if inner.groups_seen.len() >= GROUPS_SEEN_MAX {
            inner.groups_seen.clear();
        }
        inner.groups_seen.insert(plan_key, groups);
    }

    pub fn get(&self, file: u64, fingerprint: u64) -> Option<Partial> {
        let mut inner = self.inner.borrow_mut();
        let found = inner
            .entries
            .get(&(file, fingerprint))
            .map(|(p, _)| p.clone());
        match found {
            Some(_) => inner.counters.hits += 1,
            None => inner.counters.misses += 1,
        }
        found
    }

    /// Whether groups this large are kept (at most an eighth of the budget).
    pub fn keeps(&self, groups: &GroupRows) -> bool {
        groups.memory_bytes() as usize <= self.budget_bytes / 8
    }

    /// Keeps a file's groups (shared, not copied), unless they are larger than an eighth of
    /// the budget.
    pub fn insert_groups(&self, file: u64, fingerprint: u64, groups: &Rc<GroupRows>) {
        if !self.keeps(groups) {
            return;
        }
        self.insert(file, fingerprint, Partial::Groups(groups.clone()));
    }

    /// Keeps `partial` unless it is larger than an eighth of the budget; evicts the oldest
    /// entries to make room.
    pub fn insert(&self, file: u64, fingerprint: u64, partial: Partial) {
        let bytes = partial.bytes();
        if bytes > self.budget_bytes / 8 {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        let key = (file, fingerprint);
        if inner.entries.contains_key(&key) {
            return;
        }
        while inner.bytes + bytes > self.budget_bytes {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, size)) = inner.entries.remove(&old) {
                inner.bytes -= size;
                inner.counters.evictions += 1;
            }
        }
        inner.bytes += bytes;
        inner.order.push_back(key);
        inner.entries.insert(key, (partial, bytes));
        inner.counters.inserts += 1;
    }

    /// Forgets every entry of the given files.
    pub fn evict_files(&self, files: &HashSet<u64>) {
        let mut inner = self.inner.borrow_mut();
        let Inner {
            entries,
            order,
            bytes,
            ..
        } = &mut *inner;
        entries.retain(|(file, _), (_, size)| {
            let keep = !files.contains(file);
            if !keep {
                *bytes -= *size;
            }
            keep
        });
        order.retain(|key| entries.contains_key(key));
    }

    pub fn clear(&self) {
        let mut inner = self.inner.borrow_mut();
        let counters = inner.counters;
        *inner = Inner::default();
        inner.counters = counters;
    }

    pub fn counters(&self) -> PartialCounters {
        let inner = self.inner.borrow();
        PartialCounters {
            entries: inner.entries.len() as u64,
            bytes_used: inner.bytes as u64,
            bytes_budget: self.budget_bytes as u64,
            ..inner.counters
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::groups::Accumulator;
    use crate::value::KeyValue;

    fn groups(n: usize) -> Partial {
        Partial::Groups(Rc::new(GroupRows {
            keys: vec![(0..n).map(|i| KeyValue::Int(i as i64)).collect()],
            states: vec![Accumulator::Count(vec![1; n])],
            len: n,
        }))
    }

    #[test]
    fn entries_are_found_by_file_and_fingerprint_and_bounded_in_bytes() {
        let one = groups(1).bytes();
        let cache = PartialCache::new(one * 8 * 4);
        cache.insert(1, 7, groups(1));
        assert_eq!(cache.get(1, 7), Some(groups(1)));
        assert_eq!(cache.get(1, 8), None);
        assert_eq!(cache.get(2, 7), None);
        // Too large for the cache: not kept.
        cache.insert(3, 7, groups(1000));
        assert_eq!(cache.get(3, 7), None);
        for file in 10..100 {
            cache.insert(file, 7, groups(1));
        }
        let counters = cache.counters();
        assert!(counters.bytes_used <= counters.bytes_budget);
        assert!(counters.evictions > 0);
        // First in, first out: the newest stay.
        assert!(cache.get(99, 7).is_some());
        assert!(cache.get(1, 7).is_none());
        cache.evict_files(&[99].into_iter().collect());
        assert!(cache.get(99, 7).is_none());
        assert!(cache.get(98, 7).is_some());
        let counters = cache.counters();
        assert_eq!(counters.bytes_used, counters.entries * one as u64);
    }
}
