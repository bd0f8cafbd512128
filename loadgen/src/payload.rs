//! Request payloads: random input tensors shaped from a model's metadata,
//! encoded once, before a run, as v2 request bodies (JSON tensors or the
//! binary tensor extension).
//!
//! Encoding ahead of time keeps the generator's per-request work to a
//! pointer copy, so its own cost does not limit the load it can offer.

use bytes::Bytes;
use switchyard_protocol::{
    DataType, InferRequest, JSON, OCTET_STREAM, Tensor, TensorData, TensorMetadata, encode_request,
};

use crate::rng::SplitMix64;

/// Tensors above this many elements are refused: a load generator that
/// allocates gigabytes because of a metadata mistake helps no one.
const MAX_ELEMENTS: u64 = 1 << 28;

/// What the requests of a run carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadSpec {
    /// Rows per request: the size given to every dynamic (`-1`) dimension.
    pub batch_size: u64,
    /// Inputs in the binary tensor extension instead of JSON.
    pub binary: bool,
    /// Ask for every output in binary form (`binary_data_output`).
    pub binary_output: bool,
    /// Distinct bodies to cycle through (different random data, so a cache
    /// keyed on the body would not flatter the server).
    pub variants: usize,
    /// Seed of the random values.
    pub seed: u64,
}

impl Default for PayloadSpec {
    fn default() -> Self {
        Self {
            batch_size: 1,
            binary: false,
            binary_output: false,
            variants: 8,
            seed: 1,
        }
    }
}

/// One encoded request body and what the request header must say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBody {
    pub bytes: Bytes,
    /// Length of the JSON part when binary data follows it (the value of
    /// `Inference-Header-Content-Length`).
    pub json_length: Option<usize>,
    /// Rows (items) the request carries.
    pub rows: u64,
    /// Whether it asks for binary outputs.
    pub binary_output: bool,
}

impl RequestBody {
    /// Encodes `inputs` as a request, with binary inputs and binary
    /// outputs as asked.
    pub fn encode(inputs: Vec<Tensor>, binary: bool, binary_output: bool) -> Result<Self, String> {
        let rows = inputs.first().and_then(Tensor::batch_size).unwrap_or(1);
        let request = InferRequest {
            inputs,
            binary_data_output: binary_output,
            ..Default::default()
        };
        let body = encode_request(&request, binary).map_err(|e| e.to_string())?;
        Ok(Self {
            bytes: Bytes::from(body.bytes),
            json_length: body.json_length,
            rows,
            binary_output,
        })
    }

    /// The body's `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        if self.json_length.is_some() {
            OCTET_STREAM
        } else {
            JSON
        }
    }
}

/// Builds `spec.variants` bodies with random inputs for the model's inputs.
pub fn build_bodies(
    inputs: &[TensorMetadata],
    spec: &PayloadSpec,
) -> Result<Vec<RequestBody>, String> {
    if spec.batch_size == 0 {
        return Err("the batch size must be at least 1".into());
    }
    if spec.variants == 0 {
        return Err("at least one request variant is needed".into());
    }
    let mut rng = SplitMix64::new(spec.seed);
    (0..spec.variants)
        .map(|_| {
            let tensors = random_inputs(inputs, spec.batch_size, &mut rng)?;
            RequestBody::encode(tensors, spec.binary, spec.binary_output)
        })
        .collect()
}

/// Random tensors for `inputs`, every dynamic dimension set to `batch`.
/// Floats are uniform in `[0, 1)`, integers in `0..10`, booleans fair.
pub fn random_inputs(
    inputs: &[TensorMetadata],
    batch: u64,
    rng: &mut SplitMix64,
) -> Result<Vec<Tensor>, String> {
    if inputs.is_empty() {
        return Err("the model declares no inputs".into());
    }
    inputs
        .iter()
        .map(|spec| random_tensor(spec, batch, rng))
        .collect()
}

fn random_tensor(
    spec: &TensorMetadata,
    batch: u64,
    rng: &mut SplitMix64,
) -> Result<Tensor, String> {
    let shape: Vec<u64> = spec
        .shape
        .iter()
        .map(|&dim| u64::try_from(dim).unwrap_or(batch))
        .collect();
    let elements = shape
        .iter()
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| {
            format!(
                "input {:?} of shape {shape:?} has more than {MAX_ELEMENTS} elements",
                spec.name
            )
        })?;
    let n = usize::try_from(elements).map_err(|e| e.to_string())?;
    #[allow(clippy::cast_possible_truncation)]
    let data = match spec.datatype {
        DataType::Fp32 => TensorData::Fp32((0..n).map(|_| rng.next_f64() as f32).collect()),
        DataType::Fp64 => TensorData::Fp64((0..n).map(|_| rng.next_f64()).collect()),
        DataType::Bool => TensorData::Bool((0..n).map(|_| rng.below(2) == 1).collect()),
        DataType::Uint8 => TensorData::Uint8((0..n).map(|_| rng.below(10) as u8).collect()),
        DataType::Uint16 => TensorData::Uint16((0..n).map(|_| rng.below(10) as u16).collect()),
        DataType::Uint32 => TensorData::Uint32((0..n).map(|_| rng.below(10) as u32).collect()),
        DataType::Uint64 => TensorData::Uint64((0..n).map(|_| rng.below(10)).collect()),
        DataType::Int8 => TensorData::Int8((0..n).map(|_| rng.below(10) as i8).collect()),
        DataType::Int16 => TensorData::Int16((0..n).map(|_| rng.below(10) as i16).collect()),
        DataType::Int32 => TensorData::Int32((0..n).map(|_| rng.below(10) as i32).collect()),
        DataType::Int64 => TensorData::Int64((0..n).map(|_| rng.below(10) as i64).collect()),
        other @ (DataType::Fp16 | DataType::Bf16 | DataType::Bytes) => {
            return Err(format!(
                "input {:?} has datatype {other}, which the load generator cannot make",
                spec.name
            ));
        }
    };
    Ok(Tensor {
        name: spec.name.clone(),
        shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use switchyard_protocol::decode_request;

    use super::*;

    fn digits_input() -> Vec<TensorMetadata> {
        vec![TensorMetadata {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 64],
        }]
    }

    #[test]
    fn bodies_decode_to_the_declared_shape() {
        for binary in [false, true] {
            let spec = PayloadSpec {
                batch_size: 3,
                binary,
                binary_output: binary,
                variants: 2,
                seed: 5,
            };
            let bodies = build_bodies(&digits_input(), &spec).unwrap();
            assert_eq!(bodies.len(), 2);
            assert_ne!(bodies[0].bytes, bodies[1].bytes);
            for body in bodies {
                assert_eq!(body.rows, 3);
                assert_eq!(body.json_length.is_some(), binary);
                let header = body.json_length.map(|n| n.to_string());
                let request = decode_request(&body.bytes, header.as_deref()).unwrap();
                assert_eq!(request.binary_data_output, binary);
                assert_eq!(request.inputs[0].shape, vec![3, 64]);
                assert_eq!(request.inputs[0].data.len(), 192);
            }
        }
    }

    #[test]
    fn unsupported_and_huge_inputs_are_refused() {
        let mut rng = SplitMix64::new(1);
        let bytes = TensorMetadata {
            name: "text".into(),
            datatype: DataType::Bytes,
            shape: vec![-1],
        };
        assert!(random_inputs(&[bytes], 1, &mut rng).is_err());
        let huge = TensorMetadata {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 1 << 20, 1 << 20],
        };
        assert!(random_inputs(&[huge], 1, &mut rng).is_err());
        assert!(random_inputs(&[], 1, &mut rng).is_err());
    }
}
