//! The benchmark's errors: each says which step failed and how to fix it.

use std::path::PathBuf;

/// Why a benchmark could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("gateway config: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] switchyard_models::ModelError),
    #[error(transparent)]
    Loadgen(#[from] switchyard_loadgen::LoadgenError),
    #[error("gateway process: {0}")]
    Gateway(String),
    #[error("{context}: {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}
