//! The function's event and response format, shared by the function and
//! the gateway's invoker so both sides speak exactly one format.
//!
//! An event is the v2 inference request with its tensor data in binary
//! form: the request's JSON header (each input carrying
//! `parameters.binary_data_size`) under `request`, and the binary sections,
//! concatenated in input order, base64-encoded under `binary_data`. Large
//! tensors so cost 4/3 of their size instead of becoming JSON floats (about
//! 3x, and lossy to parse). The response mirrors it: the v2 response header
//! under `response`, the output bytes under `binary_data`, plus what the
//! instance reports about itself (`instance`: cold or warm, init time,
//! memory) and where the handler's time went (`timing`). The README of this
//! crate shows both with an example.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use switchyard_protocol::{
    InferRequest, InferResponse, ProtocolError, decode_request, decode_response, encode_request,
    encode_response,
};

/// Version of this format, sent in every event and response.
pub const FORMAT: &str = "switchyard.lambda.v1";

/// Why an event or response could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event is not valid JSON of format {FORMAT}: {0}")]
    Json(String),
    #[error("format {found:?} is not supported; this side speaks {FORMAT:?}")]
    Format { found: String },
    #[error("binary_data is not valid base64: {0}")]
    Base64(String),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// One inference request as a Lambda event.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeEvent {
    pub format: String,
    pub model_name: String,
    pub model_version: u64,
    /// The v2 request header (JSON).
    pub request: Box<RawValue>,
    /// The inputs' binary data, base64; absent when every input is inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<String>,
}

/// What the instance that ran an event says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// Unique per instance (process).
    pub id: String,
    /// Whether this was the instance's first invocation (a cold start).
    pub cold: bool,
    /// Time from process start to models loaded, in milliseconds.
    pub init_ms: f64,
    /// Invocations this instance has served, this one included.
    pub invocation: u64,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, when the runtime set it.
    pub memory_mb: Option<u64>,
}

/// Where the handler's time went, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct HandlerTiming {
    /// Decoding the event into tensors.
    pub decode_us: u64,
    /// Running the model.
    pub compute_us: u64,
    /// The whole handler, decode to encoded response.
    pub handler_us: u64,
}

/// One inference result as a Lambda response.
#[derive(Debug, Serialize, Deserialize)]
pub struct InvokeResponse {
    pub format: String,
    /// The v2 response header (JSON).
    pub response: Box<RawValue>,
    /// The outputs' binary data, base64; absent when every output is inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<String>,
    pub instance: InstanceReport,
    pub timing: HandlerTiming,
}

/// Splits an encoded v2 body into its JSON header and base64 binary part.
fn split_encoded(
    bytes: Vec<u8>,
    json_length: Option<usize>,
) -> Result<(Box<RawValue>, Option<String>), EventError> {
    let split = json_length.unwrap_or(bytes.len()).min(bytes.len());
    let (json, binary) = bytes.split_at(split);
    let json = String::from_utf8(json.to_vec()).map_err(|e| EventError::Json(e.to_string()))?;
    let header = RawValue::from_string(json).map_err(|e| EventError::Json(e.to_string()))?;
    let binary = (!binary.is_empty()).then(|| BASE64.encode(binary));
    Ok((header, binary))
}

/// Joins a JSON header and base64 binary part back into a v2 body; returns
/// the body and the header length when binary data follows.
fn join_encoded(
    header: &RawValue,
    binary: Option<&str>,
) -> Result<(Vec<u8>, Option<String>), EventError> {
    let mut body = header.get().as_bytes().to_vec();
    let Some(binary) = binary else {
        return Ok((body, None));
    };
    let json_length = body.len();
    BASE64
        .decode_vec(binary, &mut body)
        .map_err(|e| EventError::Base64(e.to_string()))?;
    Ok((body, Some(json_length.to_string())))
}

fn check_format(found: &str) -> Result<(), EventError> {
    if found == FORMAT {
        Ok(())
    } else {
        Err(EventError::Format {
            found: found.to_owned(),
        })
    }
}

impl InvokeEvent {
    /// The event for `request` to `model` version `version`, inputs in
    /// binary form.
    pub fn new(model: &str, version: u64, request: &InferRequest) -> Result<Self, EventError> {
        let encoded = encode_request(request, true).map_err(|e| EventError::Json(e.to_string()))?;
        let (request, binary_data) = split_encoded(encoded.bytes, encoded.json_length)?;
        Ok(Self {
            format: FORMAT.to_owned(),
            model_name: model.to_owned(),
            model_version: version,
            request,
            binary_data,
        })
    }

