//! The load generator's errors. Failed requests during a run are not errors
//! of the run: they are outcomes, counted in the report.

/// Why a load test could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "refusing to send load to {host:?}, which is not a loopback address; \
         load tests stay on this machine unless remote targets are allowed (--allow-remote)"
    )]
    RemoteRefused { host: String },
    #[error("invalid model name {0:?}: use letters, digits, '_', '-' and '.'")]
    ModelName(String),
    #[error("cannot fetch the metadata of model {model:?} from {url}: {reason}")]
    Metadata {
        model: String,
        url: String,
        reason: String,
    },
    #[error("cannot build a request for model {model:?}: {reason}")]
    Payload { model: String, reason: String },
    #[error("invalid run settings: {0}")]
    Settings(String),
    #[error("load generator failure: {0}")]
    Internal(String),
}
