//! The v2 inference request: decoding what a client sent, and encoding one
//! (for the load generator, the gateway's own backends and tests).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::json_scan::scan_request;
use crate::json_tensors::{TensorsSeed, WireTensor, set_once};
use crate::wire::{
    WireTensorOut, bool_parameter, decode_tensors, finish_body, json_error, split_body,
    u64_parameter,
};
use crate::{EncodedBody, ProtocolError, Tensor};

/// The HTTP header that gives the length of the JSON part of a body that
/// carries binary tensor data.
pub const BINARY_HEADER_LENGTH: &str = "inference-header-content-length";

/// A decoded inference request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// The outputs asked for; empty means all of the model's outputs.
    pub outputs: Vec<RequestedOutput>,
    /// Request-level `binary_data_output`: every output in binary form.
    pub binary_data_output: bool,
    /// Request-level `timeout` parameter, in microseconds (as Triton).
    pub timeout_us: Option<u64>,
}

/// One entry of the request's `outputs` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    /// The output's `binary_data` parameter, if the client set it.
    pub binary_data: Option<bool>,
}

impl InferRequest {
    /// Total bytes of input tensor data (the payload size placement uses).
    pub fn payload_bytes(&self) -> usize {
        self.inputs.iter().map(Tensor::byte_len).sum()
    }

    /// Whether output `name` is to be returned as binary data.
    pub fn wants_binary(&self, name: &str) -> bool {
        self.outputs
            .iter()
            .find(|output| output.name == name)
            .and_then(|output| output.binary_data)
            .unwrap_or(self.binary_data_output)
    }
}

/// A request header as read, before its parameters and tensor data are
/// checked.
#[derive(Debug)]
pub(crate) struct WireRequest<'a> {
    pub id: Option<String>,
    pub parameters: Option<Map<String, Value>>,
    pub inputs: Vec<WireTensor<'a>>,
    pub outputs: Option<Vec<WireRequestedOutput>>,
}