    /// The event as the JSON bytes of an Invoke payload.
    pub fn to_payload(&self) -> Result<Vec<u8>, EventError> {
        serde_json::to_vec(self).map_err(|e| EventError::Json(e.to_string()))
    }

    /// Reads an Invoke payload.
    pub fn from_payload(payload: &[u8]) -> Result<Self, EventError> {
        serde_json::from_slice(payload).map_err(|e| EventError::Json(e.to_string()))
    }

    /// The decoded v2 request.
    pub fn decode(&self) -> Result<InferRequest, EventError> {
        check_format(&self.format)?;
        let (body, header_length) = join_encoded(&self.request, self.binary_data.as_deref())?;
        Ok(decode_request(&body, header_length.as_deref())?)
    }
}

impl InvokeResponse {
    /// The response for `response`, every output in binary form.
    pub fn new(
        response: &InferResponse,
        instance: InstanceReport,
        timing: HandlerTiming,
    ) -> Result<Self, EventError> {
        let all_binary = InferRequest {
            binary_data_output: true,
            ..InferRequest::default()
        };
        let encoded =
            encode_response(response, &all_binary).map_err(|e| EventError::Json(e.to_string()))?;
        let (response, binary_data) = split_encoded(encoded.bytes, encoded.json_length)?;
        Ok(Self {
            format: FORMAT.to_owned(),
            response,
            binary_data,
            instance,
            timing,
        })
    }

    /// Reads an Invoke response payload.
    pub fn from_payload(payload: &[u8]) -> Result<Self, EventError> {
        let response: Self =
            serde_json::from_slice(payload).map_err(|e| EventError::Json(e.to_string()))?;
        check_format(&response.format)?;
        Ok(response)
    }

    /// The decoded v2 response.
    pub fn decode(&self) -> Result<InferResponse, EventError> {
        let (body, header_length) = join_encoded(&self.response, self.binary_data.as_deref())?;
        Ok(decode_response(&body, header_length.as_deref())?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use switchyard_protocol::{Tensor, TensorData};

    use super::*;

    fn request() -> InferRequest {
        InferRequest {
            id: Some("r1".into()),
            inputs: vec![
                Tensor {
                    name: "input".into(),
                    shape: vec![1, 3],
                    data: TensorData::Fp32(vec![0.1, -2.5, f32::MAX]),
                },
                Tensor {
                    name: "mask".into(),
                    shape: vec![2],
                    data: TensorData::Int64(vec![7, -9]),
                },
            ],
            ..InferRequest::default()
        }
    }

    #[test]
    fn an_event_round_trips_exactly_with_binary_data_base64() {
        let event = InvokeEvent::new("digits", 3, &request()).unwrap();
        let payload = event.to_payload().unwrap();
        let text = String::from_utf8(payload.clone()).unwrap();
        assert!(text.contains("\"binary_data_size\":12"), "{text}");
        assert!(
            !text.contains("-2.5"),
            "tensor data is not inline JSON: {text}"
        );
        let back = InvokeEvent::from_payload(&payload).unwrap();
        assert_eq!(
            (back.model_name.as_str(), back.model_version),
            ("digits", 3)
        );
        assert_eq!(back.decode().unwrap(), request());
    }

    #[test]
    fn a_response_round_trips_with_the_instance_report() {
        let response = InferResponse {
            model_name: "digits".into(),
            model_version: Some("1".into()),
            id: Some("r1".into()),
            outputs: vec![Tensor {
                name: "probabilities".into(),
                shape: vec![1, 2],
                data: TensorData::Fp32(vec![0.25, 0.75]),
            }],
        };
        let instance = InstanceReport {
            id: "i".into(),
            cold: true,
            init_ms: 12.5,
            invocation: 1,
            memory_mb: Some(1024),
        };
        let encoded =
            InvokeResponse::new(&response, instance.clone(), HandlerTiming::default()).unwrap();
        let payload = serde_json::to_vec(&encoded).unwrap();
        let back = InvokeResponse::from_payload(&payload).unwrap();
        assert_eq!(back.instance, instance);
        assert_eq!(back.decode().unwrap(), response);
    }

    #[test]
    fn a_foreign_format_or_bad_base64_is_refused_clearly() {
        let mut event = InvokeEvent::new("digits", 1, &request()).unwrap();
        event.binary_data = Some("not base64!".into());
        assert!(matches!(event.decode(), Err(EventError::Base64(_))));
        event.format = "other".into();
        assert!(matches!(event.decode(), Err(EventError::Format { .. })));
        assert!(matches!(
            InvokeEvent::from_payload(b"{\"hello\":1}"),
            Err(EventError::Json(_))
        ));
    }
}
