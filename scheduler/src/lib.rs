//! The Switchyard gateway: the Open Inference Protocol over HTTP in front of
//! several kinds of backend, with per-request placement.
//!
//! The data path is [`http`] (routes, errors to statuses) over [`gateway`]
//! (validate, [`measure`], [`policy`], dispatch, [`stats`]), served by
//! [`server::run`], configured by [`config`].

pub mod auth;
pub mod config;
pub mod decision_log;
pub mod error;
pub mod gateway;
pub mod host_cpu;
pub mod http;
pub mod measure;
pub mod outlier;
pub mod placement;
pub mod policy;
pub mod policy_check;
pub mod prewarm;
pub mod self_wake;
pub mod server;
pub mod sim;
pub mod stats;
pub mod telemetry;
pub mod throttle;

pub use config::Config;
pub use gateway::Gateway;
pub use server::run;
