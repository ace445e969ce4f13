//! # wedge-control-plane — the fleet's brain
//!
//! Decides what every edge node should run, serves module blobs, tracks node health and
//! answers operators over HTTP.
//!
//! Layout:
//! - [`config`]: the one configuration tree (TOML file + flags), validated before any port
//!   is bound.
//! - [`app`]: startup and shutdown; wires the pieces below together.
//! - [`store`]: durable state in sled (modules and blobs, deployments, nodes, desired
//!   states), behind typed methods so sled never leaks out.
//! - [`fleet`]: the node registry and health (online/offline from heartbeats and wills).
//! - [`rollout`]: which revision of each deployment every node runs: canary, batches,
//!   bake, automatic rollback, pause/resume/abort.
//! - [`desired`]: a node's module list from its assigned revisions (pure).
//! - [`reconcile`]: stores and publishes desired states, re-sends to nodes behind.
//! - [`link`]: the node link: status, telemetry, events and requests in (session, lanes,
//!   inbound handlers); [`outbox`]: desired states, acknowledgements and blob chunks out.
//! - [`api`]: the HTTP API (axum), one file per resource.
//!
//! Flow: an operator uploads a module and posts a deployment → [`rollout`] assigns the
//! new revision to nodes batch by batch, as the previous ones prove healthy → [`desired`]
//! computes each assigned node's module list → a changed list bumps the node's generation and is
//! published retained on `wedge/v1/nodes/{id}/desired` → the node fetches the blob over
//! `blob/req`/`blob/data`, runs it and reports in its heartbeat → [`fleet`] records it.

pub mod api;
pub mod app;
pub mod assignments;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod desired;
pub mod files;
pub mod fleet;
pub mod identity;
pub mod link;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod precompile;
pub mod reconcile;
pub mod rollout;
pub mod state;
pub mod store;
pub mod time;

pub use app::{App, Running};
pub use config::Config;
