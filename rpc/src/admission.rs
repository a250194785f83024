//! Query admission: a query takes a slot of its class's lane before it runs. A lane has a
//! number of slots and a bounded queue; queued queries are admitted first in, first out within a
//! tenant and round robin across tenants, so one tenant's burst does not hold another's queries
//! back. Short queries (the latency class) have a lane of their own and never queue behind
//! scans. A query that finds the queue full, or waits longer than `admission_wait`, is refused
//! with `overloaded`.
//!
//! A tenant may also have a quota of concurrent queries (`set_tenant_limit`, from its quota
//! object): while it runs that many, its queued queries are passed over, so they wait without
//! holding up other tenants' queries behind them.
//!
//! Every core's connections share one `Admission` (a lock held for a few instructions per
//! admission or release, never across an await); a freed slot is handed straight to the next
//! waiter through its oneshot, so a waiter wakes on its own core without polling.

use futures::channel::oneshot;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tessera_storage_engine::io::runtime::{self, TaskClass};

/// The two lanes: index 0 latency, 1 throughput.
fn lane_index(class: TaskClass) -> usize {
    match class {
        TaskClass::Latency => 0,
        TaskClass::Throughput => 1,
    }
}

#[derive(Default)]
struct Lane {
    slots: usize,
    running: usize,
    queued: usize,
    /// Waiters per tenant, first in first out.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Tenants with waiters, in the order they are served next.
    turn: VecDeque<String>,
}

impl Lane {
    /// Hands a freed slot to the next live waiter of a tenant below its limit; false if none
    /// wants it. Tenants at their limit keep their place in the turn.
    fn hand_over(&mut self, tenants: &mut Tenants) -> bool {
        for _ in 0..self.turn.len() {
            let Some(tenant) = self.turn.pop_front() else {
                break;
            };
            let Some(queue) = self.waiting.get_mut(&tenant) else {
                continue;
            };
            if tenants.at_limit(&tenant) {
                self.turn.push_back(tenant);
                continue;
            }
            let mut handed = false;
            while let Some(waiter) = queue.pop_front() {
                self.queued -= 1;
                // A waiter that gave up dropped its receiver: the slot goes on to the next.
                if waiter.send(()).is_ok() {
                    handed = true;
                    break;
                }
            }
            if queue.is_empty() {
                self.waiting.remove(&tenant);
            } else {
                self.turn.push_back(tenant.clone());
            }
            if handed {
                tenants.enter(&tenant);
                return true;
            }
        }
        false
    }
}

/// Queries running per tenant, and tenants' limits (quota objects).
#[derive(Default)]
struct Tenants {
    running: HashMap<String, usize>,
    limits: HashMap<String, usize>,
}

impl Tenants {
    fn at_limit(&self, tenant: &str) -> bool {
        self.limits
            .get(tenant)
            .is_some_and(|&limit| self.running.get(tenant).copied().unwrap_or(0) >= limit)
    }

    fn enter(&mut self, tenant: &str) {
        *self.running.entry(tenant.to_owned()).or_default() += 1;
    }

    fn leave(&mut self, tenant: &str) {
        if let Some(running) = self.running.get_mut(tenant) {
            *running -= 1;
            if *running == 0 {
                self.running.remove(tenant);
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    lanes: [Lane; 2],
    tenants: Tenants,
}

impl Inner {
    /// Hands free slots of lane `index` to waiters that may take them.
    fn fill(&mut self, index: usize) {
        let Inner { lanes, tenants } = self;
        let lane = &mut lanes[index];
        while lane.running < lane.slots && lane.hand_over(tenants) {
            lane.running += 1;
        }
    }
}

/// Why a query was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The lane's queue holds `queued` queries already.
    QueueFull { class: TaskClass, queued: usize },
    /// No slot freed within the wait.
    TimedOut {
        class: TaskClass,
        running: usize,
        waited: Duration,
        /// The tenant and its quota of concurrent queries, when it ran that many.
        tenant_limit: Option<(String, usize)>,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::QueueFull { class, queued } => write!(
                f,
                "{queued} {} queries are already waiting to run; retry later",
                class.name()
            ),
            Refusal::TimedOut {
                class,
                running,
                waited,
                tenant_limit: None,
            } => write!(
                f,
                "no {} query slot freed within {} ms ({running} running); retry later",
                class.name(),
                waited.as_millis()
            ),
            Refusal::TimedOut {
                waited,
                tenant_limit: Some((tenant, limit)),
                ..
            } => write!(
                f,
                "tenant {tenant} runs its quota of {limit} concurrent queries and none finished within {} ms; retry later",
                waited.as_millis()
            ),
        }
    }
}

pub struct Admission {
    inner: Mutex<Inner>,
    /// Both may change while the node serves (`set_limits`, on SIGHUP).
    queue_max: AtomicUsize,
    wait_micros: AtomicU64,
}

/// A running query's slot; dropping it admits the next waiter of its lane.
pub struct Slot {
    admission: Arc<Admission>,
    lane: usize,
    tenant: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.admission.lock();
        inner.tenants.leave(&self.tenant);
        let Inner { lanes, tenants } = &mut *inner;
        // The slot passes to a waiter as is; only when none wants it (or the lane has fewer
        // slots now than run) does it free.
        let lane = &mut lanes[self.lane];
        if lane.running > lane.slots || !lane.hand_over(tenants) {
            lane.running -= 1;
        }
        // The tenant may have waiters the other lane passed over while it was at its limit.
        inner.fill(1 - self.lane);
    }
}

