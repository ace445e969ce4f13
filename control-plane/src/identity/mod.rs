//! Node identity: enrollment, certificates, revocation, and the gate of the broker.
//!
//! - The control plane's CA lives in its data directory ([`wedge_pki::Ca`]). The broker
//!   speaks TLS only and requires a client certificate from that CA — except for an
//!   *enrollment* connection, which has no certificate yet and instead shows a bootstrap
//!   token as its MQTT password.
//! - **Enrollment runs over the broker's TLS**, not over the HTTP API: the bootstrap token
//!   never crosses the network in clear (the API may be plain HTTP behind a proxy), and a
//!   node needs no second address. The node pins the CA by its SHA-256 (like
//!   `kubeadm join --discovery-token-ca-cert-hash`), so it trusts nothing it was not told.
//!   An enrollment session may only publish its request and read its reply
//!   ([`gate::EnrollSession`]); the request carries the token again and consumes one use
//!   only when a certificate is issued, so a dropped connection does not waste a use.
//! - A node renews over its own authenticated session (`…/cert/req`) at 2/3 of the lifetime.
//! - **Revocation** records "nothing issued to this node before now": every certificate it
//!   holds is refused at its next connect, and a live connection is cut at once
//!   ([`gate::NodeSession`] waits on [`Identity::changes`]). A revoked node cannot enroll
//!   again until an operator lifts the revocation.
//! - Enrollment tokens and revocations are small TOML files beside the store, written only
//!   by this process (through the API), atomically.

pub mod gate;
mod tokens;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use wedge_pki::{Ca, Credential};
use wedge_shared::messages::{CertReply, CertRequest};

pub use tokens::{EnrollToken, TokenError};

const REVOKED_FILE: &str = "revoked-nodes.toml";

/// What the identity service needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Host names and addresses nodes reach the broker by (the server certificate's names).
    pub broker_names: Vec<String>,
    pub node_cert_lifetime: Duration,
}

/// Per node: refused certificates, and whether the node is shut out.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Revocation {
    /// Certificates issued at or before this time (ms since the epoch) are refused.
    pub floor_ms: u64,
    /// Shut out: no connection, no enrollment, until an operator readmits it.
    pub revoked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RevokedFile {
    #[serde(default)]
    nodes: BTreeMap<String, Revocation>,
}

/// The control plane's side of node identity.
pub struct Identity {
    ca: Ca,
    settings: Settings,
    server: Arc<rustls::ServerConfig>,
    service: Credential,
    service_fingerprint: String,
    tokens: tokens::Tokens,
    revoked: RwLock<BTreeMap<String, Revocation>>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads (or creates) the CA, issues this run's broker and service certificates.
    pub fn load(settings: Settings) -> anyhow::Result<Arc<Self>> {
        let dir = &settings.data_dir;
        let ca = Ca::load_or_create(dir).context("cannot load the CA")?;
        // Both certificates are made fresh at every start and live in memory only.
        let year = Duration::from_secs(365 * 86_400);
        let server = ca.issue_server(&settings.broker_names, year)?;
        let server = wedge_pki::server_config(ca.cert_pem(), &server)?;
        let service = ca.issue_service("control-plane", year)?;
        let service_fingerprint = wedge_pki::fingerprint_pem(&service.cert_pem)?;
        let revoked = crate::files::read_toml::<RevokedFile>(&dir.join(REVOKED_FILE))?.nodes;
        Ok(Arc::new(Self {
            tokens: tokens::Tokens::load(dir)?,
            ca,
            server,
            service,
            service_fingerprint,
            revoked: RwLock::new(revoked),
            changes: tokio::sync::watch::channel(0).0,
            settings,
        }))
    }

