//! Dynamic batching: merging requests whose inputs differ only in the batch
//! dimension into one batch, and splitting the batch's outputs back.
//! Row-major data makes both a matter of concatenating and slicing the flat
//! element vectors.

use switchyard_protocol::{Tensor, TensorData};

/// Whether two requests' inputs can share a batch: the same names and
/// datatypes, and the same shape apart from the first dimension.
pub fn compatible(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| {
            b.iter().any(|y| {
                x.name == y.name
                    && x.datatype() == y.datatype()
                    && x.shape.len() == y.shape.len()
                    && x.shape.get(1..) == y.shape.get(1..)
            })
        })
}

/// Batch size of one request: the first dimension of its first input.
pub fn batch_size(inputs: &[Tensor]) -> u64 {
    inputs.first().and_then(Tensor::batch_size).unwrap_or(1)
}

/// Concatenates compatible requests along the first dimension. Returns
/// `None` if they are not compatible.
pub fn merge(requests: &[&[Tensor]]) -> Option<Vec<Tensor>> {
    let first = requests.first()?;
    first
        .iter()
        .map(|template| {
            let parts = requests
                .iter()
                .map(|inputs| inputs.iter().find(|t| t.name == template.name))
                .collect::<Option<Vec<_>>>()?;
            let rows = parts.iter().map(|t| t.batch_size().unwrap_or(0)).sum();
            let data = TensorData::concat(parts.iter().map(|t| &t.data))?;
            let mut shape = template.shape.clone();
            *shape.first_mut()? = rows;
            Some(Tensor {
                name: template.name.clone(),
                shape,
                data,
            })
        })
        .collect()
}

/// Splits each batched output into `sizes.len()` parts of `sizes[i]` rows.
pub fn split(outputs: Vec<Tensor>, sizes: &[u64]) -> Result<Vec<Vec<Tensor>>, String> {
    let total: u64 = sizes.iter().sum();
    let mut parts: Vec<Vec<Tensor>> = sizes
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for output in outputs {
        let rows = output.batch_size().unwrap_or(0);
        if rows != total {
            return Err(format!(
                "output {:?} has {rows} rows for a batch of {total}",
                output.name
            ));
        }
        let row_len = if rows == 0 {
            0
        } else {
            output.data.len() / rows as usize
        };
        let mut start = 0usize;
        for (part, &size) in parts.iter_mut().zip(sizes) {
            let end = start + row_len * size as usize;
            let data = output
                .data
                .slice(start, end)
                .ok_or_else(|| format!("output {:?} is shorter than its shape", output.name))?;
            let mut shape = output.shape.clone();
            if let Some(first) = shape.first_mut() {
                *first = size;
            }
            part.push(Tensor {
                name: output.name.clone(),
                shape,
                data,
            });
            start = end;
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, shape: Vec<u64>, data: Vec<f32>) -> Tensor {
        Tensor {
            name: name.into(),
            shape,
            data: TensorData::Fp32(data),
        }
    }

    #[test]
    fn merge_then_split_restores_each_request() {
        let a = vec![t("x", vec![1, 2], vec![1.0, 2.0])];
        let b = vec![t("x", vec![2, 2], vec![3.0, 4.0, 5.0, 6.0])];
        assert!(compatible(&a, &b));
        let merged = merge(&[&a, &b]).expect("compatible");
        assert_eq!(
            merged,
            vec![t("x", vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]
        );
        let parts = split(merged, &[1, 2]).expect("splits");
        assert_eq!(parts, vec![a, b]);
    }

    #[test]
    fn different_inner_shapes_or_types_do_not_batch() {
        let a = vec![t("x", vec![1, 2], vec![1.0, 2.0])];
        let b = vec![t("x", vec![1, 3], vec![1.0, 2.0, 3.0])];
        assert!(!compatible(&a, &b));
        let c = vec![Tensor {
            name: "x".into(),
            shape: vec![1, 2],
            data: TensorData::Fp64(vec![1.0, 2.0]),
        }];
        assert!(!compatible(&a, &c));
        assert!(merge(&[&a, &c]).is_none());
    }

    #[test]
    fn split_rejects_outputs_with_the_wrong_row_count() {
        let out = vec![t("y", vec![2, 1], vec![1.0, 2.0])];
        assert!(split(out, &[1, 2]).is_err());
    }
}
