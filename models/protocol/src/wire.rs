//! The parts of the v2 wire format that requests and responses share: a JSON
//! header listing tensors, optionally followed by their binary data in order
//! (`Inference-Header-Content-Length` gives the header's length).

use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::json_tensors::{WireData, WireTensor, read_raw};
use crate::{DataType, DecodeLimits, ProtocolError, Tensor, TensorData, with_tensor_data};

/// Splits a body into its JSON header and binary part.
pub(crate) fn split_body<'b>(
    body: &'b [u8],
    header_length: Option<&str>,
) -> Result<(&'b [u8], &'b [u8]), ProtocolError> {
    let Some(raw) = header_length else {
        return Ok((body, &[]));
    };
    let header: usize = raw
        .trim()
        .parse()
        .map_err(|_| ProtocolError::BadHeaderLength(raw.to_owned()))?;
    if header > body.len() {
        return Err(ProtocolError::HeaderLengthExceedsBody {
            header,
            body: body.len(),
        });
    }
    Ok(body.split_at(header))
}

/// Number of elements of `shape`, rejecting overflow.
pub(crate) fn element_count(tensor: &str, shape: &[u64]) -> Result<u64, ProtocolError> {
    shape
        .iter()
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
        .ok_or_else(|| ProtocolError::ShapeOverflow {
            tensor: tensor.to_owned(),
            shape: shape.to_vec(),
        })
}

/// Reads an optional boolean parameter.
pub(crate) fn bool_parameter(
    parameters: Option<&Map<String, Value>>,
    name: &str,
) -> Result<Option<bool>, ProtocolError> {
    match parameters.and_then(|p| p.get(name)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(_) => Err(ProtocolError::BadParameter {
            name: name.to_owned(),
            expected: "true or false",
        }),
    }
}

/// Reads an optional non-negative integer parameter.
pub(crate) fn u64_parameter(
    parameters: Option<&Map<String, Value>>,
    name: &str,
) -> Result<Option<u64>, ProtocolError> {
    match parameters.and_then(|p| p.get(name)) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| ProtocolError::BadParameter {
                name: name.to_owned(),
                expected: "a non-negative integer",
            }),
    }
}

/// Reads a shape's dimensions as sizes.
fn shape_of(tensor: &str, dims: &[Number]) -> Result<Vec<u64>, ProtocolError> {
    dims.iter()
        .map(|dim| {
            dim.as_u64().ok_or_else(|| ProtocolError::BadDimension {
                tensor: tensor.to_owned(),
                value: dim.to_string(),
            })
        })
        .collect()
}

