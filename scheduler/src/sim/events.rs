//! Virtual time and the event queue: a binary heap of timed events, ties
//! broken by the order they were scheduled in, so a run is a pure function
//! of its inputs.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use switchyard_backends::BackendError;

/// Virtual time in nanoseconds since the start of the run.
pub type Time = u64;

/// Nanoseconds of a [`std::time::Duration`], saturating.
pub fn nanos(duration: std::time::Duration) -> Time {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A request in the simulator's table; `generation` tells a live request
/// from a later one reusing its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    pub slot: u32,
    pub generation: u32,
}

/// Something that happens at a point in virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A local worker finished its batch.
    LocalDone { model: u32, worker: u32 },
    /// A container finished one request, which had waited `queue` for a
    /// slot (in the pool and in its container).
    ContainerDone {
        container: u32,
        request: RequestId,
        queue: Time,
    },
    /// A starting container is ready.
    ContainerReady { container: u32 },
    /// The container pool's periodic scaling check.
    ContainerTick,
    /// A Lambda instance finished one invocation.
    LambdaDone { instance: u32, request: RequestId },
    /// A Lambda instance finished a pre-warm invocation.
    LambdaWarmed { instance: u32 },
    /// A request's deadline: if it is still waiting or running, it times out.
    Deadline { request: RequestId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scheduled {
    at: Time,
    sequence: u64,
    event: Event,
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.sequence).cmp(&(other.at, other.sequence))
    }
}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The event queue.
#[derive(Debug, Default)]
pub struct Events {
    heap: BinaryHeap<Reverse<Scheduled>>,
    sequence: u64,
}

impl Events {
    /// Schedules `event` at `at`.
    pub fn schedule(&mut self, at: Time, event: Event) {
        self.sequence += 1;
        self.heap.push(Reverse(Scheduled {
            at,
            sequence: self.sequence,
            event,
        }));
    }

    /// When the next event is due.
    pub fn next_time(&self) -> Option<Time> {
        self.heap.peek().map(|Reverse(s)| s.at)
    }

    /// Takes the next event.
    pub fn pop(&mut self) -> Option<(Time, Event)> {
        self.heap.pop().map(|Reverse(s)| (s.at, s.event))
    }
}

/// How a backend answered a request, reported back to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The request ran and succeeded, after waiting this long before it
    /// ran (the queue time its real backend reports in its `Timing`).
    Served(RequestId, Time),
    /// The backend refused it (after it waited, for a container pool).
    Refused(RequestId, BackendError),
}

/// What a backend did with a request offered to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Accepted; it finishes at `done_at` if it started at once, or waits.
    Accepted { done_at: Option<Time> },
    /// Refused at once.
    Refused(BackendError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_in_time_order_and_ties_in_scheduling_order() {
        let mut events = Events::default();
        events.schedule(5, Event::ContainerTick);
        events.schedule(1, Event::ContainerReady { container: 1 });
        events.schedule(5, Event::ContainerReady { container: 2 });
        events.schedule(3, Event::ContainerReady { container: 3 });
        let order: Vec<(Time, Event)> = std::iter::from_fn(|| events.pop()).collect();
        assert_eq!(
            order,
            vec![
                (1, Event::ContainerReady { container: 1 }),
                (3, Event::ContainerReady { container: 3 }),
                (5, Event::ContainerTick),
                (5, Event::ContainerReady { container: 2 }),
            ]
        );
    }
}
