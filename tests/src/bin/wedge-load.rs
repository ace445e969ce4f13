//! `wedge-load`: the load generator of `tests/benches/throughput.rs`, in its own process.
//! Publishes `--count` readings (`60`…`99`, all above the benchmarks' threshold) to `--topic`
//! as fast as the connection takes them, at `--qos` 0 or 1; at QoS 1 it exits only once every
//! reading is acknowledged (what `mosquitto_pub -l` does not wait for: at its end of input it
//! disconnected with most QoS 1 readings unsent). Prints `sent N acked M in T`.
//!
//! Usage: `wedge-load HOST:PORT --count N --qos 0|1 [--topic T] [--user U --password P]`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

struct Args {
    addr: std::net::SocketAddr,
    count: u64,
    qos: QoS,
    topic: String,
    login: Option<(String, String)>,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let addr = it
        .next()
        .context("usage: wedge-load HOST:PORT --count N --qos 0|1")?;
    let mut a = Args {
        addr: addr.parse().with_context(|| format!("address {addr}"))?,
        count: 100_000,
        qos: QoS::AtMostOnce,
        topic: "sensors/t".into(),
        login: None,
    };
    let (mut user, mut password) = (None, None);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--count" => a.count = value.parse()?,
            "--qos" => {
                a.qos = match value.as_str() {
                    "0" => QoS::AtMostOnce,
                    "1" => QoS::AtLeastOnce,
                    other => bail!("--qos {other}: 0 or 1"),
                }
            }
            "--topic" => a.topic = value,
            "--user" => user = Some(value),
            "--password" => password = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    a.login = user.zip(password);
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let mut opts = MqttOptions::new(
        format!("wedge-load-{}", std::process::id()),
        a.addr.ip().to_string(),
        a.addr.port(),
    );
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = &a.login {
        opts.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    let (count, qos, topic) = (a.count, a.qos, a.topic.clone());
    let started = Instant::now();
    let publisher = tokio::spawn(async move {
        for i in 0..count {
            let reading = (60 + i % 40).to_string();
            client.publish(topic.as_str(), qos, false, reading).await?;
        }
        anyhow::Ok(client)
    });
    let (mut sent, mut acked) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    while (sent < count || (qos == QoS::AtLeastOnce && acked < count)) && Instant::now() < deadline
    {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(_))) => sent += 1,
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => bail!("connection to {}: {e}", a.addr),
        }
    }
    let client = publisher.await??;
    // QoS 0 has no acknowledgement: a disconnect after the last write lets it drain.
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    println!("sent {sent} acked {acked} in {:?}", started.elapsed());
    Ok(())
}