    /// SHA-256 of the CA certificate: what a node pins (`uplink.ca_sha256`).
    pub fn ca_sha256(&self) -> String {
        self.ca.fingerprint()
    }

    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// TLS settings of this control plane's own MQTT client.
    pub fn service_client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        Ok(wedge_pki::client_config(self.ca.cert_pem(), &self.service)?)
    }

    /// The broker's gate.
    pub fn gate(self: &Arc<Self>) -> Arc<dyn wedge_broker::Gate> {
        Arc::new(gate::NodeGate::new(self.clone()))
    }

    pub fn tokens(&self) -> &tokens::Tokens {
        &self.tokens
    }

    /// When `node` was revoked, if it is shut out.
    pub fn revoked_at(&self, node: &str) -> Option<u64> {
        let revoked = self.revoked.read().ok()?;
        revoked.get(node).filter(|r| r.revoked).map(|r| r.floor_ms)
    }

    /// Whether a certificate of `node` issued at `issued_ms` is refused.
    pub fn is_revoked(&self, node: &str, issued_ms: u64) -> bool {
        let Ok(revoked) = self.revoked.read() else {
            return true;
        };
        revoked
            .get(node)
            .is_some_and(|r| r.revoked || issued_ms <= r.floor_ms)
    }

    /// Revokes every certificate `node` holds and cuts its connection. Returns when.
    pub fn revoke(&self, node: &str, now_ms: u64) -> anyhow::Result<u64> {
        let at = self.update(node, |r| {
            if !r.revoked {
                *r = Revocation {
                    floor_ms: now_ms,
                    revoked: true,
                };
            }
        })?;
        self.changes.send_modify(|n| *n += 1);
        tracing::warn!(
            node,
            "node revoked: its certificates are refused from now on"
        );
        Ok(at.floor_ms)
    }

    /// Lifts a revocation: the node may enroll again (with a bootstrap token); the
    /// certificates it held stay refused. Returns whether it was revoked.
    pub fn readmit(&self, node: &str) -> anyhow::Result<bool> {
        let mut was = false;
        self.update(node, |r| {
            was = r.revoked;
            r.revoked = false;
        })?;
        Ok(was)
    }

    fn update(
        &self,
        node: &str,
        change: impl FnOnce(&mut Revocation),
    ) -> anyhow::Result<Revocation> {
        let mut revoked = self
            .revoked
            .write()
            .map_err(|_| anyhow::anyhow!("revocations poisoned"))?;
        let entry = revoked.entry(node.to_string()).or_insert(Revocation {
            floor_ms: 0,
            revoked: false,
        });
        change(entry);
        let result = *entry;
        crate::files::write_private_toml(
            &self.settings.data_dir.join(REVOKED_FILE),
            &RevokedFile {
                nodes: revoked.clone(),
            },
        )?;
        Ok(result)
    }

    /// Changes a live session must look at (a revocation).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn is_service(&self, fingerprint: &str) -> bool {
        fingerprint == self.service_fingerprint
    }

    /// Answers a certificate request of `node`: an enrollment (`enroll`, with a bootstrap
    /// token) or a renewal over the node's own authenticated session.
    pub fn answer(
        &self,
        node: &str,
        enroll: bool,
        request: &CertRequest,
        now_ms: u64,
    ) -> CertReply {
        match self.issue(node, enroll, request, now_ms) {
            Ok(certificate) => {
                tracing::info!(node, enroll, "certificate issued");
                CertReply::Issued {
                    certificate,
                    ca: self.ca.cert_pem().to_string(),
                }
            }
            Err(reason) => {
                tracing::warn!(node, enroll, reason, "certificate refused");
                CertReply::Refused { reason }
            }
        }
    }

    fn issue(
        &self,
        node: &str,
        enroll: bool,
        request: &CertRequest,
        now_ms: u64,
    ) -> Result<String, String> {
        if self.revoked_at(node).is_some() {
            return Err(format!("node {node} is revoked"));
        }
        if enroll {
            let token = request.token.as_deref().unwrap_or_default();
            self.tokens
                .consume(token, now_ms)
                .map_err(|e| e.to_string())?;
        }
        self.ca
            .issue_node(node, &request.csr, self.settings.node_cert_lifetime)
            .map_err(|e| e.to_string())
    }
}
