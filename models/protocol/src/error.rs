//! Errors from decoding and validating v2 messages. Every variant is the
//! client's fault and maps to HTTP 400 (the gateway decides that mapping).

use crate::DataType;

/// What was wrong with a v2 message, phrased for the client who sent it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("request body is not valid JSON for the v2 protocol: {0}")]
    Json(String),
    #[error("the JSON is well formed but does not follow the v2 protocol: {0}")]
    Schema(String),
    #[error("Inference-Header-Content-Length is {header} but the body has only {body} bytes")]
    HeaderLengthExceedsBody { header: usize, body: usize },
    #[error("Inference-Header-Content-Length must be a non-negative integer, got {0:?}")]
    BadHeaderLength(String),
    #[error(
        "datatype {0:?} is not a v2 datatype (use one of BOOL, UINT8..UINT64, INT8..INT64, FP32, FP64)"
    )]
    UnknownDatatype(String),
    #[error("datatype {0} is not supported by Switchyard")]
    UnsupportedDatatype(DataType),
    #[error("tensor {tensor:?}: shape {shape:?} has too many elements")]
    ShapeOverflow { tensor: String, shape: Vec<u64> },
    #[error(
        "tensor {tensor:?}: shape dimension {value} is not a size; write integers of 0 or more \
         (-1 for \"any size\" appears only in model metadata)"
    )]
    BadDimension { tensor: String, value: String },
    #[error(
        "the request's tensors declare {elements} elements in all, more than the limit of {limit}"
    )]
    TooManyElements { elements: u64, limit: u64 },
    #[error(
        "tensor {tensor:?}: element {index} is {value}; only finite numbers are accepted \
         (NaN and infinities are refused)"
    )]
    NonFinite {
        tensor: String,
        index: usize,
        value: String,
    },
    #[error("tensor {tensor:?}: shape {shape:?} needs {expected} elements but {actual} were given")]
    ElementCount {
        tensor: String,
        shape: Vec<u64>,
        expected: u64,
        actual: u64,
    },
    #[error(
        "tensor {tensor:?}: binary_data_size is {declared} bytes, but shape {shape:?} of {datatype} needs {expected}"
    )]
    BinarySize {
        tensor: String,
        shape: Vec<u64>,
        datatype: DataType,
        declared: u64,
        expected: u64,
    },
    #[error(
        "tensor {tensor:?}: binary data is truncated: needs {needed} bytes after the JSON header, the body has {available}"
    )]
    BinaryTruncated {
        tensor: String,
        needed: u64,
        available: u64,
    },
    #[error("the body has {0} bytes of binary data that no tensor claims")]
    BinaryTrailing(usize),
    #[error("tensor {tensor:?}: has neither \"data\" nor a \"binary_data_size\" parameter")]
    MissingData { tensor: String },
    #[error("tensor {tensor:?}: has both \"data\" and a \"binary_data_size\" parameter")]
    DataAndBinary { tensor: String },
    #[error("tensor {tensor:?}: element {index} is not a valid {datatype}: {reason}")]
    BadElement {
        tensor: String,
        index: usize,
        datatype: DataType,
        reason: String,
    },
    #[error(
        "tensor {tensor:?}: BOOL binary data must be bytes 0 or 1, found {byte} at element {index}"
    )]
    BadBool {
        tensor: String,
        index: usize,
        byte: u8,
    },
    #[error("the request has no inputs")]
    NoInputs,
    #[error("input {0:?} appears more than once")]
    DuplicateInput(String),
    #[error("unknown input {name:?}; the model's inputs are {expected:?}")]
    UnknownInput { name: String, expected: Vec<String> },
    #[error("missing input {name:?}; the model's inputs are {expected:?}")]
    MissingInput { name: String, expected: Vec<String> },
    #[error("input {name:?} has datatype {actual}, the model expects {expected}")]
    WrongDatatype {
        name: String,
        expected: DataType,
        actual: DataType,
    },
    #[error("input {name:?} has shape {actual:?}, the model expects {expected:?} (-1 is any size)")]
    WrongShape {
        name: String,
        expected: Vec<i64>,
        actual: Vec<u64>,
    },
    #[error("inputs disagree on the batch size: {first} vs {other}")]
    BatchMismatch { first: u64, other: u64 },
    #[error("batch size {actual} exceeds the model's max_batch_size {max}")]
    BatchTooLarge { actual: u64, max: u64 },
    #[error("unknown output {name:?}; the model's outputs are {expected:?}")]
    UnknownOutput { name: String, expected: Vec<String> },
    #[error("parameter {name:?} must be {expected}")]
    BadParameter {
        name: String,
        expected: &'static str,
    },
}
