//! # wedge-pki — who is who on the uplink
//!
//! The control plane runs its own certificate authority. A node proves who it is with a
//! client certificate from that CA, whose common name is its node id; the control plane's
//! broker proves who it is with a server certificate from the same CA, which the node
//! verifies against the CA certificate it received at enrollment (or was given).
//!
//! - **Enrollment** (control plane side: [`Ca::issue_node`]): the node makes its key pair
//!   and a certificate signing request ([`new_key_and_csr`]); the private key never leaves
//!   the node. The CSR's signature proves the node holds the key; everything in the issued
//!   certificate (common name, lifetime, usages) is decided by the CA, not taken from the CSR.
//! - **Serial numbers carry the issue time** (`01 ‖ issued-at ms, 8 bytes ‖ 7 random bytes`):
//!   revoking a node records "nothing issued to it before now", so every certificate it
//!   holds is refused at once without a revocation list, and a node enrolled again later
//!   gets a certificate that passes ([`CertSubject::issued_ms`]).
//! - **One crypto provider**: rustls with ring. aws-lc-rs would add a cmake build and a second
//!   provider; ring is already in the tree and cross-compiles to musl.
//!
//! All keys are ECDSA P-256.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

/// File names of the CA in the control plane's data directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// Common-name prefix of certificates that are not node certificates (the control plane's
/// own client, the broker's server certificate): a node id never contains a space.
const SERVICE_PREFIX: &str = "wedge service ";

/// Clock skew tolerated between the control plane and its nodes.
const BACKDATE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(String),
    #[error("invalid certificate signing request: {0}")]
    Csr(String),
    #[error("invalid certificate: {0}")]
    Certificate(String),
    #[error("invalid private key: {0}")]
    Key(String),
    #[error("TLS settings: {0}")]
    Tls(String),
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Io(format!("cannot {what} {}: {e}", path.display()))
}

/// A private key and its certificate, both PEM.
#[derive(Clone)]
pub struct Credential {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").finish_non_exhaustive()
    }
}

