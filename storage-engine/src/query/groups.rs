//! Grouped results in columns, and merging them. A core's groups (`GroupRows`) hold one vector
//! of key values per GROUP BY key and one typed accumulator array per aggregate, indexed by
//! group: no allocation per group, and merging two results is a hash lookup per group followed
//! by one typed loop per aggregate. Results split by key hash (`partition`) are merged on every
//! core, each its own partition.

use crate::query::aggregate::{better, AccState};
use crate::query::plan::Aggregate;
use crate::query::sql::AggregateFunction;
use crate::value::{KeyValue, Scalar};
use arrow_buffer::i256;
use hashbrown::HashTable;
use std::hash::{BuildHasher, Hash, Hasher};

/// Per-aggregate accumulator arrays indexed by group id.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Accumulator {
    Count(Vec<u64>),
    SumFloat(Vec<f64>, Vec<u64>),
    SumInt(Vec<i128>, Vec<u64>),
    SumDecimal(Vec<i256>, Vec<u64>),
    Extreme { is_min: bool, values: Vec<Scalar> },
}

impl Accumulator {
    pub(crate) fn new(aggregate: &Aggregate) -> Accumulator {
        let is_min = aggregate.function == AggregateFunction::Min;
        Accumulator::for_state(&AccState::empty(aggregate), is_min)
    }

    /// An empty accumulator holding states like `state`.
    fn for_state(state: &AccState, is_min: bool) -> Accumulator {
        match state {
            AccState::Count(_) => Accumulator::Count(Vec::new()),
            AccState::SumFloat { .. } => Accumulator::SumFloat(Vec::new(), Vec::new()),
            AccState::SumInt { .. } => Accumulator::SumInt(Vec::new(), Vec::new()),
            AccState::SumDecimal { .. } => Accumulator::SumDecimal(Vec::new(), Vec::new()),
            AccState::Extreme(_) => Accumulator::Extreme {
                is_min,
                values: Vec::new(),
            },
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Accumulator::Count(c) => c.len(),
            Accumulator::SumFloat(_, c)
            | Accumulator::SumInt(_, c)
            | Accumulator::SumDecimal(_, c) => c.len(),
            Accumulator::Extreme { values, .. } => values.len(),
        }
    }

    pub(crate) fn resize(&mut self, groups: usize) {
        match self {
            Accumulator::Count(c) => c.resize(groups, 0),
            Accumulator::SumFloat(s, c) => {
                s.resize(groups, 0.0);
                c.resize(groups, 0);
            }
            Accumulator::SumInt(s, c) => {
                s.resize(groups, 0);
                c.resize(groups, 0);
            }
            Accumulator::SumDecimal(s, c) => {
                s.resize(groups, i256::ZERO);
                c.resize(groups, 0);
            }
            Accumulator::Extreme { values, .. } => values.resize(groups, Scalar::Null),
        }
    }

    pub(crate) fn state(&self, group: usize) -> AccState {
        match self {
            Accumulator::Count(c) => AccState::Count(c[group]),
            Accumulator::SumFloat(s, c) => AccState::SumFloat {
                sum: s[group],
                count: c[group],
            },
            Accumulator::SumInt(s, c) => AccState::SumInt {
                sum: s[group],
                count: c[group],
            },
            Accumulator::SumDecimal(s, c) => AccState::SumDecimal {
                sum: s[group],
                count: c[group],
            },
            Accumulator::Extreme { values, .. } => AccState::Extreme(values[group].clone()),
        }
    }

    /// Appends `state` (of this accumulator's kind; another kind is an internal error upstream
    /// and appends an empty state).
    fn push(&mut self, state: &AccState) {
        match (self, state) {
            (Accumulator::Count(c), AccState::Count(n)) => c.push(*n),
            (Accumulator::SumFloat(s, c), AccState::SumFloat { sum, count }) => {
                s.push(*sum);
                c.push(*count);
            }
            (Accumulator::SumInt(s, c), AccState::SumInt { sum, count }) => {
                s.push(*sum);
                c.push(*count);
            }
            (Accumulator::SumDecimal(s, c), AccState::SumDecimal { sum, count }) => {
                s.push(*sum);
                c.push(*count);
            }
            (Accumulator::Extreme { values, .. }, AccState::Extreme(v)) => values.push(v.clone()),
            (accumulator, _) => {
                let len = accumulator.len();
                accumulator.resize(len + 1);
            }
        }
    }

