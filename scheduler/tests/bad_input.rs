//! Malformed requests against the real gateway over TCP, and the limits
//! that bound what one client can make it hold (elements, head size and
//! count, connections, body read time, deadlines).
//!
//! Every malformed request gets a 4xx with a JSON `{"error": ...}` that
//! names the problem, never a panic or a hang (each exchange is bounded),
//! and the gateway answers a good request afterwards. The exceptions are
//! errors hyper detects before a request exists (an oversized or malformed
//! head, a bad Content-Length): hyper answers those with a bare status and
//! closes the connection. `make setup` must have generated the models.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::server::{RawOutcome, Step, TestGateway, post_bytes, raw, raw_exchange, read_response};
use common::{fp32_request, get, send, workspace};
use switchyard_backends::{
    Backend, BackendError, BackendFuture, BackendKind, BackendSnapshot, InferenceJob,
    InferenceResult, ModelInfo, Timing,
};
use switchyard_models::TensorSpecs;
use switchyard_protocol::{
    BINARY_HEADER_LENGTH, DataType, TensorData, TensorSpec, decode_response, encode_request,
};
use switchyard_scheduler::{Config, Gateway};
use tokio::io::AsyncWriteExt;

const INFER: &str = "/v2/models/digits/infer";

/// Digits on the local backend, with limits small enough to reach.
const DIGITS: &str = r#"
[server]
max_request_bytes = 1048576
max_tensor_elements = 20000
body_read_timeout_ms = 400
header_read_timeout_ms = 2000
max_header_bytes = 8192
max_headers = 50
[backends.local]
models = ["digits"]
"#;

/// A good digits request (JSON), to show the gateway still serves.
async fn assert_still_serves(gateway: &TestGateway) {
    let body = encode_request(&fp32_request(vec![1, 64], |i| (i % 17) as f32), false)
        .expect("encodes")
        .bytes;
    let reply = send("POST", &gateway.url(INFER), &[], body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.outputs().len(), 2);
}

