//! # wedge-broker — the embedded MQTT broker behind a handle
//!
//! Both binaries embed [rumqttd]. It is wrapped here so its types never leak into our
//! APIs and so its sharp edges are handled in one place:
//!
//! - `Broker::start()` blocks forever and has no shutdown: it runs on its own thread and
//!   lives as long as the process.
//! - A listener that fails to bind only logs an error inside rumqttd: [`EmbeddedBroker::start`]
//!   checks the port first and waits until the broker accepts connections.
//! - rumqttd cannot report the port it bound, so a requested port 0 is resolved to a free
//!   port here before rumqttd binds it.
//! - A publish to a topic no filter matches makes rumqttd disconnect an in-process link, and
//!   with dynamic filters every new topic would get its own commit log. The broker is
//!   started with the single filter `#` so every topic has a home and memory stays bounded
//!   by the segment settings.
//! - An in-process link stalls unless it is told it is ready again after the router
//!   unschedules it ([`LocalReceiver::next`] does that).

mod link;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("max_payload_size", &self.max_payload_size)
            .field("gate", &self.gate.is_some())
            .finish_non_exhaustive()
    }
}

pub use link::{Delivery, LocalPublisher, LocalReceiver};
// The gate's traits are ours (`wedge-gate`); the patched rumqttd calls them.
pub use wedge_gate::{Admission, BoxFuture, Gate, Pace, Refusal, Session, Stream, Unrestricted};

/// Largest PUBLISH payload the broker accepts unless configured otherwise, bytes.
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;

/// How to run the embedded broker.
#[derive(Clone)]
pub struct Config {
    /// Address of the MQTT (v3.1.1) listener. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest accepted PUBLISH payload in bytes.
    pub max_payload_size: usize,
    pub max_connections: usize,
    /// Size of one in-memory commit-log segment; at least `max_payload_size`.
    pub segment_size: usize,
    /// Segments kept per filter before the oldest is dropped.
    pub segment_count: usize,
    /// Who may connect and what they may do (TLS, certificates, passwords, topic rules);
    /// `None` admits anyone to anything.
    pub gate: Option<Arc<dyn Gate>>,
}

impl Config {
    /// Defaults sized for an edge device.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_payload_size: DEFAULT_MAX_PAYLOAD,
            max_connections: 1000,
            segment_size: 1024 * 1024,
            segment_count: 3,
            gate: None,
        }
    }
}

/// What went wrong starting the broker or one of its links.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the broker did not accept connections on {0} within 5 s")]
    NotReady(SocketAddr),
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot open an in-process link: {0}")]
    Link(String),
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    running: Arc<AtomicBool>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts the broker and returns once it accepts connections.
    pub fn start(config: &Config) -> Result<Self, Error> {
        Ok(Self::start_inner(config, None)?.0)
    }

    /// Starts the broker with an in-process link for `client_id`.
    pub fn start_with_link(
        config: &Config,
        client_id: &str,
    ) -> Result<(Self, LocalPublisher, LocalReceiver), Error> {
        let (broker, link) = Self::start_inner(config, Some(client_id))?;
        let (publisher, receiver) = link.ok_or_else(|| Error::Link("no link".into()))?;
        Ok((broker, publisher, receiver))
    }

    #[allow(clippy::type_complexity)]
    fn start_inner(
        config: &Config,
        client_id: Option<&str>,
    ) -> Result<(Self, Option<(LocalPublisher, LocalReceiver)>), Error> {
        // Bind once ourselves: it reports "address in use" clearly and resolves port 0.
        let probe = TcpListener::bind(config.listen).map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = probe.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        drop(probe);

        let mut broker = rumqttd::Broker::new(rumqttd_config(config, addr));
        let link = match client_id {
            Some(id) => {
                let (tx, rx) = broker.link(id).map_err(|e| Error::Link(e.to_string()))?;
                Some(link::split(tx, rx))
            }
            None => None,
        };
        let running = Arc::new(AtomicBool::new(true));
        let alive = running.clone();
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded broker stopped");
                }
                alive.store(false, Ordering::Relaxed);
            })
            .map_err(Error::Thread)?;

        let connect_to = if addr.ip().is_unspecified() {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        } else {
            addr
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        // Behind a gate (TLS) a plain MQTT hello cannot succeed: an open port must do.
        let gated = config.gate.is_some();
        let ready = |addr| {
            if gated {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            } else {
                mqtt_handshake(addr)
            }
        };
        while !ready(connect_to) {
            if Instant::now() > deadline {
                return Err(Error::NotReady(addr));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((Self { addr, running }, link))
    }

    /// The address the broker listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the broker still runs (it has no shutdown: it stops only when it fails).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

/// Whether an MQTT broker at `addr` answers CONNECT with an accepting CONNACK. A bare TCP
/// connect would do to see the port open, but rumqttd logs an error for every connection
/// that closes before CONNECT, so the probe says a proper hello and goodbye.
fn mqtt_handshake(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    const CLIENT_ID: &[u8] = b"wedge-broker-probe";
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 10 s.
    let mut packet = vec![0x10, (10 + 2 + CLIENT_ID.len()) as u8];
    packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10]);
    packet.extend_from_slice(&[0, CLIENT_ID.len() as u8]);
    packet.extend_from_slice(CLIENT_ID);
    let mut connack = [0u8; 4];
    let ok = stream.write_all(&packet).is_ok()
        && stream.read_exact(&mut connack).is_ok()
        && connack == [0x20, 0x02, 0x00, 0x00];
    let _ = stream.write_all(&[0xE0, 0x00]); // DISCONNECT
    ok
}

fn rumqttd_config(config: &Config, listen: SocketAddr) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: config.max_payload_size,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
        gate: config.gate.clone(),
    };
    let server = rumqttd::ServerSettings {
        name: "mqtt".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: config.max_connections,
            max_outgoing_packet_count: 200,
            max_segment_size: config.segment_size.max(config.max_payload_size * 2),
            max_segment_count: config.segment_count.max(1),
            custom_segment: None,
            initialized_filters: Some(vec!["#".into()]),
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn link_round_trip_and_port_zero() {
        let cfg = Config::new("127.0.0.1:0".parse().unwrap());
        let (broker, publisher, mut receiver) =
            EmbeddedBroker::start_with_link(&cfg, "test-link").unwrap();
        assert_ne!(broker.local_addr().port(), 0);
        publisher.subscribe("in/#").unwrap();
        // A topic nobody subscribes to must not break the link.
        publisher.publish("nobody/listens", b"x".to_vec()).unwrap();
        // More messages than the point where an unscheduled link used to stall.
        for i in 0..500u32 {
            publisher
                .publish(format!("in/{i}"), i.to_string().into_bytes())
                .unwrap();
        }
        let mut got = 0;
        while got < 500 {
            let delivery = tokio::time::timeout(Duration::from_secs(10), receiver.next())
                .await
                .expect("message within 10 s")
                .expect("link open");
            assert_eq!(&*delivery.topic, format!("in/{got}"));
            assert_eq!(delivery.payload, got.to_string().into_bytes());
            assert!(!delivery.acknowledged, "the link publishes at QoS 0");
            got += 1;
        }
    }

    #[test]
    fn busy_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = Config::new(taken.local_addr().unwrap());
        assert!(matches!(
            EmbeddedBroker::start(&cfg),
            Err(Error::Bind { .. })
        ));
    }
}
