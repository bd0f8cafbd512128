//! The container backend (being written). The gateway uses exactly this
//! surface: [`ContainerFile`] (the `[backends.container]` config section),
//! [`ContainerFile::validate`], [`ContainerBackend::start`] and the `Backend` trait.

use serde::Deserialize;
use switchyard_backends::{
    Backend, BackendError, BackendFuture, BackendKind, BackendSnapshot, InferenceJob,
    InferenceResult, ModelInfo,
};
use switchyard_models::ModelRepository;
use switchyard_models::toml_config::TomlError;

/// The `[backends.container]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerFile {}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    pub name: String,
}

impl ContainerFile {
    /// Checks the section against the repository. Error keys are relative
    /// to the section (the gateway prefixes `backends.container.`).
    pub fn validate(self, _repository: &ModelRepository) -> Result<ContainerConfig, TomlError> {
        Err(TomlError {
            key: "(section)".into(),
            message: "the container backend is not available yet".into(),
        })
    }
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
#[error("container backend: {0}")]
pub struct StartError(pub String);

/// The container backend.
#[derive(Debug)]
pub struct ContainerBackend {
    name: String,
}

impl ContainerBackend {
    /// Starts the backend.
    pub async fn start(
        config: ContainerConfig,
        _repository: &ModelRepository,
    ) -> Result<Self, StartError> {
        Err(StartError(format!("{} is not available yet", config.name)))
    }
}

impl Backend for ContainerBackend {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Container
    }
    fn models(&self) -> Vec<std::sync::Arc<ModelInfo>> {
        Vec::new()
    }
    fn ready(&self) -> bool {
        false
    }
    fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            name: self.name.clone(),
            kind: BackendKind::Container,
            ready: false,
            in_flight: 0,
            queued: 0,
            concurrency: 0,
            capacity: 0,
            headroom: 0,
            max_payload_bytes: None,
            unready_reason: Some("not available yet".into()),
        }
    }
    fn infer(
        &self,
        _job: InferenceJob,
    ) -> BackendFuture<'_, Result<InferenceResult, BackendError>> {
        Box::pin(async move {
            Err(BackendError::Unavailable {
                backend: self.name.clone(),
                reason: "not available yet".into(),
            })
        })
    }
}
