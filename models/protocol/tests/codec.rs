//! Property tests of the tensor codec: every supported datatype survives a
//! round trip through JSON and through the binary extension, and malformed
//! sizes are rejected with the right error instead of being misread.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use switchyard_protocol::{
    InferRequest, InferResponse, ProtocolError, RequestedOutput, Tensor, TensorData,
    decode_request, decode_response, encode_request, encode_response,
};

/// A shape of up to three dimensions, each in `dims`, and its element count.
fn shape_and_len(dims: std::ops::Range<u64>) -> impl Strategy<Value = (Vec<u64>, usize)> {
    prop::collection::vec(dims, 0..4).prop_map(|shape| {
        let len = shape.iter().product::<u64>() as usize;
        (shape, len)
    })
}

fn finite_f32() -> impl Strategy<Value = f32> {
    prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL | prop::num::f32::ZERO
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO
}

/// Any tensor, empty ones (a zero dimension) included.
fn tensor() -> impl Strategy<Value = Tensor> {
    tensor_with_dims(0..5)
}

/// A tensor with at least one element.
fn nonempty_tensor() -> impl Strategy<Value = Tensor> {
    tensor_with_dims(1..5)
}

fn tensor_with_dims(dims: std::ops::Range<u64>) -> impl Strategy<Value = Tensor> {
    shape_and_len(dims)
        .prop_flat_map(|(shape, len)| {
            let data = prop_oneof![
                prop::collection::vec(any::<bool>(), len).prop_map(TensorData::Bool),
                prop::collection::vec(any::<u8>(), len).prop_map(TensorData::Uint8),
                prop::collection::vec(any::<u16>(), len).prop_map(TensorData::Uint16),
                prop::collection::vec(any::<u32>(), len).prop_map(TensorData::Uint32),
                prop::collection::vec(any::<u64>(), len).prop_map(TensorData::Uint64),
                prop::collection::vec(any::<i8>(), len).prop_map(TensorData::Int8),
                prop::collection::vec(any::<i16>(), len).prop_map(TensorData::Int16),
                prop::collection::vec(any::<i32>(), len).prop_map(TensorData::Int32),
                prop::collection::vec(any::<i64>(), len).prop_map(TensorData::Int64),
                prop::collection::vec(finite_f32(), len).prop_map(TensorData::Fp32),
                prop::collection::vec(finite_f64(), len).prop_map(TensorData::Fp64),
            ];
            (Just(shape), data)
        })
        .prop_map(|(shape, data)| Tensor {
            name: "t".into(),
            shape,
            data,
        })
}

fn request_of(inputs: Vec<Tensor>) -> InferRequest {
    InferRequest {
        id: Some("r1".into()),
        inputs,
        ..InferRequest::default()
    }
}

fn round_trip(request: &InferRequest, binary: bool) -> Result<InferRequest, ProtocolError> {
    let body = encode_request(request, binary).expect("encodes");
    let header = body.json_length.map(|n| n.to_string());
    decode_request(&body.bytes, header.as_deref())
}

