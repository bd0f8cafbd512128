//! The Open Inference Protocol (KServe v2) as Switchyard speaks it.
//!
//! This crate is the wire contract shared by every part of Switchyard: the
//! gateway, the worker inside a container, the Lambda function and the load
//! generator. It holds the tensor datatypes, typed tensor storage, the request
//! decoder (JSON tensors and the binary tensor data extension), the response
//! encoder and validation of a request against a model's tensor specs. It
//! does no I/O and knows nothing of ONNX Runtime.

mod datatype;
mod error;
mod json_scan;
mod json_tensors;
mod metadata;
mod request;
mod response;
mod tensor;
mod validate;
mod wire;

pub use datatype::DataType;
pub use error::ProtocolError;
pub use metadata::{ModelMetadata, ModelReadyResponse, ServerMetadata, TensorMetadata, TensorSpec};
pub use request::{
    BINARY_HEADER_LENGTH, DecodeLimits, InferRequest, RequestedOutput, decode_request,
    decode_request_with, decode_request_without_scanner, encode_request,
};
pub use response::{EncodedBody, InferResponse, decode_response, encode_response};
pub use tensor::{Element, JsonScalar, Tensor, TensorData};
pub use validate::validate_inputs;

/// Content type of a body that is JSON followed by binary tensor data.
pub const OCTET_STREAM: &str = "application/octet-stream";
/// Content type of a JSON-only body.
pub const JSON: &str = "application/json";
