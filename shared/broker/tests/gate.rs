//! The gate against a hostile client speaking raw MQTT 3.1.1: nothing it may not do reaches
//! the router, whatever it sends after the forbidden packet, and the broker keeps serving
//! everyone else.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wedge_broker::{
    Admission, BoxFuture, Config, EmbeddedBroker, Gate, LocalReceiver, Pace, Refusal, Session,
    Stream,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// Anyone may connect; nobody may publish under `forbidden/` or retain under `noretain/`.
/// Sessions carry the gate's pace, if it has one.
struct TestGate(Option<Pace>);

struct TestSession(Option<Pace>);

impl Session for TestSession {
    fn may_publish(&self, topic: &str) -> bool {
        !topic.starts_with("forbidden/")
    }
    fn may_subscribe(&self, _: &str) -> bool {
        true
    }
    fn may_retain(&self, topic: &str) -> bool {
        !topic.starts_with("noretain/")
    }
    fn ended(&self) -> BoxFuture<()> {
        Box::pin(std::future::pending())
    }
    fn pace(&self) -> Option<Pace> {
        self.0.clone()
    }
}

impl Gate for TestGate {
    fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> BoxFuture<std::io::Result<(Box<dyn Stream>, Option<Vec<u8>>)>> {
        Box::pin(async move { Ok((Box::new(stream) as Box<dyn Stream>, None)) })
    }
    fn admit(&self, _: Admission) -> BoxFuture<Result<Arc<dyn Session>, Refusal>> {
        let session = TestSession(self.0.clone());
        Box::pin(async { Ok(Arc::new(session) as Arc<dyn Session>) })
    }
}

fn broker() -> (EmbeddedBroker, wedge_broker::LocalPublisher, LocalReceiver) {
    paced_broker(None)
}

fn paced_broker(
    pace: Option<Pace>,
) -> (EmbeddedBroker, wedge_broker::LocalPublisher, LocalReceiver) {
    let mut cfg = Config::new("127.0.0.1:0".parse().unwrap());
    cfg.gate = Some(Arc::new(TestGate(pace)));
    EmbeddedBroker::start_with_link(&cfg, "wedge:test-link").unwrap()
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

fn connect(client_id: &str, clean: bool) -> Vec<u8> {
    let mut body = string("MQTT");
    body.extend_from_slice(&[4, if clean { 0x02 } else { 0x00 }, 0, 30]);
    body.extend_from_slice(&string(client_id));
    packet(0x10, &body)
}

fn publish(topic: &str, payload: &[u8], qos: u8, retain: bool, pkid: u16) -> Vec<u8> {
    let mut body = string(topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &body)
}

fn subscribe(filter: &str) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend_from_slice(&string(filter));
    body.push(0);
    packet(0x82, &body)
}

/// A packet type (0) MQTT does not define: the parser refuses the frame.
const MALFORMED: [u8; 2] = [0x00, 0x00];

/// Connects and returns the stream and the CONNACK's session-present flag.
async fn connected(broker: &EmbeddedBroker, client_id: &str, clean: bool) -> (TcpStream, bool) {
    let mut stream = TcpStream::connect(broker.local_addr()).await.unwrap();
    stream.write_all(&connect(client_id, clean)).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .unwrap();
    assert_eq!(connack[..2], [0x20, 0x02]);
    assert_eq!(connack[3], 0, "connection accepted");
    (stream, connack[2] & 1 == 1)
}

/// Waits until the broker closes `stream`, discarding whatever it sends first.
async fn closed(stream: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("the broker ends the connection");
}

/// The next message on the in-process link; it must come within the deadline.
async fn next(receiver: &mut LocalReceiver) -> (String, Vec<u8>) {
    let delivery = tokio::time::timeout(DEADLINE, receiver.next())
        .await
        .expect("a message within the deadline")
        .expect("link open");
    (delivery.topic.to_string(), delivery.payload.to_vec())
}

/// An honest client's publish arrives; nothing the hostile client sent came before it.
/// (Allowed messages of the hostile client may come before it.)
async fn honest_client_still_served(broker: &EmbeddedBroker, receiver: &mut LocalReceiver) {
    let (mut honest, _) = connected(broker, "honest", true).await;
    honest
        .write_all(&publish("ok/honest", b"still here", 0, false, 0))
        .await
        .unwrap();
    loop {
        let (topic, payload) = next(receiver).await;
        assert!(
            !topic.starts_with("forbidden/") && topic != "ok/before",
            "{topic} reached a subscriber"
        );
        if topic == "ok/honest" {
            assert_eq!(payload, b"still here");
            return;
        }
    }
}

#[tokio::test]
async fn a_forbidden_publish_followed_by_a_malformed_frame_never_reaches_the_router() {
    let (broker, link, mut receiver) = broker();
    link.subscribe("#").unwrap();
    for round in 0..20 {
        let (mut hostile, _) = connected(&broker, &format!("hostile-{round}"), true).await;
        // Allowed publishes first, each its own write, so the router has work queued for
        // this connection when the last write arrives: a forbidden publish and garbage,
        // read together.
        for i in 0..50 {
            let _ = hostile
                .write_all(&publish(&format!("ok/{round}/{i}"), &[0; 256], 0, false, 0))
                .await;
        }
        let mut bytes = publish("forbidden/desired", b"forged", 0, false, 0);
        bytes.extend_from_slice(&MALFORMED);
        let _ = hostile.write_all(&bytes).await;
        closed(&mut hostile).await;
    }
    honest_client_still_served(&broker, &mut receiver).await;
}

