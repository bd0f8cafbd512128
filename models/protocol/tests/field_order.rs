//! Tensor data is read while the JSON header is parsed when the tensor's
//! `datatype` and `shape` come before it, and kept as text to read
//! afterwards when they do not. Both ways must give the same tensors and
//! the same errors, and neither may read past the element limit.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_protocol::{
    DecodeLimits, InferRequest, ProtocolError, TensorData, decode_request, decode_request_with,
    decode_response,
};

/// A request with one tensor whose fields are written in the order given.
fn request(fields: &[(&str, &str)]) -> String {
    let tensor: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!(r#""{key}":{value}"#))
        .collect();
    format!(r#"{{"inputs":[{{{}}}]}}"#, tensor.join(","))
}

/// The same tensor in three orders: data last (read ahead), data first and
/// data between datatype and shape (both kept for later).
fn orders(shape: &str, datatype: &str, data: &str) -> [String; 3] {
    let name = ("name", r#""x""#);
    let shape = ("shape", shape);
    let datatype = ("datatype", datatype);
    let data = ("data", data);
    [
        request(&[name, shape, datatype, data]),
        request(&[data, name, shape, datatype]),
        request(&[name, datatype, data, shape]),
    ]
}

fn decode_all(bodies: &[String]) -> Vec<Result<InferRequest, ProtocolError>> {
    bodies
        .iter()
        .map(|body| decode_request(body.as_bytes(), None))
        .collect()
}

#[test]
fn every_field_order_decodes_to_the_same_tensor() {
    let cases = [
        ("[2,2]", r#""FP32""#, "[[0.5,1.25],[-3,4e-2]]"),
        ("[3]", r#""INT64""#, "[-9007199254740993,0,42]"),
        ("[2]", r#""BOOL""#, "[true,false]"),
        ("[1,3]", r#""UINT8""#, "[0,128,255]"),
        ("[]", r#""FP64""#, "7.5"),
    ];
    for (shape, datatype, data) in cases {
        let decoded = decode_all(&orders(shape, datatype, data));
        let first = decoded[0]
            .as_ref()
            .unwrap_or_else(|e| panic!("{data}: {e}"));
        for other in &decoded[1..] {
            assert_eq!(
                other.as_ref().ok(),
                Some(first),
                "{shape} {datatype} {data}"
            );
        }
    }
    let decoded = decode_all(&orders("[2,2]", r#""FP32""#, "[[0.5,1.25],[-3,4e-2]]"));
    assert_eq!(
        decoded[1].as_ref().unwrap().inputs[0].data,
        TensorData::Fp32(vec![0.5, 1.25, -3.0, 0.04])
    );
}

#[test]
fn every_field_order_gives_the_same_error() {
    let cases = [
        // An element out of range: the first bad one is named.
        ("[3]", r#""FP32""#, "[1,1e39,1e40]"),
        // A fraction where an integer is due.
        ("[2]", r#""INT32""#, "[1,2.5]"),
        // More elements than the shape, and fewer.
        ("[2]", r#""FP32""#, "[1,2,3,4]"),
        ("[4]", r#""FP32""#, "[1,2]"),
        // Not numbers at all.
        ("[2]", r#""FP32""#, r#"[1,"two"]"#),
        ("[2]", r#""FP32""#, r#"[1,{"a":[2]}]"#),
        ("[2]", r#""FP32""#, "[1,null]"),
        // No data.
        ("[2]", r#""FP32""#, "null"),
        // A datatype without typed storage, and an unknown one.
        ("[2]", r#""FP16""#, "[1,2]"),
        ("[2]", r#""COMPLEX""#, "[1,2]"),
        // A shape that is not one.
        ("[-2]", r#""FP32""#, "[1,2]"),
    ];
    for (shape, datatype, data) in cases {
        let decoded = decode_all(&orders(shape, datatype, data));
        let first = decoded[0]
            .as_ref()
            .expect_err(&format!("{shape} {datatype} {data} decoded"));
        for other in &decoded[1..] {
            assert_eq!(
                other.as_ref().err(),
                Some(first),
                "{shape} {datatype} {data}"
            );
        }
    }
    let errors: Vec<ProtocolError> = [
        ("[3]", r#""FP32""#, "[1,1e39,1e40]"),
        ("[2]", r#""FP32""#, "[1,2,3,4]"),
        ("[2]", r#""FP32""#, r#"[1,"two"]"#),
        ("[2]", r#""FP32""#, "null"),
    ]
    .iter()
    .map(|(shape, datatype, data)| {
        // The first order: data last, read ahead.
        let [body, ..] = orders(shape, datatype, data);
        decode_request(body.as_bytes(), None).unwrap_err()
    })
    .collect();
    assert!(
        matches!(&errors[0], ProtocolError::BadElement { index: 1, tensor, .. } if tensor == "x"),
        "{:?}",
        errors[0]
    );
    assert!(
        matches!(
            &errors[1],
            ProtocolError::ElementCount {
                expected: 2,
                actual: 4,
                ..
            }
        ),
        "{:?}",
        errors[1]
    );
    assert!(
        matches!(&errors[2], ProtocolError::Json(message) if message.contains("tensor \"x\"") && message.contains("invalid type: string")),
        "{:?}",
        errors[2]
    );
    assert!(
        matches!(&errors[3], ProtocolError::MissingData { tensor } if tensor == "x"),
        "{:?}",
        errors[3]
    );
}

#[test]
fn data_is_not_read_ahead_past_the_element_limit() {
    let limits = DecodeLimits {
        max_elements: 5,
        allow_non_finite: false,
    };
    // Three elements, then four: together over the limit. The second
    // tensor's data holds an element that would be an error of its own;
    // the limit is what is reported, whatever the order of its fields.
    for second in [
        r#"{"name":"b","shape":[4],"datatype":"FP32","data":[1,2,3,1e39]}"#,
        r#"{"data":[1,2,3,1e39],"name":"b","shape":[4],"datatype":"FP32"}"#,
    ] {
        let body = format!(
            r#"{{"inputs":[{{"name":"a","shape":[3],"datatype":"FP32","data":[1,2,3]}},{second}]}}"#
        );
        let err = decode_request_with(body.as_bytes(), None, &limits).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::TooManyElements {
                elements: 7,
                limit: 5
            },
            "{body}"
        );
    }
    // Within the limit both decode.
    let body = r#"{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","data":[1,2]},{"name":"b","shape":[3],"datatype":"INT32","data":[3,4,5]}]}"#;
    let request = decode_request_with(body.as_bytes(), None, &limits).unwrap();
    assert_eq!(request.inputs[1].data, TensorData::Int32(vec![3, 4, 5]));
}

#[test]
fn repeated_fields_are_schema_errors() {
    for body in [
        r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"data":[2]}]}"#,
        r#"{"inputs":[{"name":"x","name":"y","shape":[1],"datatype":"FP32","data":[1]}]}"#,
        r#"{"inputs":[],"inputs":[]}"#,
    ] {
        let err = decode_request(body.as_bytes(), None).unwrap_err();
        assert!(
            matches!(&err, ProtocolError::Schema(message) if message.contains("duplicate field")),
            "{body}: {err:?}"
        );
    }
}

#[test]
fn unknown_fields_are_ignored_and_trailing_text_refused() {
    let body = r#"{"model":"m","inputs":[{"name":"x","shape":[1],"datatype":"FP32","extra":{"a":[1]},"data":[1]}],"later":null}"#;
    let request = decode_request(body.as_bytes(), None).unwrap();
    assert_eq!(request.inputs[0].data, TensorData::Fp32(vec![1.0]));
    let err = decode_request(format!("{body} x").as_bytes(), None).unwrap_err();
    assert!(matches!(err, ProtocolError::Json(_)), "{err:?}");
}

#[test]
fn responses_decode_whatever_the_field_order() {
    let body = r#"{"model_name":"m","outputs":[{"data":[0.25,0.75],"name":"p","datatype":"FP32","shape":[1,2]},{"name":"l","shape":[1],"datatype":"INT64","data":[1]}]}"#;
    let response = decode_response(body.as_bytes(), None).unwrap();
    assert_eq!(response.outputs[0].data, TensorData::Fp32(vec![0.25, 0.75]));
    assert_eq!(response.outputs[1].data, TensorData::Int64(vec![1]));
}
