//! Every wire message behind one entry point, for the fuzz target `wire` (`tests/fuzz`) and
//! the seed corpus written by `messages::tests::write_fuzz_seeds`: the input's first byte
//! picks the message type, the rest is the envelope.
//!
//! What it checks beyond "never panics": whatever decodes re-encodes, decodes again and
//! re-encodes to the same bytes, so what one side accepts the other side can send back.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::{MAX_MESSAGE_SIZE, decode, encode};
use crate::messages::{
    BlobReply, BlobRequest, CertReply, CertRequest, DesiredState, NodeEvent, StatusMessage,
    TelemetryAck, TelemetryBatch,
};

/// The message types, in the order of the selecting byte: what the control plane receives
/// (status, telemetry, blob requests, events, certificate requests) and what a node
/// receives (desired states, acknowledgements, blob replies, certificate replies).
pub const KINDS: [&str; 9] = [
    "StatusMessage",
    "TelemetryBatch",
    "BlobRequest",
    "NodeEvent",
    "CertRequest",
    "DesiredState",
    "TelemetryAck",
    "BlobReply",
    "CertReply",
];

/// Decodes `input[1..]` as the type `input[0]` selects (modulo [`KINDS`]); panics only if an
/// accepted message does not survive a round trip, which is a bug.
pub fn check(input: &[u8]) {
    let Some((&kind, bytes)) = input.split_first() else {
        return;
    };
    match kind as usize % KINDS.len() {
        0 => round_trip::<StatusMessage>(bytes),
        1 => round_trip::<TelemetryBatch>(bytes),
        2 => round_trip::<BlobRequest>(bytes),
        3 => round_trip::<NodeEvent>(bytes),
        4 => round_trip::<CertRequest>(bytes),
        5 => round_trip::<DesiredState>(bytes),
        6 => round_trip::<TelemetryAck>(bytes),
        7 => round_trip::<BlobReply>(bytes),
        _ => round_trip::<CertReply>(bytes),
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok(message) = decode::<T>(bytes) else {
        return;
    };
    let once = encode(&message);
    if once.len() > MAX_MESSAGE_SIZE {
        // Defaults filled in can make a message grow; over the limit it is refused, as it
        // should be.
        return;
    }
    let again: T = match decode(&once) {
        Ok(m) => m,
        Err(e) => panic!("an accepted message does not decode once re-encoded: {e}"),
    };
    assert_eq!(encode(&again), once, "re-encoding is not stable");
}

/// The selecting byte of a type's name in [`KINDS`].
pub fn kind_of(name: &str) -> Option<u8> {
    KINDS.iter().position(|k| *k == name).map(|i| i as u8)
}
