//! Where inference runs. [`Backend`] is the whole contract between the
//! gateway and a backend: the scheduler knows nothing else about one. Each
//! kind of backend is a module here; adding a kind means adding a module and
//! a config section, not editing the gateway.

pub mod affinity;
mod backend;
mod cold_start;
mod error_chain;
pub mod host;
pub mod local;

pub use backend::{
    Backend, BackendError, BackendFuture, BackendKind, BackendSnapshot, InferenceJob,
    InferenceResult, ModelInfo, Timing,
};
pub use cold_start::{COLD_STARTS_AVERAGED, RecentColdStarts};
pub use error_chain::error_chain;