    /// The states of `groups`, in that order.
    pub(crate) fn gather(&self, groups: &[u32]) -> Accumulator {
        fn pick<T: Clone>(values: &[T], groups: &[u32]) -> Vec<T> {
            groups.iter().map(|&g| values[g as usize].clone()).collect()
        }
        match self {
            Accumulator::Count(c) => Accumulator::Count(pick(c, groups)),
            Accumulator::SumFloat(s, c) => Accumulator::SumFloat(pick(s, groups), pick(c, groups)),
            Accumulator::SumInt(s, c) => Accumulator::SumInt(pick(s, groups), pick(c, groups)),
            Accumulator::SumDecimal(s, c) => {
                Accumulator::SumDecimal(pick(s, groups), pick(c, groups))
            }
            Accumulator::Extreme { is_min, values } => Accumulator::Extreme {
                is_min: *is_min,
                values: pick(values, groups),
            },
        }
    }

    /// Folds `source`'s group `g` into group `targets[g]`, which is new (appended, in order) when
    /// it is `appended_from` or above. Each target is named at most once, so every group's state
    /// folds in the order its parts are added.
    fn merge_from(&mut self, source: &Accumulator, targets: &[u32], appended_from: usize) {
        fn fold<T: Clone>(
            into: &mut Vec<T>,
            from: &[T],
            targets: &[u32],
            appended_from: usize,
            mut combine: impl FnMut(&mut T, &T),
        ) {
            for (value, &target) in from.iter().zip(targets) {
                let target = target as usize;
                if target >= appended_from {
                    into.push(value.clone());
                } else {
                    combine(&mut into[target], value);
                }
            }
        }
        match (self, source) {
            (Accumulator::Count(into), Accumulator::Count(from)) => {
                fold(into, from, targets, appended_from, |a, b| *a += b)
            }
            (Accumulator::SumFloat(s, c), Accumulator::SumFloat(fs, fc)) => {
                fold(s, fs, targets, appended_from, |a, b| *a += b);
                fold(c, fc, targets, appended_from, |a, b| *a += b);
            }
            (Accumulator::SumInt(s, c), Accumulator::SumInt(fs, fc)) => {
                fold(s, fs, targets, appended_from, |a, b| *a += b);
                fold(c, fc, targets, appended_from, |a, b| *a += b);
            }
            (Accumulator::SumDecimal(s, c), Accumulator::SumDecimal(fs, fc)) => {
                fold(s, fs, targets, appended_from, |a, b| {
                    *a = a.wrapping_add(*b)
                });
                fold(c, fc, targets, appended_from, |a, b| *a += b);
            }
            (
                Accumulator::Extreme { is_min, values },
                Accumulator::Extreme { values: from, .. },
            ) => {
                let is_min = *is_min;
                fold(values, from, targets, appended_from, |a, b| {
                    if better(b, a, is_min) {
                        *a = b.clone()
                    }
                })
            }
            (into, _) => {
                // Kinds differ only through an internal error; keep the lengths in step.
                let appended = targets
                    .iter()
                    .filter(|&&t| t as usize >= appended_from)
                    .count();
                let len = into.len();
                into.resize(len + appended);
            }
        }
    }

    /// Bytes one group's state takes.
    pub(crate) fn group_bytes(&self) -> usize {
        match self {
            Accumulator::Count(_) => 8,
            Accumulator::SumFloat(..) => 16,
            Accumulator::SumInt(..) => 24,
            Accumulator::SumDecimal(..) => 40,
            Accumulator::Extreme { .. } => std::mem::size_of::<Scalar>(),
        }
    }
}

/// A core's (or a merged) grouped result: `keys[k][g]` is key `k` of group `g`, `states[a]`
/// aggregate `a`'s states. Without GROUP BY there are no key columns and one group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupRows {
    pub(crate) keys: Vec<Vec<KeyValue>>,
    pub(crate) states: Vec<Accumulator>,
    pub(crate) len: usize,
}

impl GroupRows {
    /// One group without keys holding `states` (aggregates without GROUP BY).
    pub fn single(states: &[AccState], aggregates: &[Aggregate]) -> GroupRows {
        let states = states
            .iter()
            .zip(aggregates)
            .map(|(state, aggregate)| {
                let mut column =
                    Accumulator::for_state(state, aggregate.function == AggregateFunction::Min);
                column.push(state);
                column
            })
            .collect();
        GroupRows {
            keys: Vec::new(),
            states,
            len: 1,
        }
    }

