//! Devices on a node's local broker: accounts with hashed passwords, refusals, anonymous
//! access only when configured, and TLS.

use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet};
use wedge_tests::{ControlPlane, DEVICE_PASSWORD, DEVICE_USER, Device, Node};

async fn outcome(
    addr: std::net::SocketAddr,
    credentials: Option<(&str, &str)>,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<(), ConnectionError> {
    let mut opts = MqttOptions::new("probe", addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(5));
    if let Some((user, password)) = credentials {
        opts.set_credentials(user, password);
    }
    if let Some(tls) = tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls),
        ));
    }
    let (_client, mut eventloop) = AsyncClient::new(opts, 8);
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .unwrap_or(Err(ConnectionError::NetworkTimeout))
}

fn refused(r: Result<(), ConnectionError>) -> bool {
    matches!(
        r,
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword
        ))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_need_an_account_unless_anonymous_access_is_on() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let node = Node::start(&cp, "gw", &[]).await?;
    let addr = node.local_mqtt_addr;

    outcome(addr, Some((DEVICE_USER, DEVICE_PASSWORD)), None).await?;
    assert!(refused(
        outcome(addr, Some((DEVICE_USER, "guess")), None).await
    ));
    assert!(refused(
        outcome(addr, Some(("nobody", DEVICE_PASSWORD)), None).await
    ));
    assert!(
        refused(outcome(addr, None, None).await),
        "anonymous is off by default"
    );
    // A device with an account works end to end (subscribe and receive).
    let mut device = Device::connect(addr, "d1", &["t/#"]).await?;
    device.publish("t/x", b"1").await?;
    let (topic, _) = device.recv(Duration::from_secs(10)).await?;
    assert_eq!(topic, "t/x");

    let open = Node::start_configured(&cp, "open", &[], "127.0.0.1:0".parse()?, |c| {
        c.devices.allow_anonymous = true;
    })
    .await?;
    outcome(open.local_mqtt_addr, None, None).await?;
    // Anonymous on does not make a wrong password right.
    assert!(refused(
        outcome(open.local_mqtt_addr, Some((DEVICE_USER, "guess")), None).await
    ));
    cp.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_local_broker_can_speak_tls() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let pki = tempfile::tempdir()?;
    let ca = wedge_pki::Ca::load_or_create(pki.path())?;
    let server = ca.issue_server(&["127.0.0.1".to_string()], Duration::from_secs(3600))?;
    let cert = pki.path().join("local.crt");
    let key = pki.path().join("local.key");
    std::fs::write(&cert, &server.cert_pem)?;
    std::fs::write(&key, &server.key_pem)?;
    let node = Node::start_configured(&cp, "tls-gw", &[], "127.0.0.1:0".parse()?, |c| {
        c.devices.tls_cert_file = Some(cert.clone());
        c.devices.tls_key_file = Some(key.clone());
    })
    .await?;
    let addr = node.local_mqtt_addr;
    let tls = wedge_pki::client_config_anonymous(ca.cert_pem())?;
    outcome(
        addr,
        Some((DEVICE_USER, DEVICE_PASSWORD)),
        Some(tls.clone()),
    )
    .await?;
    assert!(refused(
        outcome(addr, Some((DEVICE_USER, "guess")), Some(tls)).await
    ));
    assert!(
        outcome(addr, Some((DEVICE_USER, DEVICE_PASSWORD)), None)
            .await
            .is_err(),
        "plain MQTT on a TLS port"
    );

    // Half a TLS configuration is a configuration error.
    let half = Node::start_configured(&cp, "half", &[], "127.0.0.1:0".parse()?, |c| {
        c.devices.tls_cert_file = Some(cert.clone());
    })
    .await;
    assert!(half.is_err());
    cp.stop().await;
    Ok(())
}
