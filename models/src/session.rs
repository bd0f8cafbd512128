//! An ONNX Runtime session with v2 tensors in and out.
//!
//! `ort::Session::run` takes `&mut self`, so a session belongs to one worker
//! thread; callers that want parallelism load one session per worker.

use std::path::Path;
use std::sync::Arc;

use ort::session::{Session, SessionInputValue, builder::GraphOptimizationLevel};
use ort::value::TensorElementType;
use ort::value::{DynValue, ValueType};
use switchyard_protocol::{DataType, Tensor, TensorSpec, with_tensor_data};

use crate::ModelError;

/// Threads given to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Threads ONNX Runtime may use inside one operator.
    pub intra_op_threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            intra_op_threads: 1,
        }
    }
}

/// A model's inputs and outputs as its ONNX file declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpecs {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// One loaded model version, ready to run.
#[derive(Debug)]
pub struct ModelSession {
    model: String,
    session: Session,
    specs: Arc<TensorSpecs>,
}

impl ModelSession {
    /// Loads `path` for `model` with ONNX Runtime.
    pub fn load(model: &str, path: &Path, options: SessionOptions) -> Result<Self, ModelError> {
        let load_error = |message: String| ModelError::Load {
            model: model.to_owned(),
            path: path.to_owned(),
            message,
        };
        let environment = crate::runtime::environment()?;
        let session = Session::builder(&environment)
            .map_err(|e| load_error(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| load_error(e.to_string()))?
            .with_intra_threads(options.intra_op_threads.max(1))
            .map_err(|e| load_error(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| load_error(e.to_string()))?
            // Spinning threads would take CPU from the async server and the
            // other sessions on a small machine; waking costs microseconds.
            .with_intra_op_spinning(false)
            .map_err(|e| load_error(e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| load_error(e.to_string()))?;
        let specs = TensorSpecs {
            inputs: specs_of(
                model,
                session.inputs().iter().map(|o| (o.name(), o.dtype())),
            )?,
            outputs: specs_of(
                model,
                session.outputs().iter().map(|o| (o.name(), o.dtype())),
            )?,
        };
        Ok(Self {
            model: model.to_owned(),
            session,
            specs: Arc::new(specs),
        })
    }

    /// The model's inputs and outputs.
    pub fn specs(&self) -> &Arc<TensorSpecs> {
        &self.specs
    }

    /// Runs the model on `inputs` (already validated against the specs) and
    /// returns every output, in the model's output order.
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ModelError> {
        let inference_error = |message: String| ModelError::Inference {
            model: self.model.clone(),
            message,
        };
        let values = inputs
            .into_iter()
            .map(|tensor| {
                let value = to_ort(tensor.shape, tensor.data)?;
                Ok((tensor.name, SessionInputValue::from(value)))
            })
            .collect::<Result<Vec<_>, ort::Error>>()
            .map_err(|e| inference_error(e.to_string()))?;
        let outputs = self
            .session
            .run(values)
            .map_err(|e| inference_error(e.to_string()))?;
        self.specs
            .outputs
            .iter()
            .map(|spec| {
                let value = outputs
                    .get(&spec.name)
                    .ok_or_else(|| inference_error(format!("output {:?} missing", spec.name)))?;
                from_ort(&spec.name, value).map_err(inference_error)
            })
            .collect()
    }
}

fn to_ort(shape: Vec<u64>, data: switchyard_protocol::TensorData) -> Result<DynValue, ort::Error> {
    let shape: Vec<i64> = shape
        .into_iter()
        .map(|d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect();
    with_tensor_data!(data, v => ort::value::Tensor::from_array((shape, v)).map(|t| t.into_dyn()))
}

fn from_ort(name: &str, value: &DynValue) -> Result<Tensor, String> {
    fn extract<T>(name: &str, value: &DynValue) -> Result<Tensor, String>
    where
        T: ort::value::PrimitiveTensorElementType + switchyard_protocol::Element + std::fmt::Debug,
    {
        let (shape, data) = value.try_extract_tensor::<T>().map_err(|e| e.to_string())?;
        Ok(Tensor {
            name: name.to_owned(),
            shape: shape
                .iter()
                .map(|&d| u64::try_from(d).unwrap_or(0))
                .collect(),
            data: T::into_data(data.to_vec()),
        })
    }
    match value.dtype().tensor_type() {
        Some(TensorElementType::Bool) => extract::<bool>(name, value),
        Some(TensorElementType::Uint8) => extract::<u8>(name, value),
        Some(TensorElementType::Uint16) => extract::<u16>(name, value),
        Some(TensorElementType::Uint32) => extract::<u32>(name, value),
        Some(TensorElementType::Uint64) => extract::<u64>(name, value),
        Some(TensorElementType::Int8) => extract::<i8>(name, value),
        Some(TensorElementType::Int16) => extract::<i16>(name, value),
        Some(TensorElementType::Int32) => extract::<i32>(name, value),
        Some(TensorElementType::Int64) => extract::<i64>(name, value),
        Some(TensorElementType::Float32) => extract::<f32>(name, value),
        Some(TensorElementType::Float64) => extract::<f64>(name, value),
        other => Err(format!("output {name:?} has unsupported type {other:?}")),
    }
}

fn datatype_of(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        _ => return None,
    })
}

fn specs_of<'a>(
    model: &str,
    outlets: impl Iterator<Item = (&'a str, &'a ValueType)>,
) -> Result<Vec<TensorSpec>, ModelError> {
    outlets
        .map(|(name, dtype)| {
            let unsupported = |what: String| ModelError::Unsupported {
                model: model.to_owned(),
                message: format!("tensor {name:?}: {what}"),
            };
            let ValueType::Tensor { ty, shape, .. } = dtype else {
                return Err(unsupported(format!("{dtype:?} is not a tensor")));
            };
            let datatype =
                datatype_of(*ty).ok_or_else(|| unsupported(format!("element type {ty:?}")))?;
            Ok(TensorSpec {
                name: name.to_owned(),
                datatype,
                shape: shape.iter().map(|&d| if d < 0 { -1 } else { d }).collect(),
            })
        })
        .collect()
}
