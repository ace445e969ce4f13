//! The end-to-end suite in one test binary: each file beside this one is a module.
//!
//! One binary instead of one per file: each links the whole system (wasmtime, the broker,
//! both services), so sixteen binaries cost sixteen long links and their disk on a 2-core
//! CI machine, and `cargo test` ran them one after another. Run one file's tests with
//! `cargo test -p wedge-tests --test e2e restarts::`.
mod adversary;
mod arm64;
mod backpressure;
mod dashboard;
mod deploy;
mod devices;
mod fault;
mod identity;
mod languages;
mod layers;
mod metrics;
mod modules;
mod mosquitto;
mod precompile;
mod restarts;
mod rollout;
mod scaffold;
mod schemathesis;
mod signing;
mod supersede;
mod telemetry;
mod walking_skeleton;
mod walkthrough;
