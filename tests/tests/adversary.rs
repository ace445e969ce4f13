//! The adversary's moves, each with a proof that it fails and that honest parts keep
//! working. (The beginning of the adversary suite: more moves join it as the holes of the
//! security review close.)

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use wedge_shared::messages::{BlobReply, BlobRequest};
use wedge_shared::topics::NodeTopic;
use wedge_tests::{ControlPlane, Node, idle_heartbeat};

const DEADLINE: Duration = Duration::from_secs(60);

/// A node of the control plane's broker with a valid certificate for `id` (enrolled as far
/// as the broker can tell), driven by hand.
fn hostile_node(cp: &ControlPlane, id: &str) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let tls = cp.node_tls(id)?;
    let mut opts = MqttOptions::new(id, "127.0.0.1", cp.mqtt_addr.port());
    opts.set_keep_alive(Duration::from_secs(10));
    // Blob chunks are larger than rumqttc's default packet limit.
    opts.set_max_packet_size(
        wedge_shared::envelope::MAX_MESSAGE_SIZE + 1024,
        wedge_shared::envelope::MAX_MESSAGE_SIZE + 1024,
    );
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    Ok(AsyncClient::new(opts, 16))
}

/// Asks for the first chunk of `digest` on `node`'s own topics and returns the answer.
async fn ask_for_blob(
    client: &AsyncClient,
    eventloop: &mut rumqttc::EventLoop,
    node: &str,
    digest: wedge_shared::Digest,
) -> anyhow::Result<BlobReply> {
    let request = BlobRequest {
        digest,
        offset: 0,
        max_chunks: 1,
    };
    client
        .publish(
            NodeTopic::BlobRequest.for_node(node),
            QoS::AtLeastOnce,
            false,
            wedge_shared::encode(&request),
        )
        .await?;
    let answer = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = eventloop.poll().await? {
                return anyhow::Ok(wedge_shared::decode::<BlobReply>(&p.payload)?);
            }
        }
    })
    .await??;
    Ok(answer)
}

/// A node asks for a module deployed only to another node: "not found", though the blob
/// exists; the same node gets a module of its own desired state; the honest node runs its
/// module all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_fetches_only_the_modules_of_its_own_desired_state() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let api = &cp.api;
    let honest = Node::start(&cp, "honest", &[]).await?;
    let secret = api.upload_module("window-stats", "1").await?;
    let own = api.upload_module("forward", "1").await?;
    api.deploy(
        &json!({"name": "secret", "module": "window-stats@1", "nodes": ["honest"],
        "subscriptions": ["sensors/#"]}),
    )
    .await?;
    api.deploy(
        &json!({"name": "mine", "module": "forward@1", "nodes": ["nosy"],
        "subscriptions": ["sensors/#"]}),
    )
    .await?;
    api.wait_running_digest("honest", "secret", &secret, DEADLINE)
        .await?;

    let (client, mut eventloop) = hostile_node(&cp, "nosy")?;
    client
        .subscribe(NodeTopic::BlobData.for_node("nosy"), QoS::AtLeastOnce)
        .await?;
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
                return anyhow::Ok(());
            }
        }
    })
    .await??;
    // Its own module is served once its desired state names it (the rollout assigns it
    // within a step), so its desired state exists when it asks for the other one.
    client
        .publish(
            NodeTopic::Status.for_node("nosy"),
            QoS::AtLeastOnce,
            true,
            idle_heartbeat("nosy"),
        )
        .await?;
    let started = std::time::Instant::now();
    loop {
        let answer = ask_for_blob(&client, &mut eventloop, "nosy", own.parse()?).await?;
        if matches!(answer, BlobReply::Chunk(ref c) if c.offset == 0 && !c.data.is_empty()) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < DEADLINE,
            "its own module was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = ask_for_blob(&client, &mut eventloop, "nosy", secret.parse()?).await?;
    assert!(
        matches!(answer, BlobReply::NotFound { .. }),
        "another node's module was served (a chunk of it came back)"
    );
    api.wait_running_digest("honest", "secret", &secret, DEADLINE)
        .await?;
    drop(honest);
    cp.stop().await;
    Ok(())
}
