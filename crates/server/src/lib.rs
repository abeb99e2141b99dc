//! Server layer of cryptobot: the `cryptobot` binary's library half.
//!
//! It loads settings, builds the real services and the WebSocket gateway (the composition root in
//! [`startup`]), serves the REST API, `/metrics` and the WebSocket endpoint, and shuts everything
//! down in order. Tests build the same [`Application`] on port 0.
//!
//! May depend on: every other cryptobot crate, actix-web, config, tracing-subscriber, utoipa (the
//! OpenAPI document, [`routes::openapi`]). Nothing depends on it except the binary and the tests.

/// One log line per REST request.
pub mod access_log;
/// Bearer-token authentication of the REST API.
pub mod auth;
/// Settings from embedded defaults, a file and the environment.
pub mod config;
/// The REST API's error type.
pub mod error;
/// The node's Prometheus registry, by role.
pub mod exposition;
/// The `process_*` series of `/metrics`.
pub mod process_metrics;
/// Per-address rate of REST requests.
pub mod rate_limit;
/// REST routes.
pub mod routes;
/// Building, running and stopping the application.
pub mod startup;
/// Shared handler state.
pub mod state;
/// Logging setup.
pub mod telemetry;

pub use config::Settings;
pub use startup::{Application, StartupError};
