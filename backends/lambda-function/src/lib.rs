//! Switchyard's model core as an AWS Lambda function.
//!
//! - [`event`]: the event and response format (the v2 request and response
//!   with binary tensor data base64-encoded), shared with the gateway's
//!   invoker;
//! - [`handler`]: one function instance — models loaded once at init, one
//!   event handled per call, cold start reported on the first;
//! - the `switchyard-lambda` binary (feature `runtime`) connects the handler
//!   to the Lambda Runtime API with `lambda_runtime`.

pub mod event;
pub mod handler;

pub use event::{EventError, HandlerTiming, InstanceReport, InvokeEvent, InvokeResponse};
pub use handler::{Function, FunctionSettings, HandlerError};