/// Reads a request header, reading tensor data ahead within
/// `max_elements` (see [`TensorsSeed`]).
struct RequestSeed<'a> {
    max_elements: u64,
    borrow: PhantomData<&'a ()>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum RequestField {
    Id,
    Parameters,
    Inputs,
    Outputs,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for RequestSeed<'a> {
    type Value = WireRequest<'a>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for RequestSeed<'a> {
    type Value = WireRequest<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an inference request (an object with inputs)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        let mut parameters = None;
        let mut inputs = None;
        let mut outputs = None;
        while let Some(field) = map.next_key::<RequestField>()? {
            match field {
                RequestField::Id => set_once(&mut id, "id", map.next_value::<Option<String>>()?)?,
                RequestField::Parameters => {
                    set_once(&mut parameters, "parameters", map.next_value()?)?;
                }
                RequestField::Inputs => set_once(
                    &mut inputs,
                    "inputs",
                    map.next_value_seed(TensorsSeed::new(self.max_elements))?,
                )?,
                RequestField::Outputs => set_once(&mut outputs, "outputs", map.next_value()?)?,
                RequestField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(WireRequest {
            id: id.flatten(),
            parameters: parameters.flatten(),
            inputs: inputs.ok_or_else(|| de::Error::missing_field("inputs"))?,
            outputs: outputs.flatten(),
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
}

/// What a decoder accepts from a client beyond the protocol's own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most tensor elements all inputs of one request may declare together.
    /// Checked on the declared shapes before any data is decoded.
    pub max_elements: u64,
    /// Whether NaN and infinities are accepted in FP32/FP64 inputs (binary
    /// data can carry them; JSON cannot).
    pub allow_non_finite: bool,
}

impl DecodeLimits {
    /// No element limit, non-finite values accepted: what the protocol
    /// itself allows.
    pub const UNLIMITED: DecodeLimits = DecodeLimits {
        max_elements: u64::MAX,
        allow_non_finite: true,
    };
}

/// Decodes a request body with no limits beyond the protocol's
/// ([`DecodeLimits::UNLIMITED`]). `header_length` is the value of the
/// `Inference-Header-Content-Length` header, if the client sent one.
pub fn decode_request(
    body: &[u8],
    header_length: Option<&str>,
) -> Result<InferRequest, ProtocolError> {
    decode_request_with(body, header_length, &DecodeLimits::UNLIMITED)
}

/// Decodes a request body, refusing what `limits` does not allow.
pub fn decode_request_with(
    body: &[u8],
    header_length: Option<&str>,
    limits: &DecodeLimits,
) -> Result<InferRequest, ProtocolError> {
    decode(body, header_length, limits, true)
}

/// [`decode_request_with`] without its fast path for the JSON header
/// (`serde_json` reads all of it). The two must agree on every input, to
/// the error message: tests and the fuzz targets check that they do.
#[doc(hidden)]
pub fn decode_request_without_scanner(
    body: &[u8],
    header_length: Option<&str>,
    limits: &DecodeLimits,
) -> Result<InferRequest, ProtocolError> {
    decode(body, header_length, limits, false)
}

fn decode(
    body: &[u8],
    header_length: Option<&str>,
    limits: &DecodeLimits,
    scan: bool,
) -> Result<InferRequest, ProtocolError> {
    let (json, binary) = split_body(body, header_length)?;
    let scanned = scan
        .then(|| scan_request(json, limits.max_elements))
        .flatten();
    let wire = match scanned {
        Some(wire) => wire,
        None => read_request(json, limits.max_elements)?,
    };
    let parameters = wire.parameters.as_ref();
    let binary_data_output = bool_parameter(parameters, "binary_data_output")?.unwrap_or(false);
    let timeout_us = u64_parameter(parameters, "timeout")?;
    let outputs = wire
        .outputs
        .unwrap_or_default()
        .into_iter()
        .map(|output| {
            let binary_data = bool_parameter(output.parameters.as_ref(), "binary_data")?;
            Ok(RequestedOutput {
                name: output.name,
                binary_data,
            })
        })
        .collect::<Result<Vec<_>, ProtocolError>>()?;
    let inputs = decode_tensors(wire.inputs, binary, limits)?;
    if inputs.is_empty() {
        return Err(ProtocolError::NoInputs);
    }
    Ok(InferRequest {
        id: wire.id,
        inputs,
        outputs,
        binary_data_output,
        timeout_us,
    })
}

/// Reads a request header with serde: any JSON, every error.
pub(crate) fn read_request(
    json: &[u8],
    max_elements: u64,
) -> Result<WireRequest<'_>, ProtocolError> {
    let seed = RequestSeed {
        max_elements,
        borrow: PhantomData,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    seed.deserialize(&mut deserializer)
        .and_then(|wire| deserializer.end().map(|()| wire))
        .map_err(|e| json_error(&e))
}

#[derive(Serialize)]
struct RequestHeaderOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<WireTensorOut<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<RequestedOutputOut<'a>>,
}

#[derive(Serialize)]
struct RequestedOutputOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
}

/// Encodes a request; with `binary_inputs` the input data follows the JSON
/// header in binary form.
pub fn encode_request(
    request: &InferRequest,
    binary_inputs: bool,
) -> Result<EncodedBody, serde_json::Error> {
    let mut binary = Vec::new();
    let inputs = request
        .inputs
        .iter()
        .map(|tensor| WireTensorOut::new(tensor, binary_inputs, &mut binary))
        .collect();
    let mut parameters = Map::new();
    if request.binary_data_output {
        parameters.insert("binary_data_output".into(), Value::Bool(true));
    }
    if let Some(timeout) = request.timeout_us {
        parameters.insert("timeout".into(), Value::from(timeout));
    }
    let outputs = request
        .outputs
        .iter()
        .map(|output| RequestedOutputOut {
            name: &output.name,
            parameters: output
                .binary_data
                .map(|binary| Map::from_iter([("binary_data".to_owned(), Value::Bool(binary))])),
        })
        .collect();
    let header = RequestHeaderOut {
        id: request.id.as_deref(),
        parameters: (!parameters.is_empty()).then_some(parameters),
        inputs,
        outputs,
    };
    finish_body(&header, binary)
}
