//! The StraightLine paper's Algorithm 1, "empirical dynamic placing":
//!
//! ```text
//! if f_t > F and r_d < D:     serverless   # bursts of small requests
//! elif r_d > D:               docker       # large payloads tolerate latency
//! elif S_F has capacity:      local        # moderate size, low rate: fastest
//! elif S_D has capacity:      docker
//! else:                       serverless
//! ```
//!
//! `f_t` is the model's request rate over the gateway's window, `r_d` the
//! payload in bytes, F and D the thresholds. "S_D has capacity" counts a pool
//! that can still scale out. When the algorithm's choice is not configured or
//! cannot take the request (not ready, payload over its limit), the request
//! goes to the first of local, docker, serverless that can take it and has
//! room (then that can take it at all), and the reason says so.

use super::{BackendView, Decision, Policy, RequestFeatures, bytes, find};

/// Algorithm 1 with its thresholds and the names of its three tiers.
#[derive(Debug, Clone, PartialEq)]
pub struct Straightline {
    /// F, requests per second.
    pub frequency_threshold: f64,
    /// D, bytes.
    pub data_size_threshold: u64,
    /// The backend playing the paper's local web server (S_F).
    pub local: String,
    /// The backend playing the Docker tier (S_D).
    pub docker: String,
    /// The backend playing the serverless tier.
    pub serverless: String,
}

impl Policy for Straightline {
    fn name(&self) -> &'static str {
        "straightline"
    }

    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision> {
        let f = request.rate.window_per_second;
        let d = request.payload_bytes;
        let (big_f, big_d) = (self.frequency_threshold, self.data_size_threshold);
        let local = find(backends, &self.local, request);
        let docker = find(backends, &self.docker, request);
        let with_room = |i: Option<usize>| i.filter(|&i| backends[i].has_room());
        let (target, why) = if f > big_f && d < big_d {
            (
                find(backends, &self.serverless, request),
                format!(
                    "rate {f:.0}/s > F={big_f:.0} and {} < D={}",
                    bytes(d),
                    bytes(big_d)
                ),
            )
        } else if d > big_d {
            (docker, format!("{} > D={}", bytes(d), bytes(big_d)))
        } else if let Some(i) = with_room(local) {
            (
                Some(i),
                format!("rate {f:.0}/s, {}, local has capacity", bytes(d)),
            )
        } else if let Some(i) = with_room(docker) {
            (
                Some(i),
                format!(
                    "rate {f:.0}/s, {}, local full, docker has capacity",
                    bytes(d)
                ),
            )
        } else {
            (
                find(backends, &self.serverless, request),
                format!("rate {f:.0}/s, {}, local and docker full", bytes(d)),
            )
        };
        if let Some(index) = target {
            return Some(Decision {
                backend: index,
                reason: format!("straightline: {why} -> {}", backends[index].snapshot.name),
            });
        }
        let tiers = [local, docker, find(backends, &self.serverless, request)];
        let fallback = tiers
            .iter()
            .flatten()
            .copied()
            .find(|&i| backends[i].has_room())
            .or_else(|| tiers.iter().flatten().copied().next())?;
        Some(Decision {
            backend: fallback,
            reason: format!(
                "straightline: {why}, but that tier cannot take it -> {}",
                backends[fallback].snapshot.name
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use switchyard_backends::BackendKind;

    use super::*;
    use crate::policy::testing::{request, view};

    fn policy() -> Straightline {
        Straightline {
            frequency_threshold: 100.0,
            data_size_threshold: 64 * 1024,
            local: "local".into(),
            docker: "container".into(),
            serverless: "lambda".into(),
        }
    }

    /// local (index 0), container (1), lambda (2), with the given in-flight
    /// counts against capacities of 4.
    fn tiers(local: u64, container: u64) -> Vec<BackendView> {
        vec![
            view("local", BackendKind::Local, local, 4),
            view("container", BackendKind::Container, container, 4),
            view("lambda", BackendKind::Lambda, 0, 100),
        ]
    }

    fn placed(rate: f64, payload: u64, backends: &[BackendView]) -> (String, String) {
        let decision = policy()
            .place(&request(rate, payload), backends)
            .expect("placed");
        (
            backends[decision.backend].snapshot.name.clone(),
            decision.reason,
        )
    }

    #[test]
    fn branch_1_high_rate_small_payload_goes_serverless() {
        let (backend, reason) = placed(412.0, 3 * 1024, &tiers(0, 0));
        assert_eq!(backend, "lambda");
        assert!(
            reason.contains("rate 412/s > F=100 and 3.0 KiB < D=64.0 KiB -> lambda"),
            "{reason}"
        );
    }

    #[test]
    fn branch_2_large_payload_goes_to_docker_whatever_the_rate() {
        assert_eq!(placed(1.0, 1 << 20, &tiers(0, 0)).0, "container");
        assert_eq!(placed(1000.0, 1 << 20, &tiers(0, 0)).0, "container");
    }

    #[test]
    fn branch_3_moderate_request_goes_local_when_it_has_capacity() {
        assert_eq!(placed(10.0, 1024, &tiers(3, 0)).0, "local");
    }

    #[test]
    fn branch_4_local_full_goes_to_docker_with_capacity() {
        let (backend, reason) = placed(10.0, 1024, &tiers(4, 1));
        assert_eq!(backend, "container");
        assert!(reason.contains("local full"), "{reason}");
    }

    #[test]
    fn branch_5_local_and_docker_full_goes_serverless() {
        assert_eq!(placed(10.0, 1024, &tiers(4, 4)).0, "lambda");
    }

    #[test]
    fn a_pool_that_can_scale_out_counts_as_having_capacity() {
        let mut backends = tiers(4, 4);
        backends[1].snapshot.headroom = 2;
        assert_eq!(placed(10.0, 1024, &backends).0, "container");
    }

    #[test]
    fn payload_equal_to_d_at_high_rate_falls_through_to_the_capacity_checks() {
        assert_eq!(placed(1000.0, 64 * 1024, &tiers(0, 0)).0, "local");
    }

    #[test]
    fn a_missing_or_unfit_tier_falls_back_with_a_reason() {
        let backends = vec![view("local", BackendKind::Local, 0, 4)];
        let (backend, reason) = placed(412.0, 1024, &backends);
        assert_eq!(backend, "local");
        assert!(reason.contains("cannot take it"), "{reason}");
        let mut backends = tiers(0, 0);
        backends[2].snapshot.max_payload_bytes = Some(512);
        assert_eq!(
            placed(412.0, 1024, &backends).0,
            "local",
            "lambda cannot take 1 KiB here"
        );
    }
}
