//! The classic policies: a fixed preference order, one static backend,
//! round robin, and least loaded by power of two choices.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{BackendView, Decision, Policy, RequestFeatures, find};

/// The first backend in `order` that can take the request and has room;
/// if none has room, the first that can take it (it will refuse with a
/// clear overload error, and failover moves on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered {
    pub order: Vec<String>,
}

impl Policy for Ordered {
    fn name(&self) -> &'static str {
        "ordered"
    }

    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision> {
        let ranked: Vec<usize> = self
            .order
            .iter()
            .filter_map(|name| find(backends, name, request))
            .collect();
        if let Some(&index) = ranked.iter().find(|&&i| backends[i].has_room()) {
            return Some(Decision {
                backend: index,
                reason: format!("ordered: {} is first with room", backends[index].name()),
            });
        }
        ranked.first().map(|&index| Decision {
            backend: index,
            reason: format!(
                "ordered: no backend has room, {} is first",
                backends[index].name()
            ),
        })
    }
}

/// Always one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Static {
    pub backend: String,
}

impl Policy for Static {
    fn name(&self) -> &'static str {
        "static"
    }

    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision> {
        find(backends, &self.backend, request).map(|index| Decision {
            backend: index,
            reason: format!("static: {}", self.backend),
        })
    }
}

/// Takes turns among the backends that can take the request and have room.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision> {
        let mut eligible: Vec<usize> = (0..backends.len())
            .filter(|&i| backends[i].can_take(request) && backends[i].has_room())
            .collect();
        if eligible.is_empty() {
            eligible = (0..backends.len())
                .filter(|&i| backends[i].can_take(request))
                .collect();
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let index = *eligible.get(turn % eligible.len().max(1))?;
        Some(Decision {
            backend: index,
            reason: format!("round_robin: turn of {}", backends[index].name()),
        })
    }
}

/// Power of two choices over load = peak-EWMA latency × (in-flight + 1):
/// two random candidates, the less loaded wins. Unmeasured backends count
/// as 1 ms so that they get tried.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeastLoaded;

impl LeastLoaded {
    fn load(view: &BackendView) -> f64 {
        view.observed.latency_ms.unwrap_or(1.0) * (view.snapshot.in_flight as f64 + 1.0)
    }
}

impl Policy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least_loaded"
    }

    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision> {
        let eligible: Vec<usize> = (0..backends.len())
            .filter(|&i| backends[i].can_take(request))
            .collect();
        let n = eligible.len();
        let (a, b) = match n {
            0 => return None,
            1 => (eligible[0], eligible[0]),
            _ => {
                let first = (request.random % n as u64) as usize;
                let offset = 1 + ((request.random >> 32) % (n as u64 - 1)) as usize;
                (eligible[first], eligible[(first + offset) % n])
            }
        };
        let index = if Self::load(&backends[b]) < Self::load(&backends[a]) {
            b
        } else {
            a
        };
        Some(Decision {
            backend: index,
            reason: format!(
                "least_loaded: {} load {:.2} vs {} load {:.2}",
                backends[index].name(),
                Self::load(&backends[index]),
                backends[if index == a { b } else { a }].name(),
                Self::load(&backends[if index == a { b } else { a }])
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use switchyard_backends::BackendKind;

    use super::*;
    use crate::policy::testing::{request, view};

    #[test]
    fn ordered_prefers_the_first_with_room_then_the_first_at_all() {
        let policy = Ordered {
            order: vec!["b".into(), "a".into()],
        };
        let full = [
            view("a", BackendKind::Local, 0, 4),
            view("b", BackendKind::Local, 4, 4),
        ];
        assert_eq!(
            policy.place(&request(1.0, 10), &full).map(|d| d.backend),
            Some(0)
        );
        let roomy = [
            view("a", BackendKind::Local, 0, 4),
            view("b", BackendKind::Local, 1, 4),
        ];
        assert_eq!(
            policy.place(&request(1.0, 10), &roomy).map(|d| d.backend),
            Some(1)
        );
        let all_full = [
            view("a", BackendKind::Local, 4, 4),
            view("b", BackendKind::Local, 4, 4),
        ];
        let decision = policy.place(&request(1.0, 10), &all_full).expect("placed");
        assert_eq!(decision.backend, 1);
        assert!(decision.reason.contains("no backend has room"));
    }

    #[test]
    fn static_ignores_load_but_not_readiness_or_payload_limits() {
        let policy = Static {
            backend: "a".into(),
        };
        let mut backends = [
            view("a", BackendKind::Lambda, 9, 4),
            view("b", BackendKind::Local, 0, 4),
        ];
        assert_eq!(
            policy
                .place(&request(1.0, 10), &backends)
                .map(|d| d.backend),
            Some(0)
        );
        backends[0].snapshot.max_payload_bytes = Some(5);
        assert_eq!(policy.place(&request(1.0, 10), &backends), None);
    }

    #[test]
    fn round_robin_takes_turns_among_backends_with_room() {
        let policy = RoundRobin::default();
        let backends = [
            view("a", BackendKind::Local, 0, 4),
            view("b", BackendKind::Local, 4, 4),
            view("c", BackendKind::Local, 0, 4),
        ];
        let picks: Vec<usize> = (0..4)
            .filter_map(|_| policy.place(&request(1.0, 1), &backends))
            .map(|d| d.backend)
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }

    #[test]
    fn least_loaded_picks_the_lighter_of_two() {
        let mut slow = view("slow", BackendKind::Local, 3, 8);
        slow.observed.latency_ms = Some(10.0);
        let mut fast = view("fast", BackendKind::Local, 3, 8);
        fast.observed.latency_ms = Some(1.0);
        let backends = [slow, fast];
        for random in [0u64, 1, 2, 3, u64::MAX] {
            let mut r = request(1.0, 1);
            r.random = random;
            assert_eq!(
                LeastLoaded.place(&r, &backends).map(|d| d.backend),
                Some(1),
                "random {random}"
            );
        }
    }
}
