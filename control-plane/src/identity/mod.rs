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
//!   ([`gate::NodeSession`] waits on [`NodeIdentities::changes`]). A revoked node cannot enroll
//!   again until an operator lifts the revocation.
//! - **An id is enrolled once.** Enrolling under an id that holds a valid certificate is
//!   refused (with a valid token, a stranger would otherwise take over a live node's id and
//!   kick it off); an operator who really replaces the machine runs `wedgectl replace NODE`,
//!   which refuses the old certificates and lets the id enroll again. Tokens can be bound to
//!   an id pattern (`berlin-*`). The latest certificate per node is recorded in
//!   `issued-nodes.toml`; a node enrolled before that file existed is recorded at its next
//!   renewal.
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
use wedge_proto::messages::{CertReply, CertRequest};

pub use tokens::{EnrollToken, TokenError, validate_pattern};

const REVOKED_FILE: &str = "revoked-nodes.toml";
const ISSUED_FILE: &str = "issued-nodes.toml";

/// Why an enrollment is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollRefusal {
    #[error("{0}")]
    Token(TokenError),
    #[error("node {0} is revoked")]
    Revoked(String),
    #[error(
        "node {0} is already enrolled and holds a valid certificate; if this is its \
         replacement, run `wedgectl replace {0}` first"
    )]
    Enrolled(String),
}

