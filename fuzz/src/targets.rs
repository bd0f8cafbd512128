//! What each fuzz target does with its input. The same functions run under
//! libFuzzer (`make fuzz`, nightly) and in the stable corpus-replay test, so
//! a crash found by either is a failing test in both.
//!
//! Beyond "no panic", the targets check invariants: a decoded request's
//! element counts agree with its shapes and the limits, and it survives
//! encoding and decoding again unchanged.

use std::path::{Path, PathBuf};

use switchyard_protocol::{
    DataType, DecodeLimits, InferRequest, InferResponse, ProtocolError, TensorData, TensorSpec,
    decode_request, decode_request_with, decode_request_without_scanner, decode_response,
    encode_request, encode_response, validate_inputs,
};
use switchyard_scheduler::Config;
use switchyard_scheduler::policy::spec::{PolicyFile, PolicySet};

/// The gateway's kind of limits, small enough that the fuzzer reaches them.
const LIMITS: DecodeLimits = DecodeLimits {
    max_elements: 1 << 16,
    allow_non_finite: false,
};

/// A v2 JSON request body (no binary part), and the same bytes as a
/// response body.
pub fn v2_json(data: &[u8]) {
    let decoded = decode_request_with(data, None, &LIMITS);
    check_same_as_serde(&decoded, data, None, &LIMITS);
    if let Ok(request) = decoded {
        check_request(&request);
    }
    let unlimited = decode_request(data, None);
    check_same_as_serde(&unlimited, data, None, &DecodeLimits::UNLIMITED);
    if let Ok(response) = decode_response(data, None) {
        check_response(response);
    }
}

/// A body with the binary tensor extension. The first two bytes choose the
/// `Inference-Header-Content-Length` (modulo the body's length + 1), the
/// third how it is written; the rest is the body.
pub fn binary_tensor(data: &[u8]) {
    let [low, high, style, body @ ..] = data else {
        return;
    };
    let length = usize::from(u16::from_le_bytes([*low, *high])) % (body.len() + 1);
    let header = match style % 4 {
        0 => length.to_string(),
        1 => format!(" {length} "),
        2 => format!("+{length}"),
        _ => format!("{length}x"),
    };
    let decoded = decode_request_with(body, Some(&header), &LIMITS);
    check_same_as_serde(&decoded, body, Some(&header), &LIMITS);
    if let Ok(request) = decoded {
        check_request(&request);
    }
    if let Ok(response) = decode_response(body, Some(&header)) {
        check_response(response);
    }
    for datatype in [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ] {
        let size = datatype.element_size().unwrap_or(1);
        let whole = &body[..body.len() - body.len() % size];
        if let Ok(decoded) = TensorData::from_le_bytes("t", datatype, whole) {
            assert_eq!(decoded.len() * size, whole.len());
            let mut again = Vec::new();
            decoded.write_le(&mut again);
            // BOOL reads only bytes 0 and 1, so every type writes back
            // exactly the bytes it read.
            assert_eq!(again, whole, "{datatype}");
        }
    }
}

/// The decoder's fast path for JSON headers must give exactly what the
/// plain serde decoder gives, the same request or the same error.
fn check_same_as_serde(
    decoded: &Result<InferRequest, ProtocolError>,
    body: &[u8],
    header_length: Option<&str>,
    limits: &DecodeLimits,
) {
    let serde = decode_request_without_scanner(body, header_length, limits);
    // Debug output tells -0.0 from 0.0 and prints every float exactly.
    assert_eq!(format!("{decoded:?}"), format!("{serde:?}"));
}

/// A gateway config file, and the same text as a policy file. Keys that
/// name files are pointed at the real model repository or dropped, so the
/// target reads nothing else from disk.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let root = workspace();
    match text.parse::<toml::Table>() {
        Ok(mut table) => {
            confine_paths(&mut table);
            if let Ok(confined) = toml::to_string(&table) {
                let _ = Config::parse(&confined, "(fuzz)", &root);
            }
        }
        // Not TOML: the parser stops before validation touches any path.
        Err(_) => {
            let _ = Config::parse(text, "(fuzz)", &root);
        }
    }
    if let Ok(file) = PolicyFile::parse(text) {
        let backends = ["local", "container", "lambda"].map(String::from);
        let models = ["digits", "fashion_cnn", "xception"].map(String::from);
        let _ = PolicySet::build(&file, &backends, &models, "(fuzz)");
    }
}