proptest! {
    #[test]
    fn request_round_trips_as_json(t in tensor()) {
        let request = request_of(vec![t]);
        prop_assert_eq!(round_trip(&request, false), Ok(request));
    }

    #[test]
    fn request_round_trips_as_binary(a in tensor(), b in tensor()) {
        let b = Tensor { name: "u".into(), ..b };
        let request = request_of(vec![a, b]);
        prop_assert_eq!(round_trip(&request, true), Ok(request));
    }

    #[test]
    fn response_round_trips_with_mixed_binary_outputs(a in tensor(), b in tensor()) {
        let b = Tensor { name: "u".into(), ..b };
        let response = InferResponse {
            model_name: "m".into(),
            model_version: Some("1".into()),
            id: None,
            outputs: vec![a, b],
        };
        let request = InferRequest {
            outputs: vec![
                RequestedOutput { name: "t".into(), binary_data: Some(true) },
                RequestedOutput { name: "u".into(), binary_data: None },
            ],
            ..InferRequest::default()
        };
        let body = encode_response(&response, &request).expect("encodes");
        let header = body.json_length.map(|n| n.to_string());
        prop_assert_eq!(decode_response(&body.bytes, header.as_deref()), Ok(response));
    }

    #[test]
    fn json_element_count_mismatch_is_rejected(t in tensor(), extra in 1u64..4) {
        let mut wrong = t.clone();
        wrong.shape = vec![t.data.len() as u64 + extra];
        let err = round_trip(&request_of(vec![wrong]), false).unwrap_err();
        let is_count_error = matches!(err, ProtocolError::ElementCount { .. });
        prop_assert!(is_count_error, "{:?}", err);
    }

    #[test]
    fn truncated_binary_is_rejected(t in nonempty_tensor(), cut in 1usize..8) {
        let body = encode_request(&request_of(vec![t.clone()]), true).expect("encodes");
        let json_length = body.json_length.expect("binary body");
        let keep = body.bytes.len() - cut.min(t.byte_len());
        let err = decode_request(&body.bytes[..keep], Some(&json_length.to_string())).unwrap_err();
        let is_truncation = matches!(err, ProtocolError::BinaryTruncated { .. });
        prop_assert!(is_truncation, "{:?}", err);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256),
                                   header in prop::option::of(0usize..300)) {
        let header = header.map(|n| n.to_string());
        let _ = decode_request(&body, header.as_deref());
    }
}

#[test]
fn nested_json_arrays_flatten_row_major() {
    let body =
        br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3.5,4]]}]}"#;
    let request = decode_request(body, None).expect("decodes");
    assert_eq!(
        request.inputs[0].data,
        TensorData::Fp32(vec![1.0, 2.0, 3.5, 4.0])
    );
}

#[test]
fn binary_size_that_disagrees_with_shape_is_rejected() {
    let json = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":4}}]}"#;
    let mut body = json.to_vec();
    body.extend_from_slice(&[0; 4]);
    let err = decode_request(&body, Some(&json.len().to_string())).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::BinarySize {
                declared: 4,
                expected: 8,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn huge_declared_shapes_fail_without_allocating() {
    let body = br#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,16],"datatype":"FP32","data":[1]}]}"#;
    let err = decode_request(body, None).unwrap_err();
    assert!(
        matches!(err, ProtocolError::ShapeOverflow { .. }),
        "{err:?}"
    );
    let body = br#"{"inputs":[{"name":"x","shape":[100000000000],"datatype":"FP32","data":[1]}]}"#;
    let err = decode_request(body, None).unwrap_err();
    assert!(matches!(err, ProtocolError::ElementCount { .. }), "{err:?}");
}

#[test]
fn integer_elements_reject_fractions_and_overflow() {
    let body = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"UINT8","data":[1,256]}]}"#;
    let err = decode_request(body, None).unwrap_err();
    assert!(
        matches!(err, ProtocolError::BadElement { index: 1, .. }),
        "{err:?}"
    );
    let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[1.5]}]}"#;
    let err = decode_request(body, None).unwrap_err();
    assert!(
        matches!(err, ProtocolError::BadElement { index: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn bool_binary_bytes_other_than_zero_and_one_are_rejected() {
    let json = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"BOOL","parameters":{"binary_data_size":2}}]}"#;
    let mut body = json.to_vec();
    body.extend_from_slice(&[1, 7]);
    let err = decode_request(&body, Some(&json.len().to_string())).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::BadBool {
                index: 1,
                byte: 7,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unsupported_and_unknown_datatypes_are_named() {
    let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}]}"#;
    assert!(matches!(
        decode_request(body, None),
        Err(ProtocolError::UnsupportedDatatype(_))
    ));
    let body = br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#;
    assert!(matches!(
        decode_request(body, None),
        Err(ProtocolError::UnknownDatatype(_))
    ));
}

#[test]
fn header_length_beyond_body_is_rejected() {
    let err = decode_request(b"{}", Some("10")).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::HeaderLengthExceedsBody {
            header: 10,
            body: 2
        }
    );
    assert!(matches!(
        decode_request(b"{}", Some("x")),
        Err(ProtocolError::BadHeaderLength(_))
    ));
}
