//! A counting semaphore for the tasks of one core: a scan opens many files at once (their
//! footers are small reads) but decodes only a few at a time. No locks (`Cell`/`RefCell`, one
//! thread); waiters are served in arrival order, so files start in the order they were asked for.

use futures::channel::oneshot;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

pub(super) struct Permits {
    available: Cell<usize>,
    waiters: RefCell<VecDeque<oneshot::Sender<()>>>,
}

/// One permit, returned (to the first waiter, else to the pool) when dropped.
pub(super) struct Permit<'a> {
    permits: &'a Permits,
}

impl Permits {
    pub(super) fn new(count: usize) -> Permits {
        Permits {
            available: Cell::new(count),
            waiters: RefCell::new(VecDeque::new()),
        }
    }

    pub(super) async fn acquire(&self) -> Permit<'_> {
        if self.available.get() > 0 && self.waiters.borrow().is_empty() {
            self.available.set(self.available.get() - 1);
            return Permit { permits: self };
        }
        let (sender, receiver) = oneshot::channel();
        self.waiters.borrow_mut().push_back(sender);
        let mut waiting = Waiting {
            permits: self,
            receiver,
            served: false,
        };
        // A release hands its permit over by sending; the sender is dropped only by `release`
        // after a successful send or by a waiter that gave up, so an error cannot happen here
        // while `self` lives. Either way the caller goes on with one permit.
        let _ = (&mut waiting.receiver).await;
        waiting.served = true;
        Permit { permits: self }
    }

    fn release(&self) {
        // The first waiter still waiting takes the permit; one that gave up refuses it.
        while let Some(waiter) = self.waiters.borrow_mut().pop_front() {
            if waiter.send(()).is_ok() {
                return;
            }
        }
        self.available.set(self.available.get() + 1);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.permits.release();
    }
}

/// A waiter that may be cancelled: if its permit was handed over but never taken, it goes on.
struct Waiting<'a> {
    permits: &'a Permits,
    receiver: oneshot::Receiver<()>,
    /// The permit became the caller's.
    served: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        if let Ok(Some(())) = self.receiver.try_recv() {
            self.permits.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn permits_bound_holders_and_serve_waiters_in_order() {
        futures::executor::block_on(async {
            let permits = Permits::new(2);
            let a = permits.acquire().await;
            let _b = permits.acquire().await;
            let mut c = Box::pin(permits.acquire());
            let mut d = Box::pin(permits.acquire());
            assert!((&mut c).now_or_never().is_none());
            assert!((&mut d).now_or_never().is_none());
            drop(a);
            // c arrived first, so it holds the released permit and d still waits.
            let _c = (&mut c).now_or_never().expect("c is served");
            assert!((&mut d).now_or_never().is_none());
        });
    }

    #[test]
    fn a_cancelled_waiter_passes_its_permit_on() {
        futures::executor::block_on(async {
            let permits = Permits::new(1);
            let a = permits.acquire().await;
            let mut b = Box::pin(permits.acquire());
            let mut c = Box::pin(permits.acquire());
            assert!((&mut b).now_or_never().is_none());
            assert!((&mut c).now_or_never().is_none());
            // The permit is handed to b, which is cancelled before it runs: c gets it.
            drop(a);
            drop(b);
            let c = (&mut c).now_or_never().expect("c is served");
            drop(c);
            // And the permit is back: a new caller gets it at once.
            assert!(permits.acquire().now_or_never().is_some());
        });
    }
}
