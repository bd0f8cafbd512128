//! Errors of the model core.

use std::path::PathBuf;

/// What went wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    RuntimeNotFound(String),
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    RuntimeLoad { path: PathBuf, message: String },
    #[error("model repository {path}: {message}")]
    Repository { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Config {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("model {model:?}: cannot load {path}: {message}")]
    Load {
        model: String,
        path: PathBuf,
        message: String,
    },
    #[error("model {model:?}: {message}")]
    Unsupported { model: String, message: String },
    #[error("model {model:?}: inference failed: {message}")]
    Inference { model: String, message: String },
}