/// The latest certificate issued to a node (enrollment or renewal).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Issued {
    /// ms since the epoch; at or before the certificate's own issue time.
    pub issued_ms: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IssuedFile {
    #[serde(default)]
    nodes: BTreeMap<String, Issued>,
}

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
pub struct NodeIdentities {
    ca: Ca,
    settings: Settings,
    server: Arc<rustls::ServerConfig>,
    service: Credential,
    service_fingerprint: String,
    tokens: tokens::BootstrapTokens,
    revoked: RwLock<BTreeMap<String, Revocation>>,
    issued: RwLock<BTreeMap<String, Issued>>,
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for NodeIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentities")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl NodeIdentities {
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
        let issued = crate::files::read_toml::<IssuedFile>(&dir.join(ISSUED_FILE))?.nodes;
        Ok(Arc::new(Self {
            tokens: tokens::BootstrapTokens::load(dir)?,
            ca,
            server,
            service,
            service_fingerprint,
            revoked: RwLock::new(revoked),
            issued: RwLock::new(issued),
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

    pub fn tokens(&self) -> &tokens::BootstrapTokens {
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

    /// Lets another machine take over `node`'s id (replaced hardware, a wiped data
    /// directory): every certificate issued to it up to now is refused and its live
    /// connection is cut, as with a revocation, but it is not shut out, so the next
    /// enrollment under that id (with a bootstrap token) succeeds. Returns when.
    pub fn replace(&self, node: &str, now_ms: u64) -> anyhow::Result<u64> {
        let at = self.update(node, |r| {
            r.floor_ms = r.floor_ms.max(now_ms);
        })?;
        self.changes.send_modify(|n| *n += 1);
        tracing::warn!(
            node,
            "node replaced: its certificates are refused, its id may enroll again"
        );
        Ok(at.floor_ms)
    }

    /// Whether `node` holds a certificate that is still valid (not expired, revoked or
    /// replaced): then nobody may enroll under its id.
    pub fn holds_valid_certificate(&self, node: &str, now_ms: u64) -> bool {
        let issued = match self.issued.read() {
            Ok(issued) => issued.get(node).copied(),
            Err(_) => return true,
        };
        issued.is_some_and(|i| i.expires_ms > now_ms && !self.is_revoked(node, i.issued_ms))
    }

    fn record_issued(&self, node: &str, issued: Issued) -> anyhow::Result<()> {
        let mut all = self
            .issued
            .write()
            .map_err(|_| anyhow::anyhow!("issued certificates poisoned"))?;
        all.insert(node.to_string(), issued);
        crate::files::write_private_toml(
            &self.settings.data_dir.join(ISSUED_FILE),
            &IssuedFile { nodes: all.clone() },
        )
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
        let token = request.token.as_deref().unwrap_or_default();
        if enroll {
            self.may_enroll(node, token, now_ms)
                .map_err(|e| e.to_string())?;
        }
        // The CSR is checked (by signing it) before the token is used up: a bad request
        // does not waste a use.
        let certificate = self
            .ca
            .issue_node(node, &request.csr, self.settings.node_cert_lifetime)
            .map_err(|e| e.to_string())?;
        if enroll {
            // Uses the token, checking it again: another enrollment may have used its last
            // use meanwhile; then this certificate is never handed out.
            self.tokens
                .consume(token, node, now_ms)
                .map_err(|e| e.to_string())?;
        }
        let lifetime =
            u64::try_from(self.settings.node_cert_lifetime.as_millis()).unwrap_or(u64::MAX);
        self.record_issued(
            node,
            Issued {
                issued_ms: now_ms,
                expires_ms: now_ms.saturating_add(lifetime),
            },
        )
        .map_err(|e| format!("cannot record the certificate: {e}"))?;
        Ok(certificate)
    }

    /// Whether a client showing `token` may enroll as `node` now: the token is valid and
    /// covers that id, the node is not shut out, and nobody holds a valid certificate for
    /// that id (unless an operator replaced it).
    pub fn may_enroll(&self, node: &str, token: &str, now_ms: u64) -> Result<(), EnrollRefusal> {
        self.tokens
            .check(token, node, now_ms)
            .map_err(EnrollRefusal::Token)?;
        if self.revoked_at(node).is_some() {
            return Err(EnrollRefusal::Revoked(node.to_string()));
        }
        if self.holds_valid_certificate(node, now_ms) {
            return Err(EnrollRefusal::Enrolled(node.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn identity(dir: &std::path::Path) -> Arc<NodeIdentities> {
        NodeIdentities::load(Settings {
            data_dir: dir.to_path_buf(),
            broker_names: vec!["localhost".into()],
            node_cert_lifetime: Duration::from_secs(3600),
        })
        .unwrap()
    }

    fn request(node: &str, token: &str) -> CertRequest {
        CertRequest {
            csr: wedge_pki::new_key_and_csr(node).unwrap().1,
            token: Some(token.to_string()),
        }
    }

    fn issued(reply: &CertReply) -> bool {
        matches!(reply, CertReply::Issued { .. })
    }

    #[test]
    fn an_id_is_enrolled_once_until_an_operator_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let id = identity(dir.path());
        let now = 1_000_000;
        let (_, token) = id.tokens().create("t", 10, 3_600_000, None, now).unwrap();

        // A request whose CSR does not parse is refused without using the token.
        let bad = CertRequest {
            csr: "not a CSR".into(),
            token: Some(token.clone()),
        };
        assert!(!issued(&id.answer("n1", true, &bad, now)));
        assert_eq!(id.tokens().list()[0].uses_left, 10);

        assert!(issued(&id.answer("n1", true, &request("n1", &token), now)));
        assert_eq!(id.tokens().list()[0].uses_left, 9);
        assert!(id.holds_valid_certificate("n1", now + 1));

        // Same id again, valid token: refused, no use spent; the gate refuses it too.
        let again = id.answer("n1", true, &request("n1", &token), now + 1);
        assert!(
            matches!(&again, CertReply::Refused { reason } if reason.contains("wedgectl replace n1")),
            "{again:?}"
        );
        assert_eq!(id.tokens().list()[0].uses_left, 9);
        assert!(matches!(
            id.may_enroll("n1", &token, now + 1),
            Err(EnrollRefusal::Enrolled(_))
        ));
        // Renewal over the node's own session still works.
        assert!(issued(&id.answer("n1", false, &request("n1", ""), now + 2)));

        // After a replacement the id may enroll again; it survives a restart.
        id.replace("n1", now + 3).unwrap();
        assert!(!identity(dir.path()).holds_valid_certificate("n1", now + 4));
        assert!(issued(&id.answer(
            "n1",
            true,
            &request("n1", &token),
            now + 4
        )));
        assert!(identity(dir.path()).holds_valid_certificate("n1", now + 5));

        // A certificate that has expired no longer holds the id.
        assert!(!id.holds_valid_certificate("n1", now + 4 + 3_600_001));
    }
}
