//! # wedge-edge-node — runs WebAssembly modules next to the devices
//!
//! An edge node embeds an MQTT broker for local devices, runs the modules its desired state
//! names against the messages they publish, and keeps working without the control plane.
//!
//! Layout:
//! - [`config`]: the one configuration tree (TOML file + flags), validated before any port
//!   is bound.
//! - [`app`]: startup and shutdown; wires the pieces below together.
//! - [`store`]: the local store (sled): the last desired state and module blobs, so the
//!   node boots and runs without the uplink; each module's key-value store.
//! - [`buffer`]: telemetry records modules emit, on disk until delivered.
//! - [`events`]: module log lines, starts and failures, sent upstream for operators.
//! - [`runtime`]: wasmtime — engine and limits, the host interface, one supervised thread
//!   per module instance.
//! - [`router`]: hands each local broker message to the modules whose subscriptions match.
//! - [`agent`]: reconciles what runs with the desired state, fetches blobs, reports status.
//! - [`uplink`]: the MQTT session with the control plane, and the blob fetch protocol.
//!
//! Flow: desired state arrives on the uplink → [`agent`] stores it, fetches missing blobs
//! (chunked, SHA-256 verified) → [`runtime`] compiles and starts each module on its own
//! thread → [`router`] feeds it matching local messages → what it publishes goes back out
//! on the local broker → heartbeats report each module's state upstream.

pub mod agent;
pub mod app;
pub mod buffer;
pub mod config;
pub mod devices;
pub mod events;
pub mod http;
pub mod metrics;
pub mod resources;
pub mod router;
pub mod runner;
pub mod runtime;
pub mod store;
pub mod uplink;

pub use app::{App, Running};
pub use config::Config;