#[tokio::test]
async fn a_malformed_frame_drops_what_came_with_it_and_nothing_else() {
    let (broker, link, mut receiver) = broker();
    link.subscribe("#").unwrap();
    let (mut client, _) = connected(&broker, "sloppy", true).await;
    let mut bytes = publish("ok/before", b"1", 0, false, 0);
    bytes.extend_from_slice(&MALFORMED);
    client.write_all(&bytes).await.unwrap();
    closed(&mut client).await;
    honest_client_still_served(&broker, &mut receiver).await;
}

#[tokio::test]
async fn retain_shared_subscriptions_and_persistent_sessions_are_refused_or_cleaned() {
    let (broker, link, mut receiver) = broker();
    link.subscribe("#").unwrap();

    // A retained publish where the session forbids retaining ends the connection.
    let (mut client, _) = connected(&broker, "retainer", true).await;
    client
        .write_all(&publish("noretain/x", b"sticky", 0, true, 0))
        .await
        .unwrap();
    closed(&mut client).await;

    // A shared subscription ends the connection.
    let (mut client, _) = connected(&broker, "sharer", true).await;
    client.write_all(&subscribe("$share/g/ok/#")).await.unwrap();
    closed(&mut client).await;

    // A persistent session is not kept: reconnecting finds no session present.
    let (mut client, present) = connected(&broker, "persistent", false).await;
    assert!(!present);
    client.write_all(&subscribe("ok/#")).await.unwrap();
    client.write_all(&[0xE0, 0x00]).await.unwrap(); // DISCONNECT
    closed(&mut client).await;
    let (_client, present) = connected(&broker, "persistent", false).await;
    assert!(!present, "a gated connection always gets a clean session");

    honest_client_still_served(&broker, &mut receiver).await;
}

#[tokio::test]
async fn qos2_publishes_never_released_are_bounded() {
    let (broker, link, mut receiver) = broker();
    link.subscribe("ok/#").unwrap();
    let (mut client, _) = connected(&broker, "never-releases", true).await;
    // Publishes at QoS 2 and never sends PUBREL: past the bound the broker ends the
    // connection instead of keeping them all. (Writes may fail once it has.)
    let payload = vec![b'x'; 512];
    let flood = async {
        for pkid in 1..=4_000u16 {
            if client
                .write_all(&publish("ok/qos2", &payload, 2, false, pkid))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the flood is written or refused in time");
    closed(&mut client).await;
    honest_client_still_served(&broker, &mut receiver).await;
}

/// While the pace is held a QoS 1 publish is neither acknowledged nor delivered; once it
/// is released both happen, and the link learns the message was published at QoS 1.
#[tokio::test]
async fn a_held_pace_withholds_the_puback_until_it_is_released() {
    let pace = Pace::default();
    let (broker, publisher, mut receiver) = paced_broker(Some(pace.clone()));
    publisher.subscribe("#").unwrap();
    let (mut device, _) = connected(&broker, "device", true).await;

    device
        .write_all(&publish("t/0", b"zero", 0, false, 0))
        .await
        .unwrap();
    let first = tokio::time::timeout(DEADLINE, receiver.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&*first.topic, first.acknowledged), ("t/0", false));

    pace.hold();
    device
        .write_all(&publish("t/1", b"one", 1, false, 7))
        .await
        .unwrap();
    // Nothing may arrive while held; a short look is enough to catch a broker that reads
    // anyway (it acknowledges within a millisecond when it does).
    let mut puback = [0u8; 4];
    let early = tokio::time::timeout(Duration::from_millis(300), device.read_exact(&mut puback));
    assert!(early.await.is_err(), "PUBACK sent while the pace was held");
    let none = tokio::time::timeout(Duration::from_millis(50), receiver.next()).await;
    assert!(none.is_err(), "delivered while the pace was held");

    pace.release();
    tokio::time::timeout(DEADLINE, device.read_exact(&mut puback))
        .await
        .expect("PUBACK after release")
        .unwrap();
    assert_eq!(puback, [0x40, 0x02, 0, 7]);
    let second = tokio::time::timeout(DEADLINE, receiver.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&*second.topic, second.acknowledged), ("t/1", true));
    assert_eq!(&second.payload[..], b"one");
}

/// The link takes the broker's batches whole: after one `next`, `try_next` hands over what
/// else is ready without waiting, in order, and nothing is lost or repeated across the two.
#[tokio::test]
async fn try_next_takes_the_rest_of_a_batch_in_order() {
    let (broker, link, mut receiver) = broker();
    link.subscribe("#").unwrap();
    let (mut client, _) = connected(&broker, "burst", true).await;
    const N: usize = 2000;
    let mut bytes = Vec::new();
    for i in 0..N {
        bytes.extend_from_slice(&publish("ok/burst", i.to_string().as_bytes(), 0, false, 0));
    }
    client.write_all(&bytes).await.unwrap();
    let (mut seen, mut without_waiting) = (Vec::new(), 0);
    while seen.len() < N {
        let (_, payload) = next(&mut receiver).await;
        seen.push(payload);
        while let Some(delivery) = receiver.try_next() {
            without_waiting += 1;
            seen.push(delivery.payload.to_vec());
        }
    }
    let expected: Vec<Vec<u8>> = (0..N).map(|i| i.to_string().into_bytes()).collect();
    assert_eq!(seen, expected);
    assert!(without_waiting > 0, "no message was taken from a batch");
    let none = tokio::time::timeout(Duration::from_millis(50), receiver.next()).await;
    assert!(none.is_err(), "nothing more: {none:?}");
}