/// The workspace root (the fuzz crate and the scheduler both sit one level
/// below it).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Points `models.repository` at the real repository and drops the keys
/// that name other files (policy file, token files).
fn confine_paths(table: &mut toml::Table) {
    if let Some(toml::Value::Table(models)) = table.get_mut("models")
        && models.contains_key("repository")
    {
        models.insert("repository".into(), "models/repository".into());
    }
    if let Some(toml::Value::Table(placement)) = table.get_mut("placement") {
        placement.remove("policy_file");
    }
    if let Some(toml::Value::Table(server)) = table.get_mut("server")
        && let Some(toml::Value::Table(auth)) = server.get_mut("auth")
    {
        auth.retain(|key, _| !key.ends_with("_file"));
    }
}

/// Invariants of a request the decoder accepted.
fn check_request(request: &InferRequest) {
    assert!(!request.inputs.is_empty());
    let mut total: u64 = 0;
    for tensor in &request.inputs {
        let count = tensor.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        assert_eq!(count, Some(tensor.data.len() as u64), "{}", tensor.name);
        total += tensor.data.len() as u64;
        if let TensorData::Fp32(values) = &tensor.data {
            assert!(values.iter().all(|v| v.is_finite()));
        }
        if let TensorData::Fp64(values) = &tensor.data {
            assert!(values.iter().all(|v| v.is_finite()));
        }
    }
    assert!(total <= LIMITS.max_elements);
    // Binary encoding is exact: decoding it gives the same request back.
    let binary = encode_request(request, true).expect("a decoded request encodes");
    let header = binary.json_length.map(|n| n.to_string());
    let again = decode_request_with(&binary.bytes, header.as_deref(), &LIMITS)
        .expect("an encoded request decodes");
    assert_eq!(&again, request);
    // JSON encoding keeps names, shapes and datatypes.
    let json = encode_request(request, false).expect("encodes as JSON");
    let again = decode_request_with(&json.bytes, None, &LIMITS).expect("JSON decodes");
    assert_eq!(again.inputs.len(), request.inputs.len());
    for (a, b) in again.inputs.iter().zip(&request.inputs) {
        assert_eq!(
            (&a.name, &a.shape, a.datatype()),
            (&b.name, &b.shape, b.datatype())
        );
    }
    // Validation against a model's specs never panics.
    let spec = |name: &str, datatype, shape: Vec<i64>| TensorSpec {
        name: name.into(),
        datatype,
        shape,
    };
    let inputs = [spec("input", DataType::Fp32, vec![-1, 64])];
    let outputs = [
        spec("label", DataType::Int64, vec![-1]),
        spec("probabilities", DataType::Fp32, vec![-1, 10]),
    ];
    let _ = validate_inputs(&inputs, &outputs, Some(256), request);
    let _ = validate_inputs(&inputs, &outputs, None, request);
}

/// A decoded response encodes again and decodes to itself in binary form.
fn check_response(response: InferResponse) {
    let asked = InferRequest {
        binary_data_output: true,
        ..InferRequest::default()
    };
    let body = encode_response(&response, &asked).expect("a decoded response encodes");
    let header = body.json_length.map(|n| n.to_string());
    let again = decode_response(&body.bytes, header.as_deref()).expect("decodes");
    // NaN != NaN: compare the bytes of the data rather than the values.
    assert_eq!(again.outputs.len(), response.outputs.len());
    for (a, b) in again.outputs.iter().zip(&response.outputs) {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.data.write_le(&mut x);
        b.data.write_le(&mut y);
        assert_eq!((&a.name, &a.shape, x), (&b.name, &b.shape, y));
    }
}
