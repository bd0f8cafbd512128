//! Whether a backend's address is on the gateway's own machine, so that the
//! work sent there shares the gateway host's CPU
//! ([`BackendSnapshot::shares_host_cpu`](crate::BackendSnapshot::shares_host_cpu)).

use std::net::IpAddr;

/// Whether `authority` (`host`, `host:port`, `[v6]:port`, or a URL's
/// `scheme://host:port/path`) names this machine by a loopback address or
/// `localhost`. Any other name may resolve anywhere, so it counts as remote.
pub fn is_loopback_authority(authority: &str) -> bool {
    let rest = authority
        .split_once("://")
        .map_or(authority, |(_, rest)| rest);
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = host_port
        .rsplit_once('@')
        .map_or(host_port, |(_, host)| host);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else if host_port.matches(':').count() > 1 {
        // A bare IPv6 address without a port.
        host_port
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_authority;

    #[test]
    fn loopback_names_and_addresses_are_on_this_host() {
        for on_host in [
            "127.0.0.1:9001",
            "http://127.0.0.1:9001/",
            "http://127.3.4.5",
            "localhost:2375",
            "http://LOCALHOST:9000/2015-03-31",
            "http://[::1]:9000/",
            "::1",
            "lambda.localhost:80",
            "http://user@127.0.0.1:9000",
        ] {
            assert!(is_loopback_authority(on_host), "{on_host}");
        }
    }

    #[test]
    fn other_names_and_addresses_are_remote() {
        for remote in [
            "https://lambda.us-east-1.amazonaws.com",
            "docker.internal:2376",
            "10.0.0.5:2375",
            "http://[2001:db8::1]:9000/",
            "http://localhost.example.com/",
            "http://127.0.0.1.example.com/",
            "",
        ] {
            assert!(!is_loopback_authority(remote), "{remote}");
        }
    }
}