    /// Groups from their columns (`keys[k][g]`, `states[a]`), all `len` long: a partial result
    /// decoded (`partial::decode_groups`).
    pub(crate) fn from_parts(
        keys: Vec<Vec<KeyValue>>,
        states: Vec<Accumulator>,
        len: usize,
    ) -> GroupRows {
        debug_assert!(keys.iter().all(|k| k.len() == len));
        debug_assert!(states.iter().all(|s| s.len() == len));
        GroupRows { keys, states, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Key `k` of every group (none when there are no groups).
    pub fn keys(&self, k: usize) -> &[KeyValue] {
        self.keys.get(k).map_or(&[], |c| c.as_slice())
    }

    /// Aggregate `a`'s state of group `g`.
    pub fn state(&self, a: usize, g: usize) -> AccState {
        self.states[a].state(g)
    }

    /// Aggregate `a`'s counts when it is a COUNT (its column without conversion).
    pub fn counts(&self, a: usize) -> Option<&[u64]> {
        match self.states.get(a) {
            Some(Accumulator::Count(c)) => Some(c),
            _ => None,
        }
    }

    /// Estimated bytes held: key values (with string bytes) and states.
    pub fn memory_bytes(&self) -> u64 {
        let keys: usize = self.keys.iter().flatten().map(key_bytes).sum();
        (keys + self.state_bytes()) as u64
    }

    /// Estimated bytes of the states.
    fn state_bytes(&self) -> usize {
        let states: usize = self.states.iter().map(|s| s.group_bytes()).sum();
        self.len * states
    }

    fn hash_group(&self, hasher: &impl BuildHasher, g: usize) -> u64 {
        let mut state = hasher.build_hasher();
        for column in &self.keys {
            column[g].hash(&mut state);
        }
        state.finish()
    }

    fn same_keys(&self, g: usize, other: &GroupRows, h: usize) -> bool {
        self.keys.iter().zip(&other.keys).all(|(a, b)| a[g] == b[h])
    }

    /// The groups listed in `groups`, in that order.
    fn gather(&self, groups: &[u32]) -> GroupRows {
        GroupRows {
            keys: self
                .keys
                .iter()
                .map(|column| groups.iter().map(|&g| column[g as usize].clone()).collect())
                .collect(),
            states: self.states.iter().map(|s| s.gather(groups)).collect(),
            len: groups.len(),
        }
    }
}

/// Estimated bytes of a key value (with its string's bytes).
fn key_bytes(key: &KeyValue) -> usize {
    std::mem::size_of::<KeyValue>()
        + match key {
            KeyValue::Str(s) => s.len(),
            KeyValue::Bytes(b) => b.len(),
            _ => 0,
        }
}

/// Folds group results into one in the order they are added: groups in first-seen order, the
/// states of equal keys combined in that order (so float sums come out the same whenever the
/// parts are added in the same order). Each group is hashed once; a first part is taken whole.
#[derive(Default)]
pub struct GroupMerger {
    merged: GroupRows,
    /// Indexes `merged` groups `..indexed`: (hash, group).
    table: HashTable<(u64, u32)>,
    indexed: usize,
    hasher: hashbrown::DefaultHashBuilder,
    /// Where each group of the part being added goes.
    targets: Vec<u32>,
    /// `key_bytes` of every key of `merged`, kept as keys come (so `memory_bytes`, asked after
    /// every part, does not walk every group).
    key_bytes: usize,
}

impl GroupMerger {
    pub fn add(&mut self, part: GroupRows) {
        if part.is_empty() {
            return;
        }
        if self.merged.is_empty() {
            self.merged = part;
            self.table.clear();
            self.indexed = 0;
            self.key_bytes = self.merged.keys.iter().flatten().map(key_bytes).sum();
            return;
        }
        self.add_shared(&part);
    }

    /// As `add`, for a part others hold too (a cached file's): only the keys of groups new to
    /// the merge are copied.
    pub fn add_shared(&mut self, part: &GroupRows) {
        if part.is_empty() {
            return;
        }
        if self.merged.is_empty() {
            self.merged = part.clone();
            self.table.clear();
            self.indexed = 0;
            self.key_bytes = self.merged.keys.iter().flatten().map(key_bytes).sum();
            return;
        }
        self.index(part.len());
        let appended_from = self.merged.len;
        let mut targets = std::mem::take(&mut self.targets);
        targets.clear();
        for g in 0..part.len {
            let hash = part.hash_group(&self.hasher, g);
            let merged = &mut self.merged;
            let found = self.table.find(hash, |&(h, i)| {
                h == hash && merged.same_keys(i as usize, part, g)
            });
            let target = match found {
                Some(&(_, i)) => i,
                None => {
                    let i = merged.len as u32;
                    for (column, from) in merged.keys.iter_mut().zip(&part.keys) {
                        self.key_bytes += key_bytes(&from[g]);
                        column.push(from[g].clone());
                    }
                    merged.len += 1;
                    self.table.insert_unique(hash, (hash, i), |&(h, _)| h);
                    i
                }
            };
            targets.push(target);
        }
        for (into, from) in self.merged.states.iter_mut().zip(&part.states) {
            into.merge_from(from, &targets, appended_from);
        }
        self.indexed = self.merged.len;
        self.targets = targets;
    }

    /// Indexes the groups merged so far, with room for `more`.
    fn index(&mut self, more: usize) {
        let (merged, hasher) = (&self.merged, &self.hasher);
        self.table
            .reserve(merged.len + more - self.indexed, |&(h, _)| h);
        for g in self.indexed..merged.len {
            let hash = merged.hash_group(hasher, g);
            self.table
                .insert_unique(hash, (hash, g as u32), |&(h, _)| h);
        }
        self.indexed = merged.len;
    }

    pub fn finish(self) -> GroupRows {
        self.merged
    }

    /// The groups merged so far.
    pub fn rows(&self) -> &GroupRows {
        &self.merged
    }

    /// Estimated bytes held.
    pub fn memory_bytes(&self) -> u64 {
        (self.key_bytes
            + self.merged.state_bytes()
            + self.table.capacity() * 16
            + self.targets.capacity() * 4) as u64
    }
}

/// Merges results in the order given (see `GroupMerger`). Parts grouped by one integer key
/// whose values span a small enough range are merged through an array indexed by value instead
/// of a hash table, with the same result.
pub fn merge(parts: Vec<GroupRows>) -> GroupRows {
    if let Some((min, len)) = int_key_range(&parts) {
        return merge_direct(parts, min, len);
    }
    let mut merger = GroupMerger::default();
    for part in parts {
        merger.add(part);
    }
    merger.finish()
}

/// The smallest key and the length of the key range of parts that have one key column holding
/// only integers, when an array over that range costs at most a few entries per group.
fn int_key_range(parts: &[GroupRows]) -> Option<(i64, usize)> {
    let groups: usize = parts.iter().map(|p| p.len).sum();
    if parts.iter().filter(|p| !p.is_empty()).count() < 2 {
        return None;
    }
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for part in parts.iter().filter(|p| !p.is_empty()) {
        let [keys] = part.keys.as_slice() else {
            return None;
        };
        for key in keys {
            let KeyValue::Int(v) = key else {
                return None;
            };
            min = min.min(*v);
            max = max.max(*v);
        }
    }
    let len = (max as i128 - min as i128 + 1) as u128;
    let affordable = (4 * groups as u128).max(1 << 16);
    (len <= affordable && len <= crate::query::aggregate::DIRECT_IDS_MAX as u128)
        .then_some((min, len as usize))
}

/// `merge` of parts `int_key_range` accepted: each key's merged index found at
/// `index[key - min]`.
fn merge_direct(parts: Vec<GroupRows>, min: i64, len: usize) -> GroupRows {
    let mut index = vec![u32::MAX; len];
    let mut merged = GroupRows::default();
    let mut targets = Vec::new();
    for part in parts.into_iter().filter(|p| !p.is_empty()) {
        if merged.is_empty() {
            for (g, key) in part.keys[0].iter().enumerate() {
                if let KeyValue::Int(v) = key {
                    index[(*v - min) as usize] = g as u32;
                }
            }
            merged = part;
            continue;
        }
        let appended_from = merged.len;
        targets.clear();
        for key in &part.keys[0] {
            let KeyValue::Int(v) = key else {
                unreachable!("int_key_range admitted only integer keys")
            };
            let slot = &mut index[(*v - min) as usize];
            if *slot == u32::MAX {
                *slot = merged.len as u32;
                merged.keys[0].push(KeyValue::Int(*v));
                merged.len += 1;
            }
            targets.push(*slot);
        }
        for (into, from) in merged.states.iter_mut().zip(&part.states) {
            into.merge_from(from, &targets, appended_from);
        }
    }
    merged
}

/// Splits a core's groups into `parts` by a hash of their keys that is the same on every core,
/// so the groups of one key from every core land in the same part, and each part can be merged
/// on a core of its own. Groups keep their order within a part.
pub fn partition(rows: GroupRows, parts: usize) -> Vec<GroupRows> {
    if parts <= 1 || rows.keys.is_empty() {
        return vec![rows];
    }
    let hasher = foldhash::fast::FixedState::with_seed(PARTITION_SEED);
    let mut members: Vec<Vec<u32>> = (0..parts)
        .map(|_| Vec::with_capacity(rows.len / parts + 1))
        .collect();
    for g in 0..rows.len {
        // The high bits: the merge's hash tables index by the low ones of their own hash.
        let part = ((rows.hash_group(&hasher, g) >> 32) % parts as u64) as usize;
        members[part].push(g as u32);
    }
    members.iter().map(|groups| rows.gather(groups)).collect()
}

const PARTITION_SEED: u64 = 0x7e55_e7a0_9a27_1710;

#[cfg(test)]
mod tests {
    use super::*;

    fn count_rows(pairs: &[(i64, u64)]) -> GroupRows {
        GroupRows {
            keys: vec![pairs.iter().map(|&(k, _)| KeyValue::Int(k)).collect()],
            states: vec![Accumulator::Count(pairs.iter().map(|&(_, n)| n).collect())],
            len: pairs.len(),
        }
    }

    fn as_pairs(rows: &GroupRows) -> Vec<(i64, u64)> {
        let counts = rows.counts(0).unwrap();
        rows.keys(0)
            .iter()
            .zip(counts)
            .map(|(k, &n)| match k {
                KeyValue::Int(v) => (*v, n),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn merge_folds_equal_keys_and_keeps_first_seen_order() {
        let merged = merge(vec![
            count_rows(&[(3, 1), (1, 2)]),
            count_rows(&[(1, 10), (7, 5)]),
            count_rows(&[(7, 1), (3, 4), (9, 9)]),
        ]);
        assert_eq!(as_pairs(&merged), vec![(3, 5), (1, 12), (7, 6), (9, 9)]);
    }

    #[test]
    fn a_mergers_memory_estimate_kept_as_keys_come_is_the_one_its_groups_give() {
        let mut merger = GroupMerger::default();
        for part in [
            count_rows(&[(3, 1), (1, 2)]),
            count_rows(&[(1, 10), (7, 5)]),
            count_rows(&[(7, 1), (3, 4), (9, 9)]),
        ] {
            merger.add_shared(&part);
            let overhead = merger.table.capacity() * 16 + merger.targets.capacity() * 4;
            assert_eq!(
                merger.memory_bytes(),
                merger.rows().memory_bytes() + overhead as u64
            );
        }
    }

    #[test]
    fn integer_keys_in_a_small_range_merge_as_hashing_does() {
        let parts = vec![
            count_rows(&[(3, 1), (1, 2), (-5, 1)]),
            GroupRows::default(),
            count_rows(&[(1, 10), (7, 5)]),
            count_rows(&[(7, 1), (3, 4), (9, 9), (-5, 2)]),
        ];
        assert!(int_key_range(&parts).is_some());
        let direct = merge(parts.clone());
        let mut hashed = GroupMerger::default();
        for part in parts {
            hashed.add(part);
        }
        assert_eq!(direct, hashed.finish());
        assert_eq!(
            as_pairs(&direct),
            vec![(3, 5), (1, 12), (-5, 3), (7, 6), (9, 9)]
        );
        // A range too sparse for an array, or a NULL key, merges by hashing.
        let sparse = vec![count_rows(&[(i64::MIN, 1)]), count_rows(&[(i64::MAX, 1)])];
        assert!(int_key_range(&sparse).is_none());
        assert_eq!(merge(sparse).len(), 2);
        let mut with_null = count_rows(&[(1, 1)]);
        with_null.keys[0][0] = KeyValue::Null;
        assert!(int_key_range(&[with_null, count_rows(&[(1, 1)])]).is_none());
    }

    #[test]
    fn partitions_hold_disjoint_keys_and_merge_to_the_same_groups() {
        let a = count_rows(&(0..1000).map(|k| (k, 1)).collect::<Vec<_>>());
        let b = count_rows(&(500..1500).map(|k| (k, 2)).collect::<Vec<_>>());
        let (pa, pb) = (partition(a.clone(), 3), partition(b.clone(), 3));
        let mut together: Vec<(i64, u64)> = pa
            .into_iter()
            .zip(pb)
            .flat_map(|(x, y)| as_pairs(&merge(vec![x, y])))
            .collect();
        together.sort();
        let mut whole = as_pairs(&merge(vec![a, b]));
        whole.sort();
        assert_eq!(together, whole);
        assert_eq!(whole.len(), 1500);
    }
}
