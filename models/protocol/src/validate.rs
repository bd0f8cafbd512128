//! Checking a decoded request against a model's input and output specs, so
//! that a bad request is refused with a precise message before it reaches a
//! backend.

use std::collections::HashSet;

use crate::{InferRequest, ProtocolError, TensorSpec};

/// Checks names, datatypes and shapes of `request` against the model's
/// `inputs` and `outputs`. With `max_batch_size` set, the first dimension of
/// every input is the batch: all inputs must agree on it and it must not
/// exceed the maximum.
pub fn validate_inputs(
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
    max_batch_size: Option<u64>,
    request: &InferRequest,
) -> Result<(), ProtocolError> {
    let names = |specs: &[TensorSpec]| specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let mut seen = HashSet::with_capacity(request.inputs.len());
    for tensor in &request.inputs {
        if !seen.insert(tensor.name.as_str()) {
            return Err(ProtocolError::DuplicateInput(tensor.name.clone()));
        }
        let spec = inputs
            .iter()
            .find(|s| s.name == tensor.name)
            .ok_or_else(|| ProtocolError::UnknownInput {
                name: tensor.name.clone(),
                expected: names(inputs),
            })?;
        if spec.datatype != tensor.datatype() {
            return Err(ProtocolError::WrongDatatype {
                name: tensor.name.clone(),
                expected: spec.datatype,
                actual: tensor.datatype(),
            });
        }
        let shape_fits = spec.shape.len() == tensor.shape.len()
            && spec
                .shape
                .iter()
                .zip(&tensor.shape)
                .all(|(&want, &got)| want < 0 || u64::try_from(want) == Ok(got));
        if !shape_fits {
            return Err(ProtocolError::WrongShape {
                name: tensor.name.clone(),
                expected: spec.shape.clone(),
                actual: tensor.shape.clone(),
            });
        }
    }
    if let Some(missing) = inputs.iter().find(|s| !seen.contains(s.name.as_str())) {
        return Err(ProtocolError::MissingInput {
            name: missing.name.clone(),
            expected: names(inputs),
        });
    }
    if let Some(unknown) = request
        .outputs
        .iter()
        .find(|o| !outputs.iter().any(|s| s.name == o.name))
    {
        return Err(ProtocolError::UnknownOutput {
            name: unknown.name.clone(),
            expected: names(outputs),
        });
    }
    if let Some(max) = max_batch_size {
        let mut batches = request.inputs.iter().filter_map(|t| t.batch_size());
        if let Some(first) = batches.next() {
            if let Some(other) = batches.find(|&b| b != first) {
                return Err(ProtocolError::BatchMismatch { first, other });
            }
            if first > max {
                return Err(ProtocolError::BatchTooLarge { actual: first, max });
            }
        }
    }
    Ok(())
}
