//! # wedge-service — what makes a Wedge binary a well-behaved service
//!
//! Not part of the protocol (that is `wedge-proto`, which does no I/O); shared so the two
//! `main`s do not repeat it.
//!
//! - [`process`]: tracing output (text or JSON), the log level and its reload, shutdown on
//!   SIGTERM/SIGINT, SIGHUP reloads of the configuration, systemd readiness and watchdog,
//!   and [`process::run_service`], the lifecycle both binaries run.
//! - [`metrics`]: the OpenMetrics exposition and the process series of `/metrics`.

pub mod metrics;
pub mod process;
