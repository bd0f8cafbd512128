//! The v2 inference response: encoding what the gateway answers (each output
//! as JSON or binary, as the client asked) and decoding it in clients.

use serde::de::DeserializeSeed;
use serde::{Deserialize, Deserializer, Serialize};

use crate::json_tensors::{TensorsSeed, WireTensor};
use crate::wire::{WireTensorOut, decode_tensors, finish_body, split_body};
use crate::{InferRequest, ProtocolError, Tensor};

/// A successful inference result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: Option<String>,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

/// An encoded body: the JSON header, then any binary data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBody {
    pub bytes: Vec<u8>,
    /// Length of the JSON header when binary data follows it (the value of
    /// `Inference-Header-Content-Length`), `None` for a JSON-only body.
    pub json_length: Option<usize>,
}

#[derive(Serialize)]
struct ResponseHeaderOut<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<WireTensorOut<'a>>,
}

/// Encodes `response`, writing each output in binary form where `request`
/// asked for it.
pub fn encode_response(
    response: &InferResponse,
    request: &InferRequest,
) -> Result<EncodedBody, serde_json::Error> {
    let mut binary = Vec::new();
    let outputs = response
        .outputs
        .iter()
        .map(|tensor| WireTensorOut::new(tensor, request.wants_binary(&tensor.name), &mut binary))
        .collect();
    let header = ResponseHeaderOut {
        model_name: &response.model_name,
        model_version: response.model_version.as_deref(),
        id: response.id.as_deref(),
        outputs,
    };
    finish_body(&header, binary)
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    model_name: String,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow, deserialize_with = "all_tensors")]
    outputs: Vec<WireTensor<'a>>,
}

/// A response's tensors, every one read as the header is parsed.
fn all_tensors<'de: 'a, 'a, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<WireTensor<'a>>, D::Error> {
    TensorsSeed::new(u64::MAX).deserialize(deserializer)
}

/// Decodes a response body (the client side of [`encode_response`]).
pub fn decode_response(
    body: &[u8],
    header_length: Option<&str>,
) -> Result<InferResponse, ProtocolError> {
    let (json, binary) = split_body(body, header_length)?;
    let wire: WireResponse<'_> =
        serde_json::from_slice(json).map_err(|e| crate::wire::json_error(&e))?;
    Ok(InferResponse {
        model_name: wire.model_name,
        model_version: wire.model_version,
        id: wire.id,
        outputs: decode_tensors(wire.outputs, binary, &crate::DecodeLimits::UNLIMITED)?,
    })
}
