//! Message bodies carried in the [envelope](crate::envelope).
//!
//! | type | topic | direction |
//! | --- | --- | --- |
//! | [`StatusMessage`] | `…/status` (retained; also the MQTT last will) | node → control plane |
//! | [`DesiredState`] | `…/desired` (retained) | control plane → node |
//! | [`BlobRequest`] | `…/blob/req` | node → control plane |
//! | [`BlobReply`] | `…/blob/data` | control plane → node |
//! | [`NodeEvent`] | `…/events` | node → control plane |
//! | [`TelemetryBatch`] | `…/telemetry` | node → control plane |
//! | [`TelemetryAck`] | `…/telemetry/ack` | control plane → node |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// Longest error text a node reports for a module (in heartbeats and events), bytes. A
/// module's own words (an `init` refusal, a trap message) can be as long as its memory; one
/// that long in every heartbeat would push it past the MQTT packet limit.
pub const MAX_ERROR_TEXT: usize = 1024;

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn bounded_text(mut text: String, max: usize) -> String {
    if text.len() > max {
        text.truncate(text.floor_char_boundary(max.saturating_sub('…'.len_utf8())));
        text.push('…');
    }
    text
}

/// What a node publishes on its status topic.
// One status message is decoded at a time and never stored in bulk: the size of the
// smaller variant does not matter, and boxing would change every constructor.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StatusMessage {
    /// A periodic report of what the node runs.
    Heartbeat(Heartbeat),
    /// The node is gone: its last will (crash, lost link) or a clean shutdown.
    Offline(Offline),
}

/// A node's report of itself and of what it actually runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node_id: String,
    /// Milliseconds since the Unix epoch on the node's clock.
    pub sent_at_ms: u64,
    /// CPU architecture (`x86_64`, `aarch64`, …).
    pub arch: String,
    /// Software version of the node binary.
    pub version: String,
    pub labels: BTreeMap<String, String>,
    /// Generation of the newest desired state the node has received (0: none).
    pub desired_generation: u64,
    /// Generation of the desired state the node has fully applied.
    pub applied_generation: u64,
    pub modules: Vec<ModuleStatus>,
    #[serde(default)]
    pub buffer: BufferStatus,
    #[serde(default)]
    pub resources: Resources,
    /// What native code the node loads (`TRIPLE/HASH`, see `wedge-engine`), so the control
    /// plane can compile its modules ahead of time; `None`: it compiles them itself (it
    /// requires signed modules, or is older).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precompile_key: Option<String>,
}

/// The node's disk (the file system of its data directory) and memory; 0 means unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_total_bytes: u64,
}

/// Why a node went offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offline {
    pub node_id: String,
    /// `true` for a clean shutdown, `false` when the broker published the last will.
    pub graceful: bool,
}

/// The state of one module instance on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleStatus {
    /// Instance name (the deployment's name).
    pub name: String,
    pub digest: Digest,
    pub state: ModuleState,
    /// The last error, if the module ever failed.
    pub last_error: Option<String>,
    pub restarts: u32,
    /// What the instance has done since the node started it.
    #[serde(default)]
    pub stats: ModuleStats,
}

/// Counters of one module instance (since the node started it, across restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModuleStats {
    /// Messages handled without a trap.
    pub messages: u64,
    /// Calls that returned an error (the module kept running).
    pub errors: u64,
    /// Messages dropped because the module's queue was full.
    pub dropped: u64,
    /// Messages published to the local broker.
    pub published: u64,
    /// Publishes refused: forbidden topic or over the rate limit.
    pub refused: u64,
    /// Records emitted upstream.
    pub emitted: u64,
}

/// Where a module instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleState {
    /// Its blob is being fetched from the control plane.
    Fetching,
    /// Its component is being compiled (seconds for a JavaScript or Python module on a
    /// small device); messages for it wait in its queue.
    Compiling,
    /// Initialising.
    Starting,
    /// Handling messages.
    Running,
    /// Trapped or refused to start; restarted with backoff.
    Failed,
}

impl ModuleState {
    /// The lowercase name used in the HTTP API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetching => "fetching",
            Self::Compiling => "compiling",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Failed => "failed",
        }
    }
}

/// What the control plane wants a node to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// Increases by one every time the node's desired state changes.
    pub generation: u64,
    pub modules: Vec<ModuleSpec>,
}

