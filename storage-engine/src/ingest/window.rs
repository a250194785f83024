//! A producer's idempotency window: the sequence numbers it has made durable in one table, as
//! sorted, disjoint ranges (a producer counting up holds one range), forgetting those more than
//! `WINDOW` below its highest.

use serde::{Deserialize, Serialize};

/// How far below its highest sequence number a producer's keys are remembered.
pub const WINDOW: u64 = 100_000;

/// Producers a table remembers; past it, those silent longest are forgotten at the next flush.
pub const PRODUCERS_MAX: usize = 10_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProducerWindow {
    /// Inclusive ranges, ascending, not touching.
    pub ranges: Vec<(u64, u64)>,
    /// When a key was last added, Unix seconds (which producers to forget first).
    #[serde(default)]
    pub seen: u64,
}

/// Keeps the `PRODUCERS_MAX` producers seen most recently.
pub fn forget_oldest(producers: &mut std::collections::BTreeMap<String, ProducerWindow>) {
    if producers.len() <= PRODUCERS_MAX {
        return;
    }
    let mut seen: Vec<u64> = producers.values().map(|w| w.seen).collect();
    seen.sort_unstable_by(|a, b| b.cmp(a));
    let cutoff = seen[PRODUCERS_MAX - 1];
    let mut kept = 0;
    producers.retain(|_, w| {
        let keep = w.seen > cutoff || (w.seen == cutoff && kept < PRODUCERS_MAX);
        kept += keep as usize;
        keep
    });
}

/// What a window says about a sequence number.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    New,
    Durable,
    /// Below the window: whether it was applied is no longer known.
    Forgotten {
        highest: u64,
    },
}

impl ProducerWindow {
    pub fn highest(&self) -> Option<u64> {
        self.ranges.last().map(|r| r.1)
    }

    pub fn check(&self, sequence: u64) -> Seen {
        if let Some(highest) = self.highest() {
            if sequence.saturating_add(WINDOW) < highest {
                return Seen::Forgotten { highest };
            }
        }
        let index = self.ranges.partition_point(|r| r.1 < sequence);
        match self.ranges.get(index) {
            Some(&(start, _)) if start <= sequence => Seen::Durable,
            _ => Seen::New,
        }
    }

    pub fn insert(&mut self, sequence: u64) {
        self.seen = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let index = self.ranges.partition_point(|r| r.1 < sequence);
        if self
            .ranges
            .get(index)
            .is_some_and(|&(start, _)| start <= sequence)
        {
            return;
        }
        let joins_left = index > 0 && self.ranges[index - 1].1 + 1 == sequence;
        let joins_right = self
            .ranges
            .get(index)
            .is_some_and(|&(start, _)| sequence.checked_add(1) == Some(start));
        match (joins_left, joins_right) {
            (true, true) => {
                self.ranges[index - 1].1 = self.ranges[index].1;
                self.ranges.remove(index);
            }
            (true, false) => self.ranges[index - 1].1 = sequence,
            (false, true) => self.ranges[index].0 = sequence,
            (false, false) => self.ranges.insert(index, (sequence, sequence)),
        }
        self.forget_below_window();
    }

    fn forget_below_window(&mut self) {
        let floor = self.highest().unwrap_or(0).saturating_sub(WINDOW);
        self.ranges.retain(|r| r.1 >= floor);
        if let Some(first) = self.ranges.first_mut() {
            first.0 = first.0.max(floor);
        }
    }

    /// Adds everything `other` holds (windows of one producer kept by two cores, or by a core
    /// and a manifest, are merged, never replaced).
    pub fn union(&mut self, other: &ProducerWindow) {
        let mut all: Vec<(u64, u64)> = self.ranges.iter().chain(&other.ranges).copied().collect();
        all.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
        self.seen = self.seen.max(other.seen);
        self.forget_below_window();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agrees_with_a_set(sequences in proptest::collection::vec(0u64..300, 0..200)) {
            let mut window = ProducerWindow::default();
            let mut set = std::collections::BTreeSet::new();
            for &s in &sequences {
                window.insert(s);
                set.insert(s);
            }
            for probe in 0..310 {
                let expected = if set.contains(&probe) { Seen::Durable } else { Seen::New };
                prop_assert_eq!(window.check(probe), expected);
            }
            prop_assert!(window.ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0));
        }

        #[test]
        fn a_union_holds_what_either_held(
            left in proptest::collection::vec(0u64..300, 0..100),
            right in proptest::collection::vec(0u64..300, 0..100),
        ) {
            let (mut a, mut b) = (ProducerWindow::default(), ProducerWindow::default());
            left.iter().for_each(|&s| a.insert(s));
            right.iter().for_each(|&s| b.insert(s));
            a.union(&b);
            for probe in 0..310 {
                let held = left.contains(&probe) || right.contains(&probe);
                let expected = if held { Seen::Durable } else { Seen::New };
                prop_assert_eq!(a.check(probe), expected);
            }
            prop_assert!(a.ranges.windows(2).all(|w| w[0].1 + 1 < w[1].0));
        }
    }

    #[test]
    fn a_table_keeps_its_most_recent_producers() {
        let mut producers = std::collections::BTreeMap::new();
        for i in 0..PRODUCERS_MAX as u64 + 5 {
            let window = ProducerWindow {
                ranges: vec![(0, 0)],
                seen: i,
            };
            producers.insert(format!("p{i}"), window);
        }
        forget_oldest(&mut producers);
        assert_eq!(producers.len(), PRODUCERS_MAX);
        assert!(!producers.contains_key("p4") && producers.contains_key("p5"));
    }

    #[test]
    fn keys_far_below_the_highest_are_forgotten() {
        let mut window = ProducerWindow::default();
        window.insert(5);
        window.insert(WINDOW + 10);
        assert_eq!(window.check(WINDOW + 10), Seen::Durable);
        assert_eq!(
            window.check(5),
            Seen::Forgotten {
                highest: WINDOW + 10
            }
        );
        assert_eq!(window.ranges, vec![(WINDOW + 10, WINDOW + 10)]);
    }
}