/// A place in a lane's queue; dropped before its slot was taken, it passes on any slot handed
/// to it.
struct Waiting {
    receiver: Option<oneshot::Receiver<()>>,
    admission: Arc<Admission>,
    lane: usize,
    tenant: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            // Closed first: a slot handed over from now on goes to the next waiter; one handed
            // over just before is taken here and released, which hands it on.
            receiver.close();
            if let Ok(Some(())) = receiver.try_recv() {
                drop(self.admission.slot(self.lane, &self.tenant));
            }
        }
    }
}

impl Admission {
    /// Lanes of `latency_slots` and `throughput_slots`, each queueing at most `queue_max`
    /// queries for at most `wait`.
    pub fn new(
        latency_slots: usize,
        throughput_slots: usize,
        queue_max: usize,
        wait: Duration,
    ) -> Arc<Admission> {
        let lane = |slots: usize| Lane {
            slots: slots.max(1),
            ..Lane::default()
        };
        Arc::new(Admission {
            inner: Mutex::new(Inner {
                lanes: [lane(latency_slots), lane(throughput_slots)],
                tenants: Tenants::default(),
            }),
            queue_max: AtomicUsize::new(queue_max),
            wait_micros: AtomicU64::new(wait.as_micros() as u64),
        })
    }

    /// Changes the lanes' slots, queue length and wait while queries run: more slots admit
    /// waiters at once; fewer take effect as running queries finish.
    pub fn set_limits(
        &self,
        latency_slots: usize,
        throughput_slots: usize,
        queue_max: usize,
        wait: Duration,
    ) {
        self.queue_max.store(queue_max, Ordering::Relaxed);
        self.wait_micros
            .store(wait.as_micros() as u64, Ordering::Relaxed);
        let mut inner = self.lock();
        inner.lanes[0].slots = latency_slots.max(1);
        inner.lanes[1].slots = throughput_slots.max(1);
        inner.fill(0);
        inner.fill(1);
    }