/// The body of a digits request whose one input is `tensor` (a JSON
/// object's inside, without braces).
fn one_input(tensor: &str) -> Vec<u8> {
    format!(r#"{{"inputs":[{{{tensor}}}]}}"#).into_bytes()
}

/// A binary request: `json` as the header, `binary` after it, and the
/// header length to send.
fn with_binary(json: &str, binary: &[u8]) -> (Vec<u8>, String) {
    let mut body = json.as_bytes().to_vec();
    body.extend_from_slice(binary);
    (body, json.len().to_string())
}

fn fp32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

const BINARY_64: &str = r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":256}}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_a_4xx_naming_the_problem() {
    let gateway = TestGateway::start(DIGITS).await;
    let sixty_four = vec!["1"; 64].join(",");
    let nan_input = {
        let mut values = vec![1.0f32; 64];
        values[5] = f32::NAN;
        fp32_bytes(values)
    };
    let inf_input = {
        let mut values = vec![1.0f32; 64];
        values[63] = f32::NEG_INFINITY;
        fp32_bytes(values)
    };
    let json_header = |json: &str| (json.as_bytes().to_vec(), json.len().to_string());
    let (truncated, truncated_header) = with_binary(BINARY_64, &[0u8; 100]);
    let (trailing, trailing_header) = with_binary(BINARY_64, &[0u8; 260]);
    let (nan, nan_header) = with_binary(BINARY_64, &nan_input);
    let (inf, inf_header) = with_binary(BINARY_64, &inf_input);
    let (bad_bool, bad_bool_header) = with_binary(
        r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"BOOL","parameters":{"binary_data_size":2}}]}"#,
        &[0, 9],
    );
    let (huge_size, huge_size_header) = json_header(
        r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":18446744073709551615}}]}"#,
    );
    let (mid_json, _) = with_binary(BINARY_64, &[0u8; 256]);
    let deep = format!(
        r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":{}{}}}]}}"#,
        "[".repeat(500),
        "]".repeat(500)
    );

    // (what, path, headers, body, status, words the error must contain)
    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, String)>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        ("non-JSON", INFER, vec![], b"hello".to_vec(), 400, "not valid JSON"),
        ("empty body", INFER, vec![], Vec::new(), 400, "not valid JSON"),
        ("invalid UTF-8 body", INFER, vec![], vec![0xff, 0xfe, 0x00, 0x80], 400, "not valid JSON"),
        (
            "invalid UTF-8 in a string",
            INFER,
            vec![],
            b"{\"inputs\":[{\"name\":\"in\xc3\x28\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[1]}]}".to_vec(),
            400,
            "not valid JSON",
        ),
        ("JSON of the wrong shape", INFER, vec![], br#"{"inputs":{}}"#.to_vec(), 400, "does not follow the v2 protocol"),
        ("no inputs field", INFER, vec![], b"{}".to_vec(), 400, "missing field `inputs`"),
        ("no inputs", INFER, vec![], br#"{"inputs":[]}"#.to_vec(), 400, "no inputs"),
        (
            "wrong datatype",
            INFER,
            vec![],
            one_input(&format!(r#""name":"input","shape":[1,64],"datatype":"INT32","data":[{sixty_four}]"#)),
            400,
            "expects FP32",
        ),
        (
            "unknown datatype",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1],"datatype":"FLOAT32","data":[1]"#),
            400,
            "not a v2 datatype",
        ),
        (
            "unsupported datatype",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1],"datatype":"BYTES","data":["a"]"#),
            400,
            "not supported",
        ),
        (
            "element count disagrees with the shape",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1,64],"datatype":"FP32","data":[1,2,3]"#),
            400,
            "needs 64 elements but 3 were given",
        ),
        (
            "shape the model does not take",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[2,32],"datatype":"FP32","data":[1]"#),
            400,
            "needs 64 elements",
        ),
        (
            "shape the model does not take (consistent data)",
            INFER,
            vec![],
            one_input(&format!(r#""name":"input","shape":[64,1],"datatype":"FP32","data":[{sixty_four}]"#)),
            400,
            "expects [-1, 64]",
        ),
        (
            "negative dimension",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[-1,64],"datatype":"FP32","data":[1]"#),
            400,
            "shape dimension -1 is not a size",
        ),
        (
            "fractional dimension",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1.5,64],"datatype":"FP32","data":[1]"#),
            400,
            "shape dimension 1.5 is not a size",
        ),
        (
            "shape product overflows",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[4294967296,4294967296,2],"datatype":"FP32","data":[1]"#),
            400,
            "too many elements",
        ),
        (
            "huge declared shape",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1000000,1000000],"datatype":"FP32","data":[1]"#),
            413,
            "server.max_tensor_elements",
        ),
        (
            "batch over max_batch_size",
            INFER,
            vec![],
            one_input(&format!(
                r#""name":"input","shape":[257,64],"datatype":"FP32","data":[{}]"#,
                vec!["0"; 257 * 64].join(",")
            )),
            400,
            "exceeds the model's max_batch_size 256",
        ),
        (
            "NaN literal",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1,1],"datatype":"FP32","data":[NaN]"#),
            400,
            "not valid JSON",
        ),
        (
            "Infinity literal",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1,1],"datatype":"FP32","data":[-Infinity]"#),
            400,
            "not valid JSON",
        ),
        (
            "number beyond FP32",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1,2],"datatype":"FP32","data":[1,1e39]"#),
            400,
            "out of range for FP32",
        ),
        (
            "number beyond any float",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1,1],"datatype":"FP32","data":[1e400]"#),
            400,
            "not valid JSON",
        ),
        (
            "string element",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1,2],"datatype":"FP32","data":[1,"2"]"#),
            400,
            "not valid JSON",
        ),
        (
            "integer out of range",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1,2],"datatype":"UINT8","data":[1,256]"#),
            400,
            "element 1 is not a valid UINT8",
        ),
        ("data nested too deep", INFER, vec![], deep.into_bytes(), 400, "not valid JSON"),
        (
            "NaN in binary FP32",
            INFER,
            vec![(BINARY_HEADER_LENGTH, nan_header)],
            nan,
            400,
            "element 5 is NaN",
        ),
        (
            "infinity in binary FP32",
            INFER,
            vec![(BINARY_HEADER_LENGTH, inf_header)],
            inf,
            400,
            "element 63 is -inf",
        ),
        (
            "duplicate input names",
            INFER,
            vec![],
            format!(
                r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{sixty_four}]}},{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{sixty_four}]}}]}}"#
            )
            .into_bytes(),
            400,
            "appears more than once",
        ),
        (
            "unknown input",
            INFER,
            vec![],
            one_input(r#""name":"pixels","shape":[1,1],"datatype":"FP32","data":[1]"#),
            400,
            "unknown input \"pixels\"",
        ),
        (
            "unknown output",
            INFER,
            vec![],
            format!(
                r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{sixty_four}]}}],"outputs":[{{"name":"logits"}}]}}"#
            )
            .into_bytes(),
            400,
            "unknown output \"logits\"",
        ),
        (
            "both data and binary_data_size",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1,1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}"#),
            400,
            "both",
        ),
        (
            "neither data nor binary_data_size",
            INFER,
            vec![],
            one_input(r#""name":"input","shape":[1,1],"datatype":"FP32""#),
            400,
            "neither",
        ),
        (
            "binary_data_size disagrees with the shape",
            INFER,
            vec![(BINARY_HEADER_LENGTH, BINARY_64.len().to_string())],
            BINARY_64.replace("256", "255").into_bytes(),
            400,
            "binary_data_size is 255 bytes",
        ),
        (
            "huge binary_data_size",
            INFER,
            vec![(BINARY_HEADER_LENGTH, huge_size_header)],
            huge_size,
            400,
            "binary_data_size is 18446744073709551615",
        ),
        (
            "truncated binary section",
            INFER,
            vec![(BINARY_HEADER_LENGTH, truncated_header)],
            truncated,
            400,
            "truncated",
        ),
        (
            "binary bytes no tensor claims",
            INFER,
            vec![(BINARY_HEADER_LENGTH, trailing_header)],
            trailing,
            400,
            "no tensor claims",
        ),
        (
            "BOOL byte other than 0 and 1",
            INFER,
            vec![(BINARY_HEADER_LENGTH, bad_bool_header)],
            bad_bool,
            400,
            "found 9",
        ),
        (
            "header length not a number",
            INFER,
            vec![(BINARY_HEADER_LENGTH, "abc".into())],
            mid_json.clone(),
            400,
            "Inference-Header-Content-Length",
        ),
        (
            "header length negative",
            INFER,
            vec![(BINARY_HEADER_LENGTH, "-1".into())],
            mid_json.clone(),
            400,
            "Inference-Header-Content-Length",
        ),
        (
            "header length beyond usize",
            INFER,
            vec![(BINARY_HEADER_LENGTH, "99999999999999999999999".into())],
            mid_json.clone(),
            400,
            "Inference-Header-Content-Length",
        ),
        (
            "header length empty",
            INFER,
            vec![(BINARY_HEADER_LENGTH, String::new())],
            mid_json.clone(),
            400,
            "Inference-Header-Content-Length",
        ),
        (
            "header length beyond the body",
            INFER,
            vec![(BINARY_HEADER_LENGTH, "100000".into())],
            mid_json.clone(),
            400,
            "but the body has only",
        ),
        (
            "header length zero",
            INFER,
            vec![(BINARY_HEADER_LENGTH, "0".into())],
            mid_json.clone(),
            400,
            "not valid JSON",
        ),
        (
            "header length inside the JSON",
            INFER,
            vec![(BINARY_HEADER_LENGTH, "40".into())],
            mid_json.clone(),
            400,
            "not valid JSON",
        ),
        (
            "timeout parameter of the wrong type",
            INFER,
            vec![],
            format!(
                r#"{{"parameters":{{"timeout":"soon"}},"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{sixty_four}]}}]}}"#
            )
            .into_bytes(),
            400,
            "parameter \"timeout\"",
        ),
        (
            "binary_data_output of the wrong type",
            INFER,
            vec![],
            format!(
                r#"{{"parameters":{{"binary_data_output":"yes"}},"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{sixty_four}]}}]}}"#
            )
            .into_bytes(),
            400,
            "binary_data_output",
        ),
        (
            "deadline header not a number",
            INFER,
            vec![("switchyard-timeout-ms", "99999999999999999999999".into())],
            b"{}".to_vec(),
            400,
            "switchyard-timeout-ms",
        ),
        ("unknown model", "/v2/models/nope/infer", vec![], b"{}".to_vec(), 404, "unknown model \"nope\""),
        ("unknown version", "/v2/models/digits/versions/9/infer", vec![], b"{}".to_vec(), 404, "no version \"9\""),
        ("version not a number", "/v2/models/digits/versions/latest/infer", vec![], b"{}".to_vec(), 404, "no version"),
    ];
    // A body over max_request_bytes is refused from its Content-Length,
    // before it is read. Only the head is sent: a client still writing a
    // megabyte when the server answers and closes can see a broken pipe
    // instead of the answer.
    let head = format!(
        "POST {INFER} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: 1048577\r\n\r\n"
    );
    let reply = raw(gateway.address, head.into_bytes()).await.reply();
    assert_eq!(
        reply.status, 413,
        "body over max_request_bytes: {}",
        reply.head
    );
    let error = reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("server.max_request_bytes"), "{error}");

    let count = cases.len();
    for (what, path, headers, body, status, words) in cases {
        let headers: Vec<(&str, String)> = headers;
        let reply = send("POST", &gateway.url(path), &headers, body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{what}"
        );
        let error = reply.error();
        assert!(
            error.contains(words),
            "{what}: {error:?} should mention {words:?}"
        );
    }
    assert!(count >= 45, "the corpus lost cases: {count}");
    assert_still_serves(&gateway).await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_ascii_header_length_is_refused() {
    let gateway = TestGateway::start(DIGITS).await;
    let mut request = post_bytes(INFER, &[], None, b"{}");
    // Insert a header with a Latin-1 byte, which no HTTP client library sends.
    let at = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 2;
    request.splice(
        at..at,
        [BINARY_HEADER_LENGTH.as_bytes(), b": 1\xe92\r\n"].concat(),
    );
    let reply = raw(gateway.address, request).await.reply();
    assert_eq!(reply.status, 400, "{}", reply.head);
    assert!(reply.error().contains("not ASCII"), "{}", reply.error());
    assert_still_serves(&gateway).await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_lengths_end_in_an_answer_not_a_hang() {
    let gateway = TestGateway::start(DIGITS).await;
    let body = encode_request(&fp32_request(vec![1, 64], |_| 1.0), false)
        .expect("encodes")
        .bytes;
    let bound = Duration::from_secs(20);

    // Shorter than the body: the gateway reads what was declared, which is
    // cut-off JSON.
    let shorter = post_bytes(INFER, &[], Some(body.len() / 2), &body);
    let reply = raw(gateway.address, shorter).await.reply();
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().contains("not valid JSON"),
        "{}",
        reply.error()
    );

    // Longer than the body, connection kept open: the body read times out.
    let longer = post_bytes(INFER, &[], Some(body.len() + 100), &body);
    let reply = raw_exchange(gateway.address, &[Step::Send(longer.clone())], bound)
        .await
        .reply();
    assert_eq!(reply.status, 408, "{}", reply.head);
    assert!(
        reply.error().contains("server.body_read_timeout_ms"),
        "{}",
        reply.error()
    );

    // Longer than the body, then the client stops sending: the body is cut.
    let reply = raw_exchange(
        gateway.address,
        &[Step::Send(longer), Step::CloseWrite],
        bound,
    )
    .await
    .reply();
    assert_eq!(reply.status, 400, "{}", reply.head);
    assert!(
        reply.error().contains("cannot read the request body"),
        "{}",
        reply.error()
    );

    // A Content-Length that is not a number never becomes a request: hyper
    // answers 400 itself and closes.
    let mut bad = post_bytes(INFER, &[], None, &body);
    let text = String::from_utf8_lossy(&bad).replacen(
        &format!("content-length: {}", body.len()),
        "content-length: 12abc",
        1,
    );
    bad = text.into_bytes();
    match raw(gateway.address, bad).await {
        RawOutcome::Reply(reply) => assert_eq!(reply.status, 400, "{}", reply.head),
        RawOutcome::Closed => {}
    }

    // A broken chunked body is a body error, answered in JSON.
    let chunked = format!(
        "POST {INFER} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    let reply = raw(gateway.address, chunked.into_bytes()).await.reply();
    assert_eq!(reply.status, 400, "{}", reply.head);
    assert!(
        reply.error().contains("cannot read the request body"),
        "{}",
        reply.error()
    );
    assert_still_serves(&gateway).await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_a_stalled_head_is_closed() {
    let gateway = TestGateway::start(DIGITS).await;
    // Slowloris on the body: 1 byte every 50 ms of a 1000-byte body would
    // take 50 s; the gateway gives up after body_read_timeout_ms (400 ms).
    let mut steps = vec![Step::Send(post_bytes(INFER, &[], Some(1000), b""))];
    for _ in 0..200 {
        steps.push(Step::Send(b" ".to_vec()));
        steps.push(Step::Pause(Duration::from_millis(50)));
    }
    let reply = raw_exchange(gateway.address, &steps, Duration::from_secs(20))
        .await
        .reply();
    assert_eq!(reply.status, 408, "{}", reply.head);
    assert!(
        reply.error().contains("did not arrive"),
        "{}",
        reply.error()
    );

    // Slowloris on the head: half a request line, then nothing. The
    // connection is closed after header_read_timeout_ms (2 s).
    let stalled = raw_exchange(
        gateway.address,
        &[Step::Send(b"POST /v2/models/digits/in".to_vec())],
        Duration::from_secs(20),
    )
    .await;
    if let RawOutcome::Reply(reply) = stalled {
        assert_eq!(reply.status, 408, "{}", reply.head);
    }
    // A connection that sends nothing at all is closed after the same time.
    let silent = raw_exchange(gateway.address, &[], Duration::from_secs(20)).await;
    assert!(matches!(silent, RawOutcome::Closed), "{silent:?}");
    assert_still_serves(&gateway).await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_the_size_or_count_limit_get_431() {
    let gateway = TestGateway::start(DIGITS).await;
    let big = "x".repeat(10_000);
    let too_large = format!("GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let reply = raw(gateway.address, too_large.into_bytes()).await.reply();
    assert_eq!(reply.status, 431, "{}", reply.head);

    let mut many = String::from("GET /v2/health/live HTTP/1.1\r\nhost: x\r\n");
    for i in 0..60 {
        many.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let reply = raw(gateway.address, many.into_bytes()).await.reply();
    assert_eq!(reply.status, 431, "{}", reply.head);

    // Within the limits the same request is fine.
    let fine = "GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-small: 1\r\n\r\n";
    let reply = raw(gateway.address, fine.as_bytes().to_vec()).await.reply();
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert_still_serves(&gateway).await;
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_closed_at_once() {
    let gateway = TestGateway::start(
        &DIGITS.replace("max_headers = 50", "max_headers = 50\nmax_connections = 2"),
    )
    .await;
    let live = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n";
    // Two keep-alive connections, each proven open by a request.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(gateway.address)
            .await
            .expect("connect");
        stream.write_all(live).await.expect("write");
        let reply = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
            .await
            .expect("answered")
            .reply();
        assert_eq!(reply.status, 200);
        held.push(stream);
    }
    // The third is accepted and closed without an answer.
    let third = raw_exchange(
        gateway.address,
        &[Step::Send(live.to_vec())],
        Duration::from_secs(10),
    )
    .await;
    assert!(matches!(third, RawOutcome::Closed), "{third:?}");
    let metrics = {
        let stream = held.last_mut().expect("held");
        let admin = b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n";
        stream.write_all(admin).await.expect("write");
        tokio::time::timeout(Duration::from_secs(10), read_response(stream))
            .await
            .expect("answered")
            .reply()
    };
    assert!(
        String::from_utf8_lossy(&metrics.body).contains("switchyard_connections_refused_total"),
        "the refusal is counted"
    );
    // Closing one frees its slot (released when the server sees the close).
    drop(held.remove(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match raw_exchange(
            gateway.address,
            &[Step::Send(live.to_vec())],
            Duration::from_secs(10),
        )
        .await
        {
            RawOutcome::Reply(reply) => {
                assert_eq!(reply.status, 200);
                break;
            }
            RawOutcome::Closed => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slot was never released"
                );
                tokio::task::yield_now().await;
            }
        }
    }
    drop(held);
    gateway.shutdown().await;
}

/// A stand-in backend that serves `pair` (inputs `a` FP32 [-1,2] and `b`
/// INT64 [-1]) and either echoes the inputs back as outputs or never
/// answers.
#[derive(Debug)]
struct StandIn {
    info: Arc<ModelInfo>,
    hang: bool,
}

impl StandIn {
    fn new(hang: bool) -> Self {
        let a = TensorSpec {
            name: "a".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 2],
        };
        let b = TensorSpec {
            name: "b".into(),
            datatype: DataType::Int64,
            shape: vec![-1],
        };
        let info = ModelInfo {
            name: "pair".into(),
            platform: "test".into(),
            max_batch_size: Some(8),
            versions: BTreeMap::from([(
                1,
                Arc::new(TensorSpecs {
                    inputs: vec![a.clone(), b.clone()],
                    outputs: vec![a, b],
                }),
            )]),
        };
        Self {
            info: Arc::new(info),
            hang,
        }
    }
}

impl Backend for StandIn {
    fn name(&self) -> &str {
        "standin"
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }
    fn models(&self) -> Vec<Arc<ModelInfo>> {
        vec![Arc::clone(&self.info)]
    }
    fn ready(&self) -> bool {
        true
    }
    fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            name: "standin".into(),
            kind: BackendKind::Local,
            ready: true,
            in_flight: 0,
            queued: 0,
            concurrency: 1,
            capacity: 64,
            headroom: 64,
            max_payload_bytes: None,
            unready_reason: None,
            cold_start_ms: None,
            memory_mb: None,
            shares_host_cpu: false,
        }
    }
    fn infer(&self, job: InferenceJob) -> BackendFuture<'_, Result<InferenceResult, BackendError>> {
        let hang = self.hang;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok(InferenceResult {
                outputs: job.request.inputs,
                timing: Timing::default(),
            })
        })
    }
}