/// Decodes the data of each wire tensor, taking binary sections from
/// `binary` in order. Every byte of `binary` must be claimed.
///
/// Every shape is read and the total element count checked against
/// `limits` before any tensor data is decoded, so a huge declared shape is
/// refused without allocating for it.
pub(crate) fn decode_tensors(
    wire: Vec<WireTensor<'_>>,
    binary: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<Tensor>, ProtocolError> {
    let mut shapes = Vec::with_capacity(wire.len());
    let mut total: u64 = 0;
    for tensor in &wire {
        let shape = shape_of(&tensor.name, &tensor.shape)?;
        let count = element_count(&tensor.name, &shape)?;
        total = total.saturating_add(count);
        if total > limits.max_elements {
            return Err(ProtocolError::TooManyElements {
                elements: total,
                limit: limits.max_elements,
            });
        }
        shapes.push((shape, count));
    }
    let mut rest = binary;
    let mut tensors = Vec::with_capacity(wire.len());
    for (tensor, (shape, expected)) in wire.into_iter().zip(shapes) {
        let datatype: DataType = tensor.datatype.parse()?;
        let binary_size = u64_parameter(tensor.parameters.as_ref(), "binary_data_size")?;
        let data = match (tensor.data, binary_size) {
            (Some(_), Some(_)) => {
                return Err(ProtocolError::DataAndBinary {
                    tensor: tensor.name,
                });
            }
            (None, None) => {
                return Err(ProtocolError::MissingData {
                    tensor: tensor.name,
                });
            }
            (Some(WireData::Read(read)), None) => {
                read.finish(&tensor.name, &shape, datatype, expected)?
            }
            (Some(WireData::Raw(json)), None) => {
                read_raw(&tensor.name, &shape, datatype, expected, json)?
            }
            (None, Some(declared)) => {
                let section = take_binary(
                    &tensor.name,
                    &shape,
                    datatype,
                    expected,
                    declared,
                    &mut rest,
                )?;
                let data = TensorData::from_le_bytes(&tensor.name, datatype, section)?;
                // JSON has no NaN or infinity (and a JSON number beyond
                // the type's range was refused as it was read); binary
                // data can carry them.
                if !limits.allow_non_finite {
                    check_finite(&tensor.name, &data)?;
                }
                data
            }
        };
        tensors.push(Tensor {
            name: tensor.name,
            shape,
            data,
        });
    }
    if !rest.is_empty() {
        return Err(ProtocolError::BinaryTrailing(rest.len()));
    }
    Ok(tensors)
}

/// Refuses NaN and infinities in floating-point data.
fn check_finite(tensor: &str, data: &TensorData) -> Result<(), ProtocolError> {
    let first_bad = match data {
        TensorData::Fp32(values) => first_non_finite(values, |v| v.is_finite()),
        TensorData::Fp64(values) => first_non_finite(values, |v| v.is_finite()),
        _ => None,
    };
    match first_bad {
        Some((index, value)) => Err(ProtocolError::NonFinite {
            tensor: tensor.to_owned(),
            index,
            value,
        }),
        None => Ok(()),
    }
}

/// The first value that is not finite, with its index. The common case,
/// all finite, is checked without early exit so that it vectorises.
fn first_non_finite<T: Copy + ToString>(
    values: &[T],
    finite: impl Fn(T) -> bool,
) -> Option<(usize, String)> {
    if values.iter().fold(true, |all, &v| all & finite(v)) {
        return None;
    }
    values
        .iter()
        .position(|&v| !finite(v))
        .and_then(|index| values.get(index).map(|v| (index, v.to_string())))
}

/// Maps a serde_json error to the protocol error: malformed JSON, or JSON
/// of the wrong shape.
pub(crate) fn json_error(error: &serde_json::Error) -> ProtocolError {
    match error.classify() {
        serde_json::error::Category::Data => ProtocolError::Schema(error.to_string()),
        _ => ProtocolError::Json(error.to_string()),
    }
}

fn take_binary<'b>(
    tensor: &str,
    shape: &[u64],
    datatype: DataType,
    expected_elements: u64,
    declared: u64,
    rest: &mut &'b [u8],
) -> Result<&'b [u8], ProtocolError> {
    let element_size = datatype
        .element_size()
        .ok_or(ProtocolError::UnsupportedDatatype(datatype))?;
    let expected = expected_elements
        .checked_mul(element_size as u64)
        .ok_or_else(|| ProtocolError::ShapeOverflow {
            tensor: tensor.to_owned(),
            shape: shape.to_vec(),
        })?;
    if declared != expected {
        return Err(ProtocolError::BinarySize {
            tensor: tensor.to_owned(),
            shape: shape.to_vec(),
            datatype,
            declared,
            expected,
        });
    }
    let available = rest.len() as u64;
    let len = usize::try_from(declared)
        .ok()
        .filter(|&len| len <= rest.len())
        .ok_or_else(|| ProtocolError::BinaryTruncated {
            tensor: tensor.to_owned(),
            needed: declared,
            available,
        })?;
    let (section, remaining) = rest.split_at(len);
    *rest = remaining;
    Ok(section)
}

/// A tensor as written into a JSON header: its data inline, or only its
/// binary size when the data follows the header.
#[derive(Debug, Serialize)]
pub(crate) struct WireTensorOut<'a> {
    pub name: &'a str,
    pub datatype: DataType,
    pub shape: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<DataOut<'a>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct BinarySize {
    pub binary_data_size: usize,
}

/// Serialises tensor data as a flat JSON array.
#[derive(Debug)]
pub(crate) struct DataOut<'a>(pub &'a TensorData);

impl Serialize for DataOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        with_tensor_data!(self.0, v => v.serialize(serializer))
    }
}

impl<'a> WireTensorOut<'a> {
    /// Describes `tensor`; when `binary` is set, appends its bytes to
    /// `binary_out` instead of writing them inline.
    pub fn new(tensor: &'a Tensor, binary: bool, binary_out: &mut Vec<u8>) -> Self {
        let (parameters, data) = if binary {
            let before = binary_out.len();
            tensor.data.write_le(binary_out);
            (
                Some(BinarySize {
                    binary_data_size: binary_out.len() - before,
                }),
                None,
            )
        } else {
            (None, Some(DataOut(&tensor.data)))
        };
        WireTensorOut {
            name: &tensor.name,
            datatype: tensor.datatype(),
            shape: &tensor.shape,
            parameters,
            data,
        }
    }
}

/// Writes a JSON header and appends the binary sections. The header length
/// is returned when binary data follows.
pub(crate) fn finish_body<H: Serialize>(
    header: &H,
    binary: Vec<u8>,
) -> Result<crate::EncodedBody, serde_json::Error> {
    let mut bytes = serde_json::to_vec(header)?;
    if binary.is_empty() {
        return Ok(crate::EncodedBody {
            bytes,
            json_length: None,
        });
    }
    let json_length = bytes.len();
    bytes.extend_from_slice(&binary);
    Ok(crate::EncodedBody {
        bytes,
        json_length: Some(json_length),
    })
}