/// The control plane's certificate authority.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl Ca {
    /// Loads the CA from `dir`, creating it (key mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() {
            let cert_pem =
                std::fs::read_to_string(&cert_path).map_err(|e| io("read", &cert_path, e))?;
            let key_pem =
                std::fs::read_to_string(&key_path).map_err(|e| io("read", &key_path, e))?;
            return Self::from_pem(&cert_pem, &key_pem);
        }
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let key = KeyPair::generate().map_err(|e| Error::Issue(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("Wedge control plane CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = to_offset(SystemTime::now() - BACKDATE);
        params.not_after = to_offset(SystemTime::now() + Duration::from_secs(20 * 365 * 86_400));
        params.serial_number = Some(serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| Error::Issue(e.to_string()))?;
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem()).map_err(|e| io("write", &cert_path, e))?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Key(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| Error::Certificate(e.to_string()))?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    /// The CA certificate, PEM: what nodes verify the broker against.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Hex SHA-256 of the CA certificate's DER: what an operator pins on a node.
    pub fn fingerprint(&self) -> String {
        fingerprint_pem(&self.cert_pem).unwrap_or_default()
    }

    /// Signs a node's CSR: a client certificate for `node_id`, valid for `lifetime`.
    /// Returns the certificate, PEM.
    pub fn issue_node(&self, node_id: &str, csr_pem: &str, lifetime: Duration) -> Result<String> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| Error::Csr(e.to_string()))?;
        let mut csr = CertificateSigningRequestParams::from_der(&der)
            .map_err(|e| Error::Csr(e.to_string()))?;
        csr.params = leaf(node_id, lifetime, ExtendedKeyUsagePurpose::ClientAuth, &[])?;
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| Error::Issue(e.to_string()))?;
        Ok(cert.pem())
    }

    /// A key pair and client certificate made here, for a service (the control plane's own
    /// connection to its broker) or a simulated node: `name` is the common name as given.
    pub fn issue_client(&self, name: &str, lifetime: Duration) -> Result<Credential> {
        let key = KeyPair::generate().map_err(|e| Error::Issue(e.to_string()))?;
        let cert = leaf(name, lifetime, ExtendedKeyUsagePurpose::ClientAuth, &[])?
            .signed_by(&key, &self.issuer)
            .map_err(|e| Error::Issue(e.to_string()))?;
        Ok(Credential {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for one of the control plane's own services.
    pub fn issue_service(&self, service: &str, lifetime: Duration) -> Result<Credential> {
        self.issue_client(&format!("{SERVICE_PREFIX}{service}"), lifetime)
    }

    /// The broker's server certificate for the host `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[String], lifetime: Duration) -> Result<Credential> {
        let key = KeyPair::generate().map_err(|e| Error::Issue(e.to_string()))?;
        let cert = leaf(
            &format!("{SERVICE_PREFIX}broker"),
            lifetime,
            ExtendedKeyUsagePurpose::ServerAuth,
            names,
        )?
        .signed_by(&key, &self.issuer)
        .map_err(|e| Error::Issue(e.to_string()))?;
        Ok(Credential {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf(
    common_name: &str,
    lifetime: Duration,
    usage: ExtendedKeyUsagePurpose,
    names: &[String],
) -> Result<CertificateParams> {
    let mut params =
        CertificateParams::new(names.to_vec()).map_err(|e| Error::Issue(e.to_string()))?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = to_offset(now - BACKDATE);
    params.not_after = to_offset(now + lifetime);
    params.serial_number = Some(serial());
    Ok(params)
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `01 ‖ issued-at ms (8 bytes, big endian) ‖ 7 random bytes`.
fn serial() -> SerialNumber {
    let mut bytes = vec![0x01];
    bytes.extend_from_slice(&now_ms().to_be_bytes());
    bytes.extend_from_slice(&rand::random::<[u8; 7]>());
    SerialNumber::from_slice(&bytes)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io("create", path, e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| io("write", path, e))
}

/// Writes a node's credential atomically (key mode 0600): a crash mid-renewal leaves the
/// old pair or the new one, never a key that does not match its certificate.
pub fn save_credential(dir: &Path, credential: &Credential) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let tmp = dir.join("node.credential.tmp");
    write_private(
        &tmp,
        &format!("{}{}", credential.key_pem, credential.cert_pem),
    )?;
    let path = dir.join("node.credential");
    std::fs::rename(&tmp, &path).map_err(|e| io("replace", &path, e))
}

/// Reads what [`save_credential`] wrote; `None` when the node has not enrolled.
pub fn load_credential(dir: &Path) -> Result<Option<Credential>> {
    let path = dir.join("node.credential");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &path, e)),
    };
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or_else(|| Error::Certificate(format!("no certificate in {}", path.display())))?;
    let (key_pem, cert_pem) = text.split_at(start);
    Ok(Some(Credential {
        cert_pem: cert_pem.to_string(),
        key_pem: key_pem.to_string(),
    }))
}

/// A node's new key pair and a CSR for it (the CA sets the name; the CSR carries it too so
/// the request is self-describing in logs).
pub fn new_key_and_csr(node_id: &str) -> Result<(String, String)> {
    let key = KeyPair::generate().map_err(|e| Error::Issue(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(node_id);
    let csr = params
        .serialize_request(&key)
        .map_err(|e| Error::Issue(e.to_string()))?;
    let csr_pem = csr.pem().map_err(|e| Error::Issue(e.to_string()))?;
    Ok((key.serialize_pem(), csr_pem))
}

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSubject {
    /// The node id, for a node certificate.
    pub common_name: String,
    /// When the CA issued it, from the serial number (0 for a serial of another shape).
    pub issued_ms: u64,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Hex SHA-256 of the DER.
    pub fingerprint: String,
}

impl CertSubject {
    /// A service certificate of the control plane rather than a node's.
    pub fn service(&self) -> Option<&str> {
        self.common_name.strip_prefix(SERVICE_PREFIX)
    }

    /// When to renew: two thirds into the lifetime, counted from the issue time (not from
    /// `not_before`, which is backdated for clock skew).
    pub fn renew_at(&self) -> SystemTime {
        let start = if self.issued_ms > 0 {
            UNIX_EPOCH + Duration::from_millis(self.issued_ms)
        } else {
            self.not_before
        };
        let life = self.not_after.duration_since(start).unwrap_or_default();
        start + life * 2 / 3
    }
}

/// Reads a certificate (DER).
pub fn inspect(der: &[u8]) -> Result<CertSubject> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::Certificate(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| Error::Certificate("no common name".into()))?
        .to_string();
    let raw = cert.raw_serial();
    let issued_ms = match raw {
        [0x01, rest @ ..] if rest.len() == 15 => {
            let mut ms = [0u8; 8];
            ms.copy_from_slice(&rest[..8]);
            u64::from_be_bytes(ms)
        }
        _ => 0,
    };
    let at = |t: x509_parser::time::ASN1Time| {
        UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    Ok(CertSubject {
        common_name,
        issued_ms,
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
        fingerprint: hex::encode(Sha256::digest(der)),
    })
}

/// [`inspect`] for the first certificate of a PEM text.
pub fn inspect_pem(pem: &str) -> Result<CertSubject> {
    inspect(&first_cert(pem)?)
}

/// Hex SHA-256 of the first certificate in `pem`.
pub fn fingerprint_pem(pem: &str) -> Result<String> {
    Ok(hex::encode(Sha256::digest(first_cert(pem)?)))
}

fn first_cert(pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Certificate(e.to_string()))
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(Error::Certificate("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Key(e.to_string()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| Error::Certificate(e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// TLS for the control plane's broker: its server certificate followed by the CA's (so a
/// node that pins the CA by hash can find it), and client certificates verified against
/// the CA. A client may come without one — only to enroll; the broker's gate decides.
pub fn server_config(ca_pem: &str, server: &Credential) -> Result<Arc<rustls::ServerConfig>> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
    let mut chain = certs(&server.cert_pem)?;
    chain.extend(certs(ca_pem)?);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key(&server.key_pem)?)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// TLS with a server certificate only (a node's local broker for its devices).
pub fn server_config_without_client_auth(server: &Credential) -> Result<Arc<rustls::ServerConfig>> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs(&server.cert_pem)?, key(&server.key_pem)?)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// TLS for a client of the control plane's broker: trusts only `ca_pem`, presents
/// `credential`.
pub fn client_config(ca_pem: &str, credential: &Credential) -> Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs(&credential.cert_pem)?, key(&credential.key_pem)?)
        .map_err(|e| Error::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// TLS for a client that trusts `ca_pem` and presents nothing (a device, a test).
pub fn client_config_anonymous(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TLS for a node that has no CA certificate yet, only its SHA-256 (`ca_sha256`): the
/// server must present the CA in its chain, the CA must have that hash, and the server's
/// certificate must verify against it as usual.
pub fn client_config_pinned(ca_sha256: &str) -> Result<Arc<rustls::ClientConfig>> {
    let pin = ca_sha256.trim().to_ascii_lowercase();
    if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Tls(
            "the CA hash must be 64 hex digits (SHA-256 of the CA certificate)".into(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { pin }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct Pinned {
    pin: String,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| hex::encode(Sha256::digest(c.as_ref())) == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's CA does not have the pinned SHA-256 (a node's uplink.ca_sha256, wedgectl's --ca-sha256)".into(),
                )
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Completes a server-side TLS handshake and returns the stream and the DER of the
/// client's certificate (already verified by `config`'s verifier), if it sent one.
pub async fn accept(
    config: Arc<rustls::ServerConfig>,
    stream: tokio::net::TcpStream,
) -> std::io::Result<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Option<Vec<u8>>,
)> {
    let stream = tokio_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await?;
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    Ok((stream, peer))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_node_certificate_names_the_node_and_carries_its_issue_time() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let before = now_ms();
        let (_key, csr) = new_key_and_csr("asked-for-another-name").unwrap();
        let cert = ca
            .issue_node("node-7", &csr, Duration::from_secs(3600))
            .unwrap();
        let id = inspect_pem(&cert).unwrap();
        assert_eq!(
            id.common_name, "node-7",
            "the CA names the node, not the CSR"
        );
        assert!(id.issued_ms >= before && id.issued_ms <= now_ms());
        assert_eq!(id.service(), None);
        let life = id.not_after.duration_since(id.not_before).unwrap();
        assert_eq!(life, Duration::from_secs(3600) + BACKDATE);
        let renew = id
            .renew_at()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // 2/3 of the hour after issue (the certificate's times have whole seconds).
        assert!(
            renew.abs_diff(id.issued_ms + 2_400_000) < 1_500,
            "{renew} {}",
            id.issued_ms
        );

        // The same CA comes back from disk and its key is private.
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            inspect_pem(
                &ca.issue_service("control-plane", Duration::from_secs(60))
                    .unwrap()
                    .cert_pem
            )
            .unwrap()
            .service(),
            Some("control-plane")
        );
    }

    #[test]
    fn a_tampered_or_garbage_csr_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        assert!(matches!(
            ca.issue_node("n", "not a csr", Duration::from_secs(60)),
            Err(Error::Csr(_))
        ));
        let (_key, csr) = new_key_and_csr("n").unwrap();
        let der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
        let mut bytes = der.as_ref().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // break the signature
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            }
        );
        assert!(matches!(
            ca.issue_node("n", &pem, Duration::from_secs(60)),
            Err(Error::Csr(_))
        ));
    }

    #[test]
    fn credentials_round_trip_through_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_credential(dir.path()).unwrap().is_none());
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let cred = ca.issue_client("n1", Duration::from_secs(60)).unwrap();
        save_credential(dir.path(), &cred).unwrap();
        let back = load_credential(dir.path()).unwrap().unwrap();
        assert_eq!(back.cert_pem, cred.cert_pem);
        assert_eq!(back.key_pem, cred.key_pem);
        client_config(ca.cert_pem(), &back).unwrap();
    }
}