/// One module instance a node should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleSpec {
    /// Instance name (the deployment's name); unique on a node.
    pub name: String,
    /// The uploaded module's name and version (`threshold-alert`, `1.2`): what a publisher's
    /// signature binds together with the digest. Empty from a control plane older than
    /// name-binding signatures.
    #[serde(default)]
    pub module: String,
    #[serde(default)]
    pub version: String,
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Local MQTT topic filters whose messages the module receives.
    pub subscriptions: Vec<String>,
    /// The module's configuration as JSON text, passed to its `init`.
    pub config: String,
    /// Topic prefixes the module may publish to locally; empty: any non-reserved topic.
    #[serde(default)]
    pub publish_prefixes: Vec<String>,
    /// Period of `on-tick` in milliseconds; `None`: never ticked.
    #[serde(default)]
    pub tick_ms: Option<u64>,
    /// Limits for this module; `None` fields take the node's defaults.
    #[serde(default)]
    pub limits: Limits,
    /// The publisher's signature on `module`, `version` and `digest`, if the module was
    /// uploaded signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signing::ModuleSignature>,
    /// The module compiled ahead of time by the control plane for this node's precompile
    /// key ([`Heartbeat::precompile_key`]), fetched like a module blob. A node that requires
    /// signatures ignores it: native code is not what the publisher signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeArtifact>,
}

/// A module's native code for one precompile key: a blob like the module's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeArtifact {
    /// The precompile key it was compiled for (`TRIPLE/HASH`).
    pub key: String,
    /// SHA-256 of the artifact.
    pub digest: Digest,
    pub size: u64,
}

/// Sandbox limits of one module instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most linear memory, bytes.
    pub memory_bytes: Option<u64>,
    /// Longest single call (init, on-message, on-tick), milliseconds.
    pub call_timeout_ms: Option<u64>,
    /// Most bytes of keys and values in the module's key-value store.
    pub kv_bytes: Option<u64>,
    /// Most local publishes per second (a burst of as many is allowed).
    pub publish_per_sec: Option<u32>,
}

/// One record a module emitted upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryRecord {
    /// Per-node sequence number, assigned when the record is buffered; increases by one.
    pub seq: u64,
    /// Instance that emitted it.
    pub module: String,
    pub stream: String,
    /// Milliseconds since the Unix epoch when it was emitted.
    pub ts_ms: u64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Something that happened on a node that an operator may want to read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// Milliseconds since the Unix epoch on the node's clock.
    pub ts_ms: u64,
    /// The module instance it concerns, if any.
    pub module: Option<String>,
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EventKind {
    /// A module wrote a log line (`level` is `trace`…`error`). Sent by nodes of earlier
    /// versions only: module logs are now the telemetry stream `$log`; still decoded.
    ModuleLog { level: String, message: String },
    /// A module instance initialised and runs.
    ModuleStarted,
    /// A module instance trapped or refused to start; it is restarted with backoff.
    ModuleFailed { error: String },
}

/// Buffered records on their way to the control plane, all of one buffer epoch.
///
/// A node's records are identified by (epoch, seq). The epoch is a random number the node
/// draws each time it opens its store, so a restarted node, a wiped data directory or one
/// restored from an old backup never sends a (epoch, seq) the control plane already holds
/// for other data. Sequence numbers also never repeat within a store (the node persists
/// its high-water mark), so they keep increasing across ordinary restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryBatch {
    /// The buffer epoch of every record in the batch (0: a node from before epochs).
    #[serde(default)]
    pub epoch: u64,
    /// The first sequence number of the epoch: the control plane's mark for an epoch it has
    /// not seen starts just below it (0 from nodes before epochs: treated as 1).
    #[serde(default)]
    pub epoch_start: u64,
    /// The lowest sequence number of the epoch the node still holds: anything below it that
    /// the control plane lacks was dropped by the node (buffer quota or TTL) and will never
    /// come.
    pub first_available: u64,
    /// Records in increasing sequence order, contiguous unless the node dropped some.
    pub records: Vec<TelemetryRecord>,
}

/// The control plane has durably stored every record of the node's buffer `epoch` up to
/// sequence number `upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetryAck {
    #[serde(default)]
    pub epoch: u64,
    pub upto: u64,
}

