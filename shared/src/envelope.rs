//! The versioned CBOR envelope every uplink message travels in.
//!
//! On the wire a message is the CBOR map `{"v": <protocol version>, "body": <message>}`.
//! Decoding checks the size first, then the version, then the body, and reports each
//! failure as a [`DecodeError`] value: input from the network never panics.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest encoded message either side accepts (blob chunks are sized well below it).
pub const MAX_MESSAGE_SIZE: usize = 1024 * 1024;

#[derive(Serialize)]
struct EnvelopeRef<'a, T> {
    v: u16,
    body: &'a T,
}

#[derive(Deserialize)]
struct RawEnvelope {
    v: u16,
    body: ciborium::Value,
}

/// Why bytes from the network are not a message we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    #[error("malformed {kind} body: {reason}")]
    BadBody { kind: &'static str, reason: String },
}

/// Encodes `body` in the current envelope.
pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Writing into a Vec cannot fail, and our message types serialize infallibly
    // (no maps with non-string keys, no custom serializers that error).
    ciborium::into_writer(
        &EnvelopeRef {
            v: PROTOCOL_VERSION,
            body,
        },
        &mut out,
    )
    .expect("CBOR encoding into a Vec is infallible for wire types");
    out
}

/// Decodes a message of type `T` from `bytes`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: MAX_MESSAGE_SIZE,
        });
    }
    let raw: RawEnvelope =
        ciborium::from_reader(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if raw.v != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedVersion(raw.v));
    }
    raw.body.deserialized().map_err(|e| DecodeError::BadBody {
        kind: short_type_name::<T>(),
        reason: e.to_string(),
    })
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;
    use crate::messages::BlobRequest;

    #[test]
    fn rejects_garbage() {
        let err = decode::<BlobRequest>(b"\xff\x00garbage").unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn rejects_unknown_version() {
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &EnvelopeRef {
                v: 99,
                body: &"anything",
            },
            &mut bytes,
        )
        .unwrap();
        assert_eq!(
            decode::<BlobRequest>(&bytes),
            Err(DecodeError::UnsupportedVersion(99))
        );
    }

    #[test]
    fn rejects_wrong_body() {
        let bytes = encode(&"not a blob request");
        let err = decode::<BlobRequest>(&bytes).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::BadBody {
                    kind: "BlobRequest",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_oversize() {
        let bytes = vec![0u8; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(
            decode::<BlobRequest>(&bytes),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn round_trip() {
        let req = BlobRequest {
            digest: Digest::of(b"x"),
            offset: 7,
            max_chunks: 3,
        };
        assert_eq!(decode::<BlobRequest>(&encode(&req)), Ok(req));
    }
}
