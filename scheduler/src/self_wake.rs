//! Re-polling a future that wakes its own task while it is being polled,
//! instead of handing the wake to the scheduler.
//!
//! hyper's HTTP/1 connection does this on every request with a body: the
//! request's body is a channel between the connection's dispatcher and the
//! service, both polled by one task, so the service asking for the body
//! wakes the dispatcher, and the dispatcher handing over the bytes wakes the
//! service, within one poll. tokio's multi-threaded scheduler treats a task
//! woken during its own poll as a yield: it goes to the back of the run
//! queue and a parked worker thread is woken to come and steal it. At low
//! load the other threads are parked, so each request cost a wake-up of a
//! sleeping CPU (an inter-processor interrupt, dear on a virtual machine)
//! for nothing but a hand-off inside one task.
//!
//! The gateway's own call to a worker container adds another: hyper's
//! client hands the response body over the same way. With two async
//! threads, a request through the container tier woke the other thread
//! twice (measured with `sched:sched_waking`: 843 such wakes for 400
//! requests).
//!
//! [`SelfWake::poll`] polls the future with a waker of its own. A wake that
//! arrives while the poll runs is recorded, and the future is polled again
//! at once, up to [`MAX_REPOLLS`] times, and only while the task has
//! cooperative budget left (tokio's resources wake the task themselves when
//! it runs out, to make it yield); otherwise the wake goes to the scheduler,
//! so a future that keeps waking itself still yields. A wake that arrives
//! between polls goes straight to the task's waker.
//!
//! Measured side by side (two gateway binaries, alternating rounds, the
//! median of the per-round ratios, with ÷ without): through the container
//! tier at 2,000/s p50 0.84× (lower in 7 of 8 rounds) and the gateway's CPU
//! per request 0.80× (8 of 8), at 200/s p50 0.89× and CPU 0.79× (5 of 8);
//! local `digits` at 200/s CPU 0.88× (10 of 12) with the p50 unchanged
//! (0.97×); local at 2,000/s and at saturation within noise (p50 0.95× and
//! 1.01×, throughput 1.02×).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// How many times a poll is repeated for wakes that came during it.
pub const MAX_REPOLLS: usize = 8;

/// The wake state of one future (one connection): create once, poll with
/// it every time.
#[derive(Debug)]
pub struct SelfWake {
    inner: Arc<Inner>,
    waker: Waker,
}

#[derive(Debug)]
struct Inner {
    polling: AtomicBool,
    woken: AtomicBool,
    /// The task's own waker, as of its latest poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for Inner {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before reading `polling`: the poller clears `polling` before
        // reading `woken`, so one of the two sides sees the other's write
        // and no wake is lost.
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            let task = self
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(task) = task {
                task.wake();
            }
        }
    }
}

impl Default for SelfWake {
    fn default() -> Self {
        Self::new()
    }
}

impl SelfWake {
    pub fn new() -> Self {
        let inner = Arc::new(Inner {
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            task: Mutex::new(None),
        });
        let waker = Waker::from(Arc::clone(&inner));
        Self { inner, waker }
    }

    /// Polls `future` for the task of `cx`, again at once while it woke
    /// itself during the poll (at most [`MAX_REPOLLS`] more times).
    pub fn poll<F: Future + ?Sized>(
        &self,
        mut future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        {
            let mut task = self
                .inner
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match task.as_ref() {
                Some(known) if known.will_wake(cx.waker()) => {}
                _ => *task = Some(cx.waker().clone()),
            }
        }
        let mut own = Context::from_waker(&self.waker);
        for _ in 0..=MAX_REPOLLS {
            self.inner.woken.store(false, Ordering::SeqCst);
            self.inner.polling.store(true, Ordering::SeqCst);
            let polled = future.as_mut().poll(&mut own);
            self.inner.polling.store(false, Ordering::SeqCst);
            if polled.is_ready() || !self.inner.woken.swap(false, Ordering::SeqCst) {
                return polled;
            }
            if !tokio::task::coop::has_budget_remaining() {
                break;
            }
        }
        // Still waking itself, or out of budget: let the scheduler run
        // others first.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts how often the task was woken.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakes itself during each of its first `self_wakes` polls, then is
    /// ready. Counts its polls.
    struct WakesItself {
        self_wakes: usize,
        polls: usize,
    }

    impl Future for WakesItself {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls > self.self_wakes {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn counting() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        (counter, waker)
    }

    #[test]
    fn a_wake_during_the_poll_repolls_without_waking_the_task() {
        let (counter, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let wake = SelfWake::new();
        let mut future = WakesItself {
            self_wakes: 3,
            polls: 0,
        };
        let polled = wake.poll(Pin::new(&mut future), &mut cx);
        assert_eq!(polled, Poll::Ready(4));
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_still_yields_to_the_scheduler() {
        let (counter, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let wake = SelfWake::new();
        let mut future = WakesItself {
            self_wakes: usize::MAX,
            polls: 0,
        };
        assert!(wake.poll(Pin::new(&mut future), &mut cx).is_pending());
        assert_eq!(future.polls, MAX_REPOLLS + 1);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_task_out_of_budget_yields_instead_of_repolling() {
        let wake = SelfWake::new();
        let mut future = WakesItself {
            self_wakes: usize::MAX,
            polls: 0,
        };
        let pending = std::future::poll_fn(|cx| {
            // Use up the task's budget as a busy resource would.
            loop {
                let mut spend = std::pin::pin!(tokio::task::coop::consume_budget());
                if spend.as_mut().poll(cx).is_pending() {
                    break;
                }
            }
            Poll::Ready(wake.poll(Pin::new(&mut future), cx).is_pending())
        })
        .await;
        assert!(pending);
        assert_eq!(future.polls, 1);
    }

    #[test]
    fn a_wake_between_polls_reaches_the_task() {
        let (counter, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let wake = SelfWake::new();
        // Pending without a wake: the future keeps the waker it was given,
        // as an I/O resource would, and a wake on it later (here from
        // another thread) must reach the task.
        let kept: Arc<Mutex<Option<Waker>>> = Arc::default();
        let keeper = Arc::clone(&kept);
        let mut future = std::future::poll_fn(move |cx| {
            *keeper.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            Poll::<()>::Pending
        });
        assert!(wake.poll(Pin::new(&mut future), &mut cx).is_pending());
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        let kept = kept.lock().unwrap_or_else(PoisonError::into_inner).take();
        assert!(kept.is_some());
        let woke = std::thread::spawn(move || kept.into_iter().for_each(Waker::wake)).join();
        assert!(woke.is_ok());
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }
}
