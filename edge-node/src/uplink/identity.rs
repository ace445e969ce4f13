//! The node's certificate: enrollment, and the files it lives in.
//!
//! A node without a certificate enrolls once: it makes its key pair, connects to the
//! control plane's broker over TLS with no certificate, verifying the broker against the
//! CA hash it was given (`ca_sha256`), shows its bootstrap token as MQTT password, and
//! asks for a certificate on `wedge/v1/enroll/{id}/req`. The key never leaves the node.
//! Key and certificate are saved together in `node.credential` (0600), the CA in
//! `uplink-ca.crt`; from then on the uplink presents the certificate and trusts that CA.
//! Renewal is the session's job ([`super::UplinkSession`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use wedge_pki::Credential;
use wedge_proto::messages::{CertReply, CertRequest};
use wedge_proto::{decode, encode, topics};

const CA_FILE: &str = "uplink-ca.crt";

/// What the uplink presents and trusts.
#[derive(Debug, Clone)]
pub struct Tls {
    pub ca_pem: String,
    pub credential: Credential,
}

impl Tls {
    pub fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(wedge_pki::client_config(&self.ca_pem, &self.credential)?)
    }
}

/// The saved certificate, if the node has enrolled.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<Tls>> {
    let Some(credential) = wedge_pki::load_credential(data_dir)? else {
        return Ok(None);
    };
    let path = data_dir.join(CA_FILE);
    let ca_pem = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Some(Tls { ca_pem, credential }))
}

/// Saves a new certificate (and the CA) for good.
pub fn save(data_dir: &Path, tls: &Tls) -> anyhow::Result<()> {
    let path = data_dir.join(CA_FILE);
    std::fs::write(&path, &tls.ca_pem)
        .with_context(|| format!("cannot write {}", path.display()))?;
    wedge_pki::save_credential(data_dir, &tls.credential)?;
    Ok(())
}

/// Checks an issued certificate before the node relies on it.
pub fn accept_issued(
    node_id: &str,
    key_pem: String,
    certificate: String,
    ca: String,
    pin: Option<&str>,
) -> anyhow::Result<Tls> {
    let identity = wedge_pki::inspect_pem(&certificate)?;
    if identity.common_name != node_id {
        bail!(
            "the control plane issued a certificate for {:?}",
            identity.common_name
        );
    }
    if let Some(pin) = pin
        && wedge_pki::fingerprint_pem(&ca)? != pin.to_ascii_lowercase()
    {
        bail!("the CA in the reply does not have the pinned SHA-256");
    }
    let tls = Tls {
        ca_pem: ca,
        credential: Credential {
            cert_pem: certificate,
            key_pem,
        },
    };
    tls.client_config()
        .context("the issued certificate does not fit the key")?;
    Ok(tls)
}

/// The saved certificate, or a new one by enrolling: retries while the control plane is
/// unreachable; a refusal (bad token, revoked node) is an error. Runs before the node opens
/// anything, so a signal meanwhile just ends the process.
pub async fn load_or_enroll(
    node_id: &str,
    data_dir: &Path,
    host: &str,
    port: u16,
    token: Option<&str>,
    pin: Option<&str>,
) -> anyhow::Result<Tls> {
    if let Some(tls) = load(data_dir)? {
        return Ok(tls);
    }
    let (Some(token), Some(pin)) = (token, pin) else {
        bail!(
            "node {node_id} has no certificate yet: give it a bootstrap token (enroll_token, \
             --enroll-token) and the control plane's CA hash (ca_sha256, --ca-sha256); \
             an operator creates both with `wedgectl enroll-token create`"
        );
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        match enroll_once(node_id, host, port, token, pin).await {
            Ok(tls) => {
                save(data_dir, &tls)?;
                tracing::info!(node = node_id, "enrolled: certificate saved");
                return Ok(tls);
            }
            Err(Attempt::Refused(reason)) => bail!("enrollment refused: {reason}"),
            Err(Attempt::Failed(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "enrollment failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

enum Attempt {
    /// The control plane said no: retrying will not help.
    Refused(String),
    /// Unreachable, timed out: try again.
    Failed(String),
}

async fn enroll_once(
    node_id: &str,
    host: &str,
    port: u16,
    token: &str,
    pin: &str,
) -> Result<Tls, Attempt> {
    let (key_pem, csr) =
        wedge_pki::new_key_and_csr(node_id).map_err(|e| Attempt::Refused(e.to_string()))?;
    let tls = wedge_pki::client_config_pinned(pin).map_err(|e| Attempt::Refused(e.to_string()))?;
    let mut opts = MqttOptions::new(node_id, host, port);
    opts.set_credentials("enroll", token);
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_clean_session(true);
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    let (client, mut eventloop) = AsyncClient::new(opts, 8);
    let request = encode(&CertRequest {
        csr,
        token: Some(token.to_string()),
    });
    let reply_topic = topics::enroll_reply(node_id);
    let exchange = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code != ConnectReturnCode::Success {
                        return Err(Attempt::Refused(format!("{:?}", ack.code)));
                    }
                    client
                        .try_subscribe(reply_topic.clone(), QoS::AtLeastOnce)
                        .map_err(|e| Attempt::Failed(e.to_string()))?;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    client
                        .try_publish(
                            topics::enroll_request(node_id),
                            QoS::AtLeastOnce,
                            false,
                            request.clone(),
                        )
                        .map_err(|e| Attempt::Failed(e.to_string()))?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == reply_topic => {
                    return match decode::<CertReply>(&p.payload) {
                        Ok(CertReply::Issued { certificate, ca }) => {
                            accept_issued(node_id, key_pem.clone(), certificate, ca, Some(pin))
                                .map_err(|e| Attempt::Refused(e.to_string()))
                        }
                        Ok(CertReply::Refused { reason }) => Err(Attempt::Refused(reason)),
                        Err(e) => Err(Attempt::Failed(format!("undecodable reply: {e}"))),
                    };
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    return Err(Attempt::Refused(match code {
                        ConnectReturnCode::BadUserNamePassword => {
                            "the bootstrap token is not valid, has expired, is used up or is not for this node id".into()
                        }
                        ConnectReturnCode::NotAuthorized => "this node is revoked".into(),
                        ConnectReturnCode::BadClientId => format!(
                            "the node id {} is already enrolled: another machine holds a \
                             valid certificate for it (if this one replaces it, run \
                             `wedgectl replace {}` first)",
                            node_id, node_id
                        ),
                        other => format!("{other:?}"),
                    }));
                }
                // A CA that does not match the pin will not match on the next try either.
                Err(rumqttc::ConnectionError::Tls(e)) => {
                    return Err(Attempt::Refused(format!("TLS: {e}")));
                }
                Err(e) => return Err(Attempt::Failed(e.to_string())),
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| Err(Attempt::Failed("no answer within 30 s".into())));
    let _ = client.try_disconnect();
    result
}
