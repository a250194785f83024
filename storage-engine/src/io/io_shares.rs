//! IO shares: each core lets at most `IN_FLIGHT_BYTES` of direct reads be in flight at once, so
//! reads queue here rather than in the device, where this core decides their order: reads of
//! latency-class tasks first (point lookups, short ranges), then throughput reads of tenants by
//! start-time fair queueing weighted by each tenant's IO shares. A tenant scanning in a loop with
//! many reads in flight thus gets its share of the disk, not all of it, and a quiet tenant's
//! read waits for the next completion rather than behind the noisy tenant's queue. Below the
//! limit a read starts at once. One scheduler per core, owned by it (no locks).

use super::runtime::{Group, TaskClass};
use futures::channel::oneshot;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

/// Bytes of direct reads in flight per core before reads queue (about fio's 16 x 1 MiB).
pub const IN_FLIGHT_BYTES: usize = 16 << 20;

/// IO shares of a group without its own (the same scale as CPU shares, 1..=1000).
pub const DEFAULT_SHARES: usize = 250;

/// A read's place in flight; ends when dropped.
pub struct IoTurn {
    bytes: usize,
}

impl Drop for IoTurn {
    fn drop(&mut self) {
        let ready = SCHEDULER.with(|s| {
            let mut s = s.borrow_mut();
            s.in_flight -= self.bytes;
            s.ready()
        });
        hand_out(ready);
    }
}

type Waiter = (usize, oneshot::Sender<IoTurn>);

#[derive(Default)]
struct Scheduler {
    in_flight: usize,
    /// Shares of groups given their own.
    shares: HashMap<Group, usize>,
    /// Each group's virtual finish time, and the virtual clock (the start tag of the read last
    /// started): a read's start tag is max(clock, its group's finish); the smallest goes first.
    finish: HashMap<Group, f64>,
    clock: f64,
    latency: VecDeque<Waiter>,
    throughput: HashMap<Group, VecDeque<Waiter>>,
}

thread_local! {
    static SCHEDULER: RefCell<Scheduler> = RefCell::new(Scheduler::default());
}

impl Scheduler {
    fn fits(&self, bytes: usize) -> bool {
        self.in_flight == 0 || self.in_flight + bytes <= IN_FLIGHT_BYTES
    }

    fn waiting(&self) -> bool {
        !self.latency.is_empty() || self.throughput.values().any(|q| !q.is_empty())
    }

    /// Charges a read of `bytes` to `group` and marks it in flight.
    fn start(&mut self, group: Group, bytes: usize) {
        let shares = self.shares.get(&group).copied().unwrap_or(DEFAULT_SHARES) as f64;
        let finish = self.finish.entry(group).or_insert(0.0);
        let start = finish.max(self.clock);
        *finish = start + bytes as f64 / shares;
        self.clock = start;
        self.in_flight += bytes;
    }

    /// Takes the waiters that may start now, in order, marking them in flight.
    fn ready(&mut self) -> Vec<(IoTurn, oneshot::Sender<IoTurn>)> {
        let mut out = Vec::new();
        loop {
            if let Some(&(bytes, _)) = self.latency.front() {
                if !self.fits(bytes) {
                    break;
                }
                let Some((bytes, sender)) = self.latency.pop_front() else {
                    break;
                };
                self.in_flight += bytes;
                out.push((IoTurn { bytes }, sender));
                continue;
            }
            let next = self
                .throughput
                .iter()
                .filter_map(|(group, queue)| {
                    let finish = self.finish.get(group).copied().unwrap_or(0.0);
                    queue.front().map(|w| (*group, finish.max(self.clock), w.0))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1));
            let Some((group, _, bytes)) = next else {
                break;
            };
            if !self.fits(bytes) {
                break;
            }
            let Some((bytes, sender)) = self.throughput.get_mut(&group).and_then(|q| q.pop_front())
            else {
                break;
            };
            self.start(group, bytes);
            out.push((IoTurn { bytes }, sender));
        }
        self.throughput.retain(|_, queue| !queue.is_empty());
        out
    }
}

/// Hands each ready waiter its turn (outside the scheduler's borrow: a waiter gone meanwhile
/// drops its turn, which lets the next one start).
fn hand_out(ready: Vec<(IoTurn, oneshot::Sender<IoTurn>)>) {
    for (turn, sender) in ready {
        drop(sender.send(turn));
    }
}

/// Waits until this core lets a read of `bytes` by the current task (its class and group)
/// start, and returns its turn, which ends when dropped.
pub async fn turn(bytes: usize) -> IoTurn {
    turn_for(TaskClass::current(), Group::current(), bytes).await
}

async fn turn_for(class: TaskClass, group: Group, bytes: usize) -> IoTurn {
    let receiver = SCHEDULER.with(|s| {
        let mut s = s.borrow_mut();
        if !s.waiting() && s.fits(bytes) {
            match class {
                TaskClass::Latency => s.in_flight += bytes,
                TaskClass::Throughput => s.start(group, bytes),
            }
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        match class {
            TaskClass::Latency => s.latency.push_back((bytes, sender)),
            TaskClass::Throughput => s
                .throughput
                .entry(group)
                .or_default()
                .push_back((bytes, sender)),
        }
        Some(receiver)
    });
    match receiver {
        None => IoTurn { bytes },
        // The sender is only dropped with this core's scheduler, i.e. never while it runs.
        Some(receiver) => receiver.await.unwrap_or(IoTurn { bytes: 0 }),
    }
}

/// Sets `group`'s IO shares on this core (1..=1000; 0 restores the default).
pub fn set_shares(group: Group, shares: usize) {
    SCHEDULER.with(|s| {
        let mut s = s.borrow_mut();
        if shares == 0 {
            s.shares.remove(&group);
        } else {
            s.shares.insert(group, shares.clamp(1, 1000));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn queued_reads_start_latency_first_then_by_shares() {
        let (quiet, noisy) = (Group::tenant("quiet"), Group::tenant("noisy"));
        set_shares(quiet, 300);
        set_shares(noisy, 100);
        let piece = 1 << 20;
        // The noisy tenant fills the flight; reads complete in the order they started.
        let mut flight: VecDeque<IoTurn> = (0..IN_FLIGHT_BYTES / piece)
            .map(|_| {
                turn_for(TaskClass::Throughput, noisy, piece)
                    .now_or_never()
                    .expect("room in flight")
            })
            .collect();
        // Both tenants queue many reads, then a point lookup's read queues last.
        let mut waiting: Vec<Option<(Group, _)>> = Vec::new();
        for _ in 0..40 {
            for group in [noisy, quiet] {
                let read = Box::pin(turn_for(TaskClass::Throughput, group, piece));
                waiting.push(Some((group, read)));
            }
        }
        let mut point = Box::pin(turn_for(TaskClass::Latency, Group::NODE, 4096));
        assert!((&mut point).now_or_never().is_none());
        flight.pop_front();
        let point = point.now_or_never().expect("latency reads go first");
        drop(point);
        // Completions one by one: each lets one queued read start.
        let mut started = Vec::new();
        while started.len() < 40 {
            for slot in waiting.iter_mut() {
                if let Some((group, read)) = slot {
                    if let Some(turn) = read.now_or_never() {
                        started.push(*group);
                        flight.push_back(turn);
                        *slot = None;
                    }
                }
            }
            flight.pop_front();
        }
        let quiet_started = started[..40].iter().filter(|&&g| g == quiet).count();
        assert!(
            (27..=33).contains(&quiet_started),
            "the quiet tenant (3x the shares) started {quiet_started} of 40 reads"
        );
    }
}