/// The state of a node's telemetry buffer, as its heartbeat reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BufferStatus {
    /// Records waiting for acknowledgement.
    pub pending: u64,
    pub bytes: u64,
    /// Age of the oldest waiting record, milliseconds.
    pub oldest_age_ms: u64,
    /// Records dropped (quota) since the node started.
    pub dropped: u64,
    /// The buffer's byte quota (0: unknown).
    #[serde(default)]
    pub quota_bytes: u64,
}

/// A node asks for part of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    pub digest: Digest,
    /// First byte wanted: a node resumes where it stopped.
    pub offset: u64,
    /// How many chunks the control plane may send in answer (a flow-control window).
    pub max_chunks: u32,
}

/// The telemetry stream module log lines travel on (info and above): buffered on the node
/// and delivered once like any telemetry. Payload: JSON `{"level": "...", "message": "..."}`.
/// Streams starting with `$` are reserved: modules cannot emit on them.
pub const LOG_STREAM: &str = "$log";

/// Size of one blob chunk: well below every MQTT packet limit we configure.
pub const BLOB_CHUNK_SIZE: usize = 64 * 1024;

/// The control plane's answer to a [`BlobRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobReply {
    Chunk(BlobChunk),
    /// The control plane has no blob with this digest.
    NotFound {
        digest: Digest,
    },
}