    fn wait(&self) -> Duration {
        Duration::from_micros(self.wait_micros.load(Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the counters half-updated (each update
        // is one statement), so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queries running and waiting now, over both lanes.
    pub fn load(&self) -> (usize, usize) {
        let inner = self.lock();
        (
            inner.lanes.iter().map(|l| l.running).sum(),
            inner.lanes.iter().map(|l| l.queued).sum(),
        )
    }

    /// Queries `tenant` runs now.
    pub fn running(&self, tenant: &str) -> usize {
        self.lock()
            .tenants
            .running
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }

    /// At most `limit` queries of `tenant` run at once (`None`: no limit of its own). A higher
    /// limit admits waiters at once.
    pub fn set_tenant_limit(&self, tenant: &str, limit: Option<usize>) {
        let mut inner = self.lock();
        match limit {
            Some(limit) => inner.tenants.limits.insert(tenant.to_owned(), limit.max(1)),
            None => inner.tenants.limits.remove(tenant),
        };
        inner.fill(0);
        inner.fill(1);
    }

    /// Takes a slot of `class`'s lane for `tenant`, waiting in its queue if all are taken.
    pub async fn admit(self: &Arc<Self>, class: TaskClass, tenant: &str) -> Result<Slot, Refusal> {
        let index = lane_index(class);
        let receiver = {
            let mut inner = self.lock();
            let at_limit = inner.tenants.at_limit(tenant);
            let lane = &mut inner.lanes[index];
            if lane.running < lane.slots && lane.queued == 0 && !at_limit {
                lane.running += 1;
                inner.tenants.enter(tenant);
                return Ok(self.slot(index, tenant));
            }
            if lane.queued >= self.queue_max.load(Ordering::Relaxed) {
                return Err(Refusal::QueueFull {
                    class,
                    queued: lane.queued,
                });
            }
            let (sender, receiver) = oneshot::channel();
            let queue = lane.waiting.entry(tenant.to_owned()).or_default();
            if queue.is_empty() {
                lane.turn.push_back(tenant.to_owned());
            }
            queue.push_back(sender);
            lane.queued += 1;
            // Slots may have freed while nobody waited, or be free but for tenants at their
            // limit.
            inner.fill(index);
            receiver
        };
        // Gives back a slot handed over to a waiter that stopped waiting (timed out, or its
        // call was dropped) before taking it.
        let mut waiting = Waiting {
            receiver: Some(receiver),
            admission: self.clone(),
            lane: index,
            tenant: tenant.to_owned(),
        };
        let receiver = waiting.receiver.as_mut().expect("set above");
        let wait = self.wait();
        match runtime::timeout(wait, receiver).await {
            Some(Ok(())) => {
                waiting.receiver = None;
                Ok(self.slot(index, tenant))
            }
            _ => {
                drop(waiting);
                let inner = self.lock();
                Err(Refusal::TimedOut {
                    class,
                    running: inner.lanes[index].running,
                    waited: wait,
                    tenant_limit: inner
                        .tenants
                        .at_limit(tenant)
                        .then(|| (tenant.to_owned(), inner.tenants.limits[tenant])),
                })
            }
        }
    }

    /// A slot of `lane` that `tenant` already counts as running.
    fn slot(self: &Arc<Self>, lane: usize, tenant: &str) -> Slot {
        Slot {
            admission: self.clone(),
            lane,
            tenant: tenant.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use tessera_storage_engine::io::runtime::{CoreOptions, CorePool};

    fn ready<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
        futures::pin_mut!(future);
        future.as_mut().now_or_never()
    }

    /// Runs `test` on an executor (waiting uses the runtime's timer).
    fn on_core(test: fn()) {
        let pool = CorePool::start(&CoreOptions::unpinned(1), |_| ()).unwrap();
        futures::executor::block_on(pool.run_on(0, move |_, _| async move { test() })).unwrap();
    }

    #[test]
    fn a_free_slot_admits_at_once_and_a_full_queue_refuses() {
        on_core(a_free_slot_admits_at_once_and_a_full_queue_refuses_on_core);
    }

    fn a_free_slot_admits_at_once_and_a_full_queue_refuses_on_core() {
        let admission = Admission::new(1, 1, 1, Duration::from_secs(60));
        let first = ready(admission.admit(TaskClass::Throughput, "a"))
            .unwrap()
            .unwrap();
        // The latency lane is separate: a short query does not wait behind a scan.
        let short = ready(admission.admit(TaskClass::Latency, "a"))
            .unwrap()
            .unwrap();
        let mut waiting = Box::pin(admission.admit(TaskClass::Throughput, "a"));
        assert!(waiting.as_mut().now_or_never().is_none());
        let refused = ready(admission.admit(TaskClass::Throughput, "b")).unwrap();
        assert_eq!(
            refused.err(),
            Some(Refusal::QueueFull {
                class: TaskClass::Throughput,
                queued: 1
            })
        );
        assert_eq!(admission.load(), (2, 1));
        drop(first);
        let admitted = waiting.as_mut().now_or_never().unwrap().unwrap();
        assert_eq!(admission.load(), (2, 0));
        drop((short, admitted));
        assert_eq!(admission.load(), (0, 0));
    }

    #[test]
    fn waiters_are_served_round_robin_across_tenants_and_in_order_within_one() {
        on_core(waiters_are_served_in_turn_on_core);
    }

    fn waiters_are_served_in_turn_on_core() {
        let admission = Admission::new(1, 1, 100, Duration::from_secs(60));
        let running = ready(admission.admit(TaskClass::Throughput, "noisy"))
            .unwrap()
            .unwrap();
        let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut waiters = Vec::new();
        for (tenant, n) in [("noisy", 1), ("noisy", 2), ("noisy", 3), ("quiet", 1)] {
            let (admission, order) = (admission.clone(), order.clone());
            let mut waiter = Box::pin(async move {
                let slot = admission
                    .admit(TaskClass::Throughput, tenant)
                    .await
                    .unwrap();
                order.borrow_mut().push((tenant, n));
                slot
            });
            assert!(waiter.as_mut().now_or_never().is_none());
            waiters.push(waiter);
        }
        drop(running);
        // Each admitted query finishes, freeing its slot for the next.
        let mut waiters: Vec<_> = waiters.into_iter().map(Some).collect();
        for _ in 0..4 {
            let mut admitted = None;
            for entry in waiters.iter_mut() {
                let Some(waiter) = entry else { continue };
                if let Some(slot) = waiter.as_mut().now_or_never() {
                    *entry = None;
                    admitted = Some(slot);
                    break;
                }
            }
            drop(admitted.expect("one waiter was admitted"));
        }
        assert_eq!(
            *order.borrow(),
            [("noisy", 1), ("quiet", 1), ("noisy", 2), ("noisy", 3)]
        );
    }

    #[test]
    fn a_waiter_that_gave_up_passes_its_turn_on() {
        on_core(a_waiter_that_gave_up_passes_its_turn_on_on_core);
    }

    fn a_waiter_that_gave_up_passes_its_turn_on_on_core() {
        let admission = Admission::new(1, 1, 10, Duration::from_secs(60));
        let running = ready(admission.admit(TaskClass::Latency, "a"))
            .unwrap()
            .unwrap();
        let mut gone = Box::pin(admission.admit(TaskClass::Latency, "a"));
        assert!(gone.as_mut().now_or_never().is_none());
        let mut next = Box::pin(admission.admit(TaskClass::Latency, "a"));
        assert!(next.as_mut().now_or_never().is_none());
        drop(gone);
        drop(running);
        let admitted = next.as_mut().now_or_never().unwrap().unwrap();
        assert_eq!(admission.load(), (1, 0));
        // Handed a slot, then dropped before taking it (its call went away): the slot goes on
        // to the next waiter instead of being lost.
        let mut handed = Box::pin(admission.admit(TaskClass::Latency, "b"));
        assert!(handed.as_mut().now_or_never().is_none());
        let mut after = Box::pin(admission.admit(TaskClass::Latency, "c"));
        assert!(after.as_mut().now_or_never().is_none());
        drop(admitted);
        drop(handed);
        let last = after.as_mut().now_or_never().unwrap().unwrap();
        assert_eq!(admission.load(), (1, 0));
        drop(last);
        assert_eq!(admission.load(), (0, 0));
    }

    #[test]
    fn a_tenant_at_its_quota_waits_without_holding_others_back() {
        on_core(a_tenant_at_its_quota_waits_on_core);
    }

    fn a_tenant_at_its_quota_waits_on_core() {
        let admission = Admission::new(4, 4, 10, Duration::from_secs(60));
        admission.set_tenant_limit("noisy", Some(1));
        let first = ready(admission.admit(TaskClass::Throughput, "noisy"))
            .unwrap()
            .unwrap();
        // Slots are free, but not for noisy: its next query waits, in either lane.
        let mut second = Box::pin(admission.admit(TaskClass::Throughput, "noisy"));
        assert!(second.as_mut().now_or_never().is_none());
        let mut short = Box::pin(admission.admit(TaskClass::Latency, "noisy"));
        assert!(short.as_mut().now_or_never().is_none());
        // Another tenant is admitted at once, past noisy's waiters.
        let quiet = ready(admission.admit(TaskClass::Throughput, "quiet"))
            .unwrap()
            .unwrap();
        assert_eq!(admission.running("noisy"), 1);
        assert_eq!(admission.load(), (2, 2));
        drop(first);
        // One of noisy's waiters takes its place (the lane freed first), not both.
        let admitted = second.as_mut().now_or_never().unwrap().unwrap();
        assert!(short.as_mut().now_or_never().is_none());
        assert_eq!(admission.running("noisy"), 1);
        // A higher quota admits the other at once.
        admission.set_tenant_limit("noisy", Some(2));
        let short = short.as_mut().now_or_never().unwrap().unwrap();
        assert_eq!(admission.running("noisy"), 2);
        drop((admitted, short, quiet));
        assert_eq!(admission.load(), (0, 0));
        assert_eq!(admission.running("noisy"), 0);
    }
}
