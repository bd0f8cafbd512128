//! The model core of Switchyard: the one piece of code that loads a model and
//! runs it, whether in the gateway process (the local backend), in a worker
//! container or in the Lambda function.
//!
//! - [`runtime`] finds and loads the ONNX Runtime shared library;
//! - [`repository`] reads a Triton-style model repository (one folder per
//!   model, a `config.toml`, numbered version folders with `model.onnx`);
//! - [`session`] wraps an ONNX Runtime session with v2 tensors in and out,
//!   with model metadata read from the ONNX file itself;
//! - [`batch`] merges compatible requests into one batch and splits the
//!   results back.

pub mod batch;
mod error;
pub mod repository;
pub mod runtime;
pub mod session;
pub mod toml_config;

pub use error::ModelError;
pub use repository::{DynamicBatching, ModelConfig, ModelRepository, ModelSelection, ModelVersion};
pub use session::{ModelSession, SessionOptions, TensorSpecs};