async fn stand_in_gateway(server: &str, hang: bool) -> TestGateway {
    let text = format!("[server]\n{server}\n[backends.local]\nmodels = [\"digits\"]\n");
    let config = Config::parse(&text, "(test)", &workspace()).expect("config");
    let prometheus = switchyard_scheduler::telemetry::prometheus().expect("metrics");
    let backend: Arc<dyn Backend> = Arc::new(StandIn::new(hang));
    let gateway = Gateway::with_backends(&config, vec![backend], prometheus).expect("gateway");
    TestGateway::serve(Arc::new(gateway)).await
}

const PAIR: &str = "/v2/models/pair/infer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_inputs_and_batch_disagreements_are_named() {
    let gateway = stand_in_gateway("", false).await;
    let cases: Vec<(&str, u16, &str)> = vec![
        (
            r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#,
            400,
            "missing input \"b\"",
        ),
        (
            r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"b","shape":[2],"datatype":"INT64","data":[1,2]}]}"#,
            400,
            "disagree on the batch size",
        ),
        (
            r#"{"inputs":[{"name":"a","shape":[9,2],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18]},{"name":"b","shape":[9],"datatype":"INT64","data":[1,2,3,4,5,6,7,8,9]}]}"#,
            400,
            "max_batch_size 8",
        ),
    ];
    for (body, status, words) in cases {
        let reply = send("POST", &gateway.url(PAIR), &[], body.as_bytes().to_vec()).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.text());
        assert!(
            reply.error().contains(words),
            "{:?} should mention {words:?}",
            reply.error()
        );
    }
    let good = r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"b","shape":[1],"datatype":"INT64","data":[7]}]}"#;
    let reply = send("POST", &gateway.url(PAIR), &[], good.as_bytes().to_vec()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_inputs_pass_through_when_allowed() {
    let gateway = stand_in_gateway("allow_non_finite_inputs = true", false).await;
    let json = r#"{"inputs":[{"name":"a","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}},{"name":"b","shape":[1],"datatype":"INT64","data":[7]}],"outputs":[{"name":"a","parameters":{"binary_data":true}},{"name":"b"}]}"#;
    let (body, header) = with_binary(json, &fp32_bytes([f32::NAN, f32::INFINITY]));
    let reply = send(
        "POST",
        &gateway.url(PAIR),
        &[(BINARY_HEADER_LENGTH, header)],
        body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let response =
        decode_response(&reply.body, reply.header(BINARY_HEADER_LENGTH)).expect("v2 response");
    let TensorData::Fp32(values) = &response.outputs[0].data else {
        panic!("FP32 output")
    };
    assert!(
        values[0].is_nan() && values[1] == f32::INFINITY,
        "{values:?}"
    );

    // JSON has no NaN: in a JSON response they are written as null.
    let json = json.replace(
        r#""parameters":{"binary_data":true}"#,
        r#""parameters":{"binary_data":false}"#,
    );
    let (body, header) = with_binary(&json, &fp32_bytes([f32::NAN, 1.0]));
    let reply = send(
        "POST",
        &gateway.url(PAIR),
        &[(BINARY_HEADER_LENGTH, header)],
        body,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["outputs"][0]["data"],
        serde_json::json!([null, 1.0])
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_deadlines_are_capped_by_max_request_timeout() {
    let gateway = stand_in_gateway(
        "request_timeout_ms = 100\nmax_request_timeout_ms = 300",
        true,
    )
    .await;
    let body = |parameters: &str| {
        format!(
            r#"{{{parameters}"inputs":[{{"name":"a","shape":[1,2],"datatype":"FP32","data":[1,2]}},{{"name":"b","shape":[1],"datatype":"INT64","data":[7]}}]}}"#
        )
        .into_bytes()
    };
    // (headers, body, words the error must contain)
    type Case = (Vec<(&'static str, String)>, Vec<u8>, &'static str);
    let cases: Vec<Case> = vec![
        (vec![], body(""), "deadline of 100 ms"),
        (
            vec![("switchyard-timeout-ms", "600000".into())],
            body(""),
            "deadline of 300 ms",
        ),
        (
            vec![],
            body(r#""parameters":{"timeout":18446744073709551615},"#),
            "deadline of 300 ms",
        ),
        (
            vec![("switchyard-timeout-ms", "150".into())],
            body(""),
            "deadline of 150 ms",
        ),
    ];
    for (headers, body, words) in cases {
        let reply = send("POST", &gateway.url(PAIR), &headers, body).await;
        assert_eq!(reply.status, 504, "{}", reply.text());
        assert!(
            reply.error().contains(words),
            "{:?} should mention {words:?}",
            reply.error()
        );
    }
    assert_eq!(get(&gateway.url("/v2/health/live")).await.status, 200);
    gateway.shutdown().await;
}
