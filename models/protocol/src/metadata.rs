//! Server and model metadata messages, and the tensor specs requests are
//! validated against.

use serde::{Deserialize, Serialize};

use crate::DataType;

/// `GET /v2` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

/// One input or output of a model as metadata reports it; `-1` marks a
/// dimension of any size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// What an input must look like; the same as its metadata.
pub type TensorSpec = TensorMetadata;

/// `GET /v2/models/{name}[/versions/{v}]` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// `GET /v2/models/{name}/ready` body (the status code carries the answer;
/// the body says it in words too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelReadyResponse {
    pub name: String,
    pub ready: bool,
}