/// Bytes `offset..offset + data.len()` of a blob of `total` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobChunk {
    pub digest: Digest,
    pub offset: u64,
    pub total: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn bounded_text_cuts_at_a_character_boundary() {
        assert_eq!(bounded_text("short".into(), 10), "short");
        let cut = bounded_text("é".repeat(100), 11);
        assert!(cut.len() <= 11 && cut.ends_with('…'), "{cut}");
        assert!(cut.starts_with("éé"));
    }

    use super::*;
    use crate::{decode, encode};
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    fn digest() -> impl Strategy<Value = Digest> {
        any::<[u8; 32]>().prop_map(Digest::from_bytes)
    }

    fn module_state() -> impl Strategy<Value = ModuleState> {
        prop_oneof![
            Just(ModuleState::Fetching),
            Just(ModuleState::Compiling),
            Just(ModuleState::Starting),
            Just(ModuleState::Running),
            Just(ModuleState::Failed),
        ]
    }

    fn module_status() -> impl Strategy<Value = ModuleStatus> {
        (
            ".{0,20}",
            digest(),
            module_state(),
            proptest::option::of(".{0,40}"),
            any::<u32>(),
        )
            .prop_map(|(name, digest, state, last_error, restarts)| ModuleStatus {
                name,
                digest,
                state,
                last_error,
                restarts,
                stats: ModuleStats {
                    messages: restarts as u64 * 3,
                    errors: 1,
                    dropped: 2,
                    published: 3,
                    refused: 4,
                    emitted: 5,
                },
            })
    }

    fn heartbeat() -> impl Strategy<Value = Heartbeat> {
        (
            ".{0,20}",
            any::<u64>(),
            ".{0,10}",
            ".{0,10}",
            btree_map(".{0,8}", ".{0,8}", 0..4),
            any::<u64>(),
            any::<u64>(),
            vec(module_status(), 0..4),
        )
            .prop_map(
                |(node_id, sent_at_ms, arch, version, labels, dg, ag, modules)| Heartbeat {
                    node_id,
                    sent_at_ms,
                    arch,
                    version,
                    labels,
                    desired_generation: dg,
                    applied_generation: ag,
                    modules,
                    buffer: BufferStatus {
                        pending: dg,
                        bytes: ag,
                        oldest_age_ms: sent_at_ms,
                        dropped: 7,
                        quota_bytes: 9,
                    },
                    resources: Resources {
                        disk_free_bytes: dg,
                        disk_total_bytes: ag,
                        memory_available_bytes: 3,
                        memory_total_bytes: sent_at_ms,
                    },
                    precompile_key: (dg % 2 == 0)
                        .then(|| format!("x86_64-unknown-linux-gnu/{ag:016x}")),
                },
            )
    }

    fn status_message() -> impl Strategy<Value = StatusMessage> {
        prop_oneof![
            heartbeat().prop_map(StatusMessage::Heartbeat),
            (".{0,20}", any::<bool>()).prop_map(|(node_id, graceful)| StatusMessage::Offline(
                Offline { node_id, graceful }
            )),
        ]
    }

    fn module_spec() -> impl Strategy<Value = ModuleSpec> {
        (
            ".{0,20}",
            digest(),
            any::<u64>(),
            vec(".{0,20}", 0..4),
            ".{0,60}",
            vec(".{0,10}", 0..3),
            proptest::option::of(any::<u64>()),
            limits(),
        )
            .prop_map(
                |(name, digest, size, subscriptions, config, publish_prefixes, tick_ms, limits)| {
                    ModuleSpec {
                        module: format!("{name}-m"),
                        version: "1".into(),
                        name,
                        digest,
                        size,
                        subscriptions,
                        config,
                        publish_prefixes,
                        tick_ms,
                        limits,
                        // Exercise both shapes: signed (from the digest) and unsigned.
                        signature: (size % 2 == 0).then(|| {
                            let m = crate::signing::Signed {
                                name: "m",
                                version: "1",
                                digest: &digest,
                            };
                            crate::signing::ModuleSignature::sign(&[3; 32], m)
                        }),
                        native: (size % 3 == 0).then(|| NativeArtifact {
                            key: "aarch64-unknown-linux-gnu/0123456789abcdef".into(),
                            digest: Digest::of(&size.to_be_bytes()),
                            size: size / 2,
                        }),
                    }
                },
            )
    }

    fn limits() -> impl Strategy<Value = Limits> {
        use proptest::option::of;
        (
            of(any::<u64>()),
            of(any::<u64>()),
            of(any::<u64>()),
            of(any::<u32>()),
        )
            .prop_map(
                |(memory_bytes, call_timeout_ms, kv_bytes, publish_per_sec)| Limits {
                    memory_bytes,
                    call_timeout_ms,
                    kv_bytes,
                    publish_per_sec,
                },
            )
    }

    fn desired_state() -> impl Strategy<Value = DesiredState> {
        (any::<u64>(), vec(module_spec(), 0..4)).prop_map(|(generation, modules)| DesiredState {
            generation,
            modules,
        })
    }

    fn blob_request() -> impl Strategy<Value = BlobRequest> {
        (digest(), any::<u64>(), any::<u32>()).prop_map(|(digest, offset, max_chunks)| {
            BlobRequest {
                digest,
                offset,
                max_chunks,
            }
        })
    }

    fn blob_reply() -> impl Strategy<Value = BlobReply> {
        prop_oneof![
            (
                digest(),
                any::<u64>(),
                any::<u64>(),
                vec(any::<u8>(), 0..512)
            )
                .prop_map(|(digest, offset, total, data)| BlobReply::Chunk(
                    BlobChunk {
                        digest,
                        offset,
                        total,
                        data
                    }
                )),
            digest().prop_map(|digest| BlobReply::NotFound { digest }),
        ]
    }

    fn telemetry_record() -> impl Strategy<Value = TelemetryRecord> {
        (
            any::<u64>(),
            ".{0,10}",
            ".{0,10}",
            any::<u64>(),
            vec(any::<u8>(), 0..64),
        )
            .prop_map(|(seq, module, stream, ts_ms, payload)| TelemetryRecord {
                seq,
                module,
                stream,
                ts_ms,
                payload,
            })
    }

    fn node_event() -> impl Strategy<Value = NodeEvent> {
        let kind = prop_oneof![
            (".{0,5}", ".{0,30}")
                .prop_map(|(level, message)| EventKind::ModuleLog { level, message }),
            Just(EventKind::ModuleStarted),
            ".{0,30}".prop_map(|error| EventKind::ModuleFailed { error }),
        ];
        (any::<u64>(), proptest::option::of(".{0,10}"), kind).prop_map(|(ts_ms, module, kind)| {
            NodeEvent {
                ts_ms,
                module,
                kind,
            }
        })
    }

    fn telemetry_batch() -> impl Strategy<Value = TelemetryBatch> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            vec(telemetry_record(), 0..4),
        )
            .prop_map(
                |(epoch, epoch_start, first_available, records)| TelemetryBatch {
                    epoch,
                    epoch_start,
                    first_available,
                    records,
                },
            )
    }

    proptest! {
        #[test]
        fn telemetry_batch_round_trip(m in telemetry_batch()) {
            prop_assert_eq!(decode::<TelemetryBatch>(&encode(&m)), Ok(m));
        }

        #[test]
        fn telemetry_ack_round_trip(epoch in any::<u64>(), upto in any::<u64>()) {
            let m = TelemetryAck { epoch, upto };
            prop_assert_eq!(decode::<TelemetryAck>(&encode(&m)), Ok(m));
        }

        #[test]
        fn node_event_round_trip(m in node_event()) {
            prop_assert_eq!(decode::<NodeEvent>(&encode(&m)), Ok(m));
        }

        #[test]
        fn telemetry_record_round_trip(m in telemetry_record()) {
            prop_assert_eq!(decode::<TelemetryRecord>(&encode(&m)), Ok(m));
        }

        #[test]
        fn status_round_trip(m in status_message()) {
            prop_assert_eq!(decode::<StatusMessage>(&encode(&m)), Ok(m));
        }

        #[test]
        fn desired_round_trip(m in desired_state()) {
            prop_assert_eq!(decode::<DesiredState>(&encode(&m)), Ok(m));
        }

        #[test]
        fn blob_request_round_trip(m in blob_request()) {
            prop_assert_eq!(decode::<BlobRequest>(&encode(&m)), Ok(m));
        }

        #[test]
        fn blob_reply_round_trip(m in blob_reply()) {
            prop_assert_eq!(decode::<BlobReply>(&encode(&m)), Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
            let _ = decode::<StatusMessage>(&bytes);
            let _ = decode::<DesiredState>(&bytes);
            let _ = decode::<BlobReply>(&bytes);
        }
    }

    /// Writes the seed corpus of the fuzz target `wire`:
    /// `WEDGE_FUZZ_SEEDS=tests/fuzz/corpus/wire cargo test -p wedge-proto -- --ignored write_fuzz_seeds`.
    #[test]
    #[ignore = "writes files; run by hand to refresh the fuzz corpus"]
    fn write_fuzz_seeds() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
        let Ok(dir) = std::env::var("WEDGE_FUZZ_SEEDS") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("seed directory");
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
        );
        let mut write =
            |kind: &str, n: usize, bytes: &mut dyn FnMut(&mut TestRunner) -> Vec<u8>| {
                let k = crate::wire_check::kind_of(kind).expect("a wire kind");
                for i in 0..n {
                    let mut input = vec![k];
                    input.extend(bytes(&mut runner));
                    std::fs::write(dir.join(format!("{kind}-{i}")), input).expect("seed written");
                }
            };
        fn sample<S: Strategy>(runner: &mut TestRunner, s: S) -> S::Value {
            s.new_tree(runner).expect("a sample").current()
        }
        write("StatusMessage", 4, &mut |r| {
            encode(&sample(r, status_message()))
        });
        write("TelemetryBatch", 4, &mut |r| {
            encode(&sample(r, telemetry_batch()))
        });
        write("BlobRequest", 2, &mut |r| {
            encode(&sample(r, blob_request()))
        });
        write("NodeEvent", 3, &mut |r| encode(&sample(r, node_event())));
        write("DesiredState", 4, &mut |r| {
            encode(&sample(r, desired_state()))
        });
        write("BlobReply", 3, &mut |r| encode(&sample(r, blob_reply())));
        write("TelemetryAck", 1, &mut |_| {
            encode(&TelemetryAck { epoch: 7, upto: 42 })
        });
        write("CertRequest", 1, &mut |_| {
            encode(&CertRequest {
                csr: "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
                token: Some("wbt_0123".into()),
            })
        });
        write("CertReply", 2, &mut |_| {
            encode(&CertReply::Refused {
                reason: "no".into(),
            })
        });
    }

    #[test]
    fn blob_chunk_is_compact() {
        // Bytes travel as a CBOR byte string, not an array of integers.
        let chunk = BlobReply::Chunk(BlobChunk {
            digest: Digest::of(b""),
            offset: 0,
            total: 1000,
            data: vec![0xff; 1000],
        });
        assert!(encode(&chunk).len() < 1100);
    }
}

/// A certificate signing request: a node enrolling (`wedge/v1/enroll/{node}/req`) or renewing
/// (`…/nodes/{node}/cert/req`). The control plane decides the certificate's name and lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertRequest {
    /// PEM.
    pub csr: String,
    /// The bootstrap token, when enrolling.
    #[serde(default)]
    pub token: Option<String>,
}

/// The answer to a [`CertRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CertReply {
    Issued {
        /// The node's certificate, PEM.
        certificate: String,
        /// The control plane's CA certificate, PEM: what the node verifies the broker with.
        ca: String,
    },
    Refused {
        reason: String,
    },
}
