//! Every way a request can fail, and the one place each maps to an HTTP
//! status. Clients get the message as `{"error": "..."}`.

use http::StatusCode;
use switchyard_backends::BackendError;
use switchyard_protocol::ProtocolError;

use crate::auth::AuthError;
use crate::stats::Outcome;

/// Why the gateway did not answer a request with a result.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(ProtocolError),
    #[error("{0}")]
    BadHeader(String),
    #[error("unknown model {name:?}; GET /v2/repository/index lists the models")]
    UnknownModel { name: String },
    #[error("model {name:?} has no version {version:?}; it has {available:?}")]
    UnknownVersion {
        name: String,
        version: String,
        available: Vec<u64>,
    },
    #[error("request body is larger than the limit of {limit} bytes (server.max_request_bytes)")]
    PayloadTooLarge { limit: u64 },
    #[error(
        "the request's tensors declare {elements} elements in all, more than the limit of \
         {limit} (server.max_tensor_elements)"
    )]
    TooManyElements { elements: u64, limit: u64 },
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error(
        "the request body did not arrive within {timeout_ms} ms (server.body_read_timeout_ms); \
         check Content-Length and send the whole body"
    )]
    BodyTimeout { timeout_ms: u128 },
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("{method} is not allowed on {path}; use {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("no backend can take this request for model {model:?} ({detail})")]
    NoBackend { model: String, detail: String },
    #[error(
        "every backend that could take this request for model {model:?} is full ({detail}); \
         retry later"
    )]
    AllBusy { model: String, detail: String },
    #[error("policies not reloaded, the previous ones stay in force: {0}")]
    Reload(String),
    #[error("the gateway is at its limit of concurrent requests; retry later")]
    GatewayOverloaded,
    #[error("deadline of {deadline_ms} ms exceeded waiting for {backend}")]
    Deadline { backend: String, deadline_ms: u128 },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot encode the response: {0}")]
    Encode(String),
    #[error(
        "shed: the backends of model {model:?} are refusing most requests, so the gateway \
         sheds {percent:.0}% of them at once; retry later"
    )]
    Shed { model: String, percent: f64 },
}

impl From<ProtocolError> for GatewayError {
    fn from(error: ProtocolError) -> Self {
        match error {
            ProtocolError::TooManyElements { elements, limit } => {
                GatewayError::TooManyElements { elements, limit }
            }
            other => GatewayError::BadRequest(other),
        }
    }
}

impl GatewayError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) | GatewayError::BadHeader(_) | GatewayError::Body(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::UnknownModel { .. }
            | GatewayError::UnknownVersion { .. }
            | GatewayError::NotFound { .. } => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Reload(_) => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::PayloadTooLarge { .. } | GatewayError::TooManyElements { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Unauthorized(error) => error.status(),
            GatewayError::NoBackend { .. } | GatewayError::GatewayOverloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Shed { .. } | GatewayError::AllBusy { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            GatewayError::Encode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::Backend(error) => match error {
                BackendError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
                BackendError::Unavailable { .. } | BackendError::NotServed { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                BackendError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
                BackendError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// The backend that refused or failed the request, when one was chosen.
    pub fn backend(&self) -> Option<&str> {
        match self {
            GatewayError::Deadline { backend, .. } => Some(backend),
            GatewayError::Backend(
                BackendError::Overloaded { backend, .. }
                | BackendError::Unavailable { backend, .. }
                | BackendError::DeadlineExceeded { backend, .. }
                | BackendError::NotServed { backend, .. }
                | BackendError::Failed { backend, .. },
            ) => Some(backend),
            _ => None,
        }
    }

    /// The outcome label recorded for this error.
    pub fn outcome(&self) -> Outcome {
        match self.status() {
            StatusCode::TOO_MANY_REQUESTS => Outcome::Overloaded,
            StatusCode::SERVICE_UNAVAILABLE => Outcome::Unavailable,
            StatusCode::GATEWAY_TIMEOUT => Outcome::Timeout,
            status if status.is_client_error() => Outcome::ClientError,
            _ => Outcome::Error,
        }
    }
}
