//! Placement policies: pure functions from what is known about a request and
//! the backends to a decision with a reason. No I/O happens here, so a policy
//! is tested with plain values and the same code can run in a simulator.

use switchyard_backends::BackendSnapshot;

use crate::measure::RequestRate;

/// What placement knows about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFeatures<'a> {
    pub model: &'a str,
    /// Bytes of input tensor data.
    pub payload_bytes: u64,
    /// The model's request rate, this request included.
    pub rate: RequestRate,
}

/// Where a request goes and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index into the backend snapshots the policy was given.
    pub backend: usize,
    /// One line for the `switchyard-placement` header and the decision log.
    pub reason: String,
}

/// A placement policy.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// Its name in config, metrics and stats.
    fn name(&self) -> &'static str;
    /// Chooses among `backends` (those that serve the request's model);
    /// `None` when none of them can take it.
    fn place(
        &self,
        request: &RequestFeatures<'_>,
        backends: &[BackendSnapshot],
    ) -> Option<Decision>;
}

/// The first backend in the configured order that is ready and has
/// capacity; if none has capacity, the first ready one, which will refuse
/// the request with a clear overload error rather than the gateway guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ordered {
    pub order: Vec<String>,
}

impl Ordered {
    fn rank(&self, name: &str) -> usize {
        self.order
            .iter()
            .position(|n| n == name)
            .unwrap_or(usize::MAX)
    }
}

impl Policy for Ordered {
    fn name(&self) -> &'static str {
        "ordered"
    }

    fn place(
        &self,
        _request: &RequestFeatures<'_>,
        backends: &[BackendSnapshot],
    ) -> Option<Decision> {
        let mut ranked: Vec<(usize, &BackendSnapshot)> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.ready && self.rank(&b.name) != usize::MAX)
            .collect();
        ranked.sort_by_key(|(_, b)| self.rank(&b.name));
        if let Some((index, chosen)) = ranked.iter().find(|(_, b)| b.has_capacity()) {
            return Some(Decision {
                backend: *index,
                reason: format!("ordered: {} is first with capacity", chosen.name),
            });
        }
        ranked.first().map(|(index, chosen)| Decision {
            backend: *index,
            reason: format!("ordered: no backend has capacity, {} is first", chosen.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use switchyard_backends::BackendKind;

    use super::*;

    fn snapshot(name: &str, ready: bool, in_flight: u64, capacity: u64) -> BackendSnapshot {
        BackendSnapshot {
            name: name.into(),
            kind: BackendKind::Local,
            ready,
            in_flight,
            queued: 0,
            concurrency: 1,
            capacity,
            headroom: 0,
            max_payload_bytes: None,
            unready_reason: None,
        }
    }

    fn features() -> RequestFeatures<'static> {
        RequestFeatures {
            model: "m",
            payload_bytes: 10,
            rate: RequestRate::default(),
        }
    }

    #[test]
    fn picks_the_first_in_order_with_capacity() {
        let policy = Ordered {
            order: vec!["b".into(), "a".into()],
        };
        let backends = [snapshot("a", true, 0, 4), snapshot("b", true, 4, 4)];
        let decision = policy.place(&features(), &backends).expect("placed");
        assert_eq!(decision.backend, 0, "b is full, so a");
        let backends = [snapshot("a", true, 0, 4), snapshot("b", true, 1, 4)];
        assert_eq!(
            policy
                .place(&features(), &backends)
                .expect("placed")
                .backend,
            1
        );
    }

    #[test]
    fn falls_back_to_the_first_ready_when_all_are_full_and_skips_unready() {
        let policy = Ordered {
            order: vec!["a".into(), "b".into()],
        };
        let backends = [snapshot("a", false, 0, 4), snapshot("b", true, 4, 4)];
        let decision = policy.place(&features(), &backends).expect("placed");
        assert_eq!(decision.backend, 1);
        assert!(
            decision.reason.contains("no backend has capacity"),
            "{}",
            decision.reason
        );
        assert_eq!(
            policy.place(&features(), &[snapshot("a", false, 0, 4)]),
            None
        );
    }
}
