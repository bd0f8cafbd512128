//! The limits a decoder enforces for the gateway: the element count checked
//! on declared shapes before any data is decoded, non-finite floats, and
//! shapes and numbers the protocol cannot mean.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use switchyard_protocol::{
    DecodeLimits, ProtocolError, TensorData, decode_request, decode_request_with,
};

const STRICT: DecodeLimits = DecodeLimits {
    max_elements: 1000,
    allow_non_finite: false,
};

/// A body with one binary FP32 tensor of `shape` declaring `size` bytes,
/// followed by `data`, and its header length.
fn binary_body(shape: &str, size: u64, data: &[u8]) -> (Vec<u8>, String) {
    let json = format!(
        r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"FP32","parameters":{{"binary_data_size":{size}}}}}]}}"#
    );
    let mut body = json.clone().into_bytes();
    body.extend_from_slice(data);
    (body, json.len().to_string())
}

#[test]
fn declared_elements_over_the_limit_are_refused_before_decoding() {
    // 2^40 FP32 elements would be 4 TiB; the body holds 4 bytes.
    let (body, header) = binary_body("[1099511627776]", 4_398_046_511_104, &[0; 4]);
    let err = decode_request_with(&body, Some(&header), &STRICT).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::TooManyElements {
            elements: 1 << 40,
            limit: 1000
        }
    );
    assert!(err.to_string().contains("limit of 1000"), "{err}");
    // The same request without a limit fails on the size, not by allocating.
    let err = decode_request(&body, Some(&header)).unwrap_err();
    assert!(
        matches!(err, ProtocolError::BinaryTruncated { .. }),
        "{err:?}"
    );
}

#[test]
fn the_limit_counts_every_input_together() {
    let body = br#"{"inputs":[
        {"name":"a","shape":[600],"datatype":"UINT8","parameters":{"binary_data_size":600}},
        {"name":"b","shape":[600],"datatype":"UINT8","parameters":{"binary_data_size":600}}]}"#;
    let err = decode_request_with(body, None, &STRICT).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::TooManyElements {
            elements: 1200,
            limit: 1000
        }
    );
    // At the limit exactly the limit passes; the data count is checked next.
    let body = br#"{"inputs":[{"name":"a","shape":[10,100],"datatype":"BOOL","data":[]}]}"#;
    let err = decode_request_with(body, None, &STRICT).unwrap_err();
    assert!(
        matches!(err, ProtocolError::ElementCount { expected: 1000, .. }),
        "{err:?}"
    );
}

#[test]
fn a_json_shape_over_the_limit_is_refused_whatever_its_data() {
    let body =
        br#"{"inputs":[{"name":"x","shape":[1000000000],"datatype":"FP64","data":[1,2,3]}]}"#;
    let err = decode_request_with(body, None, &STRICT).unwrap_err();
    assert!(
        matches!(err, ProtocolError::TooManyElements { .. }),
        "{err:?}"
    );
}

#[test]
fn negative_and_fractional_dimensions_name_the_tensor() {
    for (shape, value) in [
        ("[1,-1]", "-1"),
        ("[2.5]", "2.5"),
        ("[-9223372036854775808]", "-9223372036854775808"),
    ] {
        let body = format!(
            r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"FP32","data":[1]}}]}}"#
        );
        let err = decode_request(body.as_bytes(), None).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::BadDimension {
                tensor: "x".into(),
                value: value.into()
            },
            "{shape}"
        );
        assert!(err.to_string().contains("not a size"), "{err}");
    }
}

#[test]
fn shape_products_that_overflow_are_refused() {
    let body = br#"{"inputs":[{"name":"x","shape":[18446744073709551615,2],"datatype":"UINT8","data":[1]}]}"#;
    let err = decode_request_with(body, None, &STRICT).unwrap_err();
    assert!(
        matches!(err, ProtocolError::ShapeOverflow { .. }),
        "{err:?}"
    );
}

#[test]
fn non_finite_binary_floats_are_refused_unless_allowed() {
    let mut data = Vec::new();
    for v in [1.0f32, f32::NAN, f32::INFINITY] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    let (body, header) = binary_body("[3]", 12, &data);
    let err = decode_request_with(&body, Some(&header), &STRICT).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::NonFinite {
            tensor: "x".into(),
            index: 1,
            value: "NaN".into()
        }
    );
    let allowed = DecodeLimits {
        allow_non_finite: true,
        ..STRICT
    };
    let request = decode_request_with(&body, Some(&header), &allowed).expect("allowed");
    let TensorData::Fp32(values) = &request.inputs[0].data else {
        panic!("FP32 data")
    };
    assert!(values[1].is_nan() && values[2] == f32::INFINITY);
}

#[test]
fn json_numbers_beyond_the_float_range_are_refused() {
    let body = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,1e39]}]}"#;
    let err = decode_request(body, None).unwrap_err();
    assert!(
        matches!(err, ProtocolError::BadElement { index: 1, ref reason, .. } if reason.contains("out of range for FP32")),
        "{err:?}"
    );
    // 1e39 fits FP64.
    let body = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP64","data":[1,1e39]}]}"#;
    assert!(decode_request(body, None).is_ok());
    // NaN, Infinity and 1e400 are not JSON numbers at all.
    for data in ["[NaN]", "[Infinity]", "[-Infinity]", "[1e400]"] {
        let body =
            format!(r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP64","data":{data}}}]}}"#);
        let err = decode_request(body.as_bytes(), None).unwrap_err();
        assert!(matches!(err, ProtocolError::Json(_)), "{data}: {err:?}");
    }
}

#[test]
fn well_formed_json_of_the_wrong_shape_is_a_schema_error() {
    for body in [
        &br#"{}"#[..],
        br#"{"inputs":{}}"#,
        br#"{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}"#,
        br#"[1,2,3]"#,
    ] {
        let err = decode_request(body, None).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Schema(_)),
            "{}: {err:?}",
            String::from_utf8_lossy(body)
        );
    }
    for body in [&b"{"[..], b"not json", b"{\"inputs\":[\xff]}", b""] {
        let err = decode_request(body, None).unwrap_err();
        assert!(
            matches!(err, ProtocolError::Json(_)),
            "{}: {err:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn invalid_utf8_inside_a_string_is_refused() {
    let body =
        b"{\"inputs\":[{\"name\":\"\xc3\x28\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}";
    let err = decode_request(body, None).unwrap_err();
    assert!(matches!(err, ProtocolError::Json(_)), "{err:?}");
}
