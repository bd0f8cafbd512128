//! Server and model metadata messages, and the tensor specs requests are
//! validated against.

use serde::{Deserialize, Serialize};

use crate::{DataType, Tensor, TensorData};

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

impl TensorMetadata {
    /// A tensor of zeros of this spec, every variable dimension 1 (one row
    /// of batch). Used to warm a backend with a request it can really run.
    /// `None` for datatypes without a fixed element size (`BYTES`) or
    /// without an in-memory form.
    pub fn zeros(&self) -> Option<Tensor> {
        let shape: Vec<u64> = self
            .shape
            .iter()
            .map(|&d| u64::try_from(d).ok().filter(|&d| d > 0).unwrap_or(1))
            .collect();
        let elements = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))?;
        let bytes = vec![0u8; elements.checked_mul(self.datatype.element_size()?)?];
        let data = TensorData::from_le_bytes(&self.name, self.datatype, &bytes).ok()?;
        Some(Tensor {
            name: self.name.clone(),
            shape,
            data,
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_fill_one_row_of_the_spec() {
        let spec = TensorMetadata {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 1, 28, 28],
        };
        let tensor = spec.zeros();
        assert_eq!(
            tensor.as_ref().map(|t| t.shape.clone()),
            Some(vec![1, 1, 28, 28])
        );
        assert_eq!(
            tensor.map(|t| t.data),
            Some(TensorData::Fp32(vec![0.0; 784]))
        );
        let text = TensorMetadata {
            name: "text".into(),
            datatype: DataType::Bytes,
            shape: vec![-1],
        };
        assert!(text.zeros().is_none());
    }
}
