//! Bearer-token authentication against the real gateway: health stays
//! open, the inference API takes the inference token, the admin endpoints
//! the admin token; refusals are 401 (403 for a token of too small a
//! scope) with a JSON error and a `WWW-Authenticate: Bearer` challenge,
//! decided before the body is read. `make setup` must have generated the
//! models.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::server::{Step, TestGateway, post_bytes, raw_exchange};
use common::{Reply, fp32_request, send, write_config};
use switchyard_protocol::encode_request;

const INFERENCE: &str = "inference-token-0123456789abcdef";
const ADMIN: &str = "admin-token-fedcba9876543210";

async fn start() -> TestGateway {
    TestGateway::start(&format!(
        r#"
[server]
body_read_timeout_ms = 60000
[server.auth]
inference_token = "{INFERENCE}"
admin_token = "{ADMIN}"
[backends.local]
models = ["digits"]
"#
    ))
    .await
}

fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {token}"))]
}

fn digits_body() -> Vec<u8> {
    encode_request(&fp32_request(vec![1, 64], |i| (i % 16) as f32), false)
        .expect("encodes")
        .bytes
}

/// Asserts a refusal: status, challenge and a JSON error naming `words`.
fn assert_refused(reply: &Reply, status: u16, challenge: &str, words: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("www-authenticate"), Some(challenge));
    assert!(
        reply.error().contains(words),
        "{:?} should mention {words:?}",
        reply.error()
    );
}

const MISSING: &str = r#"Bearer realm="switchyard""#;
const INVALID: &str = r#"Bearer realm="switchyard", error="invalid_token""#;
const SCOPE: &str = r#"Bearer realm="switchyard", error="insufficient_scope""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_and_inference_needs_the_inference_token() {
    let gateway = start().await;
    for path in ["/v2/health/live", "/v2/health/ready"] {
        let reply = send("GET", &gateway.url(path), &[], Vec::new()).await;
        assert_eq!(reply.status, 200, "{path} stays open for probes");
    }
    let infer = gateway.url("/v2/models/digits/infer");
    let reply = send("POST", &infer, &[], digits_body()).await;
    assert_refused(&reply, 401, MISSING, "needs the inference token");
    let reply = send(
        "POST",
        &infer,
        &bearer("not-the-token-at-all"),
        digits_body(),
    )
    .await;
    assert_refused(&reply, 401, INVALID, "not valid");
    let reply = send("POST", &infer, &bearer(ADMIN), digits_body()).await;
    assert_refused(&reply, 401, INVALID, "not valid");
    let basic = vec![("authorization", format!("Basic {INFERENCE}"))];
    let reply = send("POST", &infer, &basic, digits_body()).await;
    assert_refused(&reply, 401, MISSING, "Authorization: Bearer");

    let reply = send("POST", &infer, &bearer(INFERENCE), digits_body()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.outputs().len(), 2);
    for path in ["/v2", "/v2/models/digits", "/v2/models/digits/ready"] {
        let refused = send("GET", &gateway.url(path), &[], Vec::new()).await;
        assert_refused(&refused, 401, MISSING, "inference token");
        let allowed = send("GET", &gateway.url(path), &bearer(INFERENCE), Vec::new()).await;
        assert_eq!(allowed.status, 200, "{path}: {}", allowed.text());
    }
    // Paths that match no route reveal nothing without a token.
    let reply = send("GET", &gateway.url("/v2/nowhere"), &[], Vec::new()).await;
    assert_refused(&reply, 401, MISSING, "inference token");
    let reply = send(
        "GET",
        &gateway.url("/v2/nowhere"),
        &bearer(INFERENCE),
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 404);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_admin_token() {
    let gateway = start().await;
    let endpoints = [
        ("GET", "/v2/switchyard/stats"),
        ("POST", "/v2/switchyard/reload"),
        ("GET", "/v2/repository/index"),
        ("POST", "/v2/repository/index"),
        ("GET", "/metrics"),
        // Extra slashes reach the same route and so need the same token.
        ("GET", "/v2//switchyard//stats/"),
    ];
    for (method, path) in endpoints {
        let url = gateway.url(path);
        let reply = send(method, &url, &[], Vec::new()).await;
        assert_refused(&reply, 401, MISSING, "needs the admin token");
        let reply = send(method, &url, &bearer(INFERENCE), Vec::new()).await;
        assert_refused(&reply, 403, SCOPE, "inference token does not grant it");
        let reply = send(method, &url, &bearer("wrong-token-0123456789"), Vec::new()).await;
        assert_refused(&reply, 401, INVALID, "admin token");
        let reply = send(method, &url, &bearer(ADMIN), Vec::new()).await;
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_request_is_refused_before_its_body_is_read() {
    let gateway = start().await;
    // A large body is declared and never sent. Were it read first, the
    // answer would wait for the body timeout (60 s) and outlast the bound.
    let request = post_bytes("/v2/models/digits/infer", &[], Some(10_000_000), b"");
    let reply = raw_exchange(
        gateway.address,
        &[Step::Send(request)],
        Duration::from_secs(20),
    )
    .await
    .reply();
    assert_eq!(reply.status, 401, "{}", reply.head);
    assert_eq!(reply.header("www-authenticate"), Some(MISSING));
    assert!(
        reply.error().contains("inference token"),
        "{}",
        reply.error()
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_an_inference_token_admin_endpoints_take_it_too() {
    let gateway = TestGateway::start(&format!(
        "[server.auth]\ninference_token = \"{INFERENCE}\"\n[backends.local]\nmodels = [\"digits\"]\n"
    ))
    .await;
    let stats = gateway.url("/v2/switchyard/stats");
    let reply = send("GET", &stats, &[], Vec::new()).await;
    assert_refused(&reply, 401, MISSING, "inference token");
    let reply = send("GET", &stats, &bearer(INFERENCE), Vec::new()).await;
    assert_eq!(reply.status, 200);
    gateway.shutdown().await;
}

#[test]
fn tokens_can_come_from_the_environment_and_check_config_never_prints_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[server.auth]\ninference_token_env = \"SWITCHYARD_TEST_INFERENCE_TOKEN\"\n[backends.local]\nmodels = [\"digits\"]\n",
    );
    let run = |token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command.arg("check-config").arg(&config);
        command.env_remove("SWITCHYARD_TEST_INFERENCE_TOKEN");
        if let Some(token) = token {
            command.env("SWITCHYARD_TEST_INFERENCE_TOKEN", token);
        }
        command.output().expect("runs")
    };
    let ok = run(Some(INFERENCE));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!stdout.contains(INFERENCE), "{stdout}");

    let unset = run(None);
    assert_eq!(unset.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unset.stderr);
    assert!(
        stderr.contains("server.auth.inference_token_env"),
        "{stderr}"
    );
    assert!(
        stderr.contains("SWITCHYARD_TEST_INFERENCE_TOKEN"),
        "{stderr}"
    );

    let weak = run(Some("hunter2"));
    assert_eq!(weak.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&weak.stderr);
    assert!(
        stderr.contains("at least") || stderr.contains("16 to"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
