//! # wedge-proto — the protocol edge nodes and the control plane speak
//!
//! Everything that crosses the uplink is defined here and nowhere else, so the two sides
//! cannot drift apart. This crate does no I/O.
//!
//! Layout:
//! - [`digest`]: content addresses of module blobs (`sha256:<hex>`).
//! - [`envelope`]: the versioned CBOR envelope, and decode errors as values.
//! - [`messages`]: the message bodies (status, desired state, blob transfer).
//! - [`topics`]: topic names under `wedge/v1/nodes/{node}/…`, id validation and MQTT
//!   filter matching.
//! - `wire_check`: every wire message behind one entry point, for fuzzing.

pub mod digest;
pub mod envelope;
pub mod messages;
pub mod mqtt_url;
pub mod rules;
pub mod signing;
pub mod topics;
#[doc(hidden)]
pub mod wire_check;

pub use digest::Digest;
pub use envelope::{DecodeError, MAX_MESSAGE_SIZE, PROTOCOL_VERSION, decode, encode};

/// Wall-clock time as the wire carries it: milliseconds since the Unix epoch (0 for a clock
/// set before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
