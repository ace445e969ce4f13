//! HTTPS for the API.
//!
//! An operator token can deploy code to every node, so the API must not carry it in clear
//! across a network. `api_tls = auto` (the default) serves HTTPS on any address but a
//! loopback one, where plain HTTP never leaves the machine (the README's first command, the
//! tests, an SSH tunnel). Without a certificate of the operator's (`api_tls_cert_file`), the
//! control plane's own CA issues one at every start for the same names as the broker's plus
//! the API's address; the chain carries the CA, so `wedgectl --ca-sha256` can pin it exactly
//! as nodes pin the broker (`uplink.ca_sha256`), and a browser can trust `ca.crt`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;

/// The API's TLS settings, or `None` for plain HTTP.
pub fn server_config(
    config: &Config,
    names: &[String],
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    if !config.api_https() {
        if !config.api_listen.ip().is_loopback() {
            tracing::warn!(
                api = %config.api_listen,
                "API IS PLAIN HTTP ON A NETWORK ADDRESS (api_tls = off): tokens cross the \
                 network in clear unless a TLS-terminating proxy is in front"
            );
        }
        return Ok(None);
    }
    let credential = match (&config.api_tls_cert_file, &config.api_tls_key_file) {
        (Some(cert), Some(key)) => wedge_pki::Credential {
            cert_pem: std::fs::read_to_string(cert)
                .with_context(|| format!("cannot read api_tls_cert_file {}", cert.display()))?,
            key_pem: std::fs::read_to_string(key)
                .with_context(|| format!("cannot read api_tls_key_file {}", key.display()))?,
        },
        _ => {
            let ca = wedge_pki::Ca::load_or_create(&config.data_dir)
                .context("cannot load the CA for the API's certificate")?;
            let issued = ca.issue_server(names, Duration::from_secs(365 * 86_400))?;
            tracing::info!(
                ca_sha256 = ca.fingerprint(),
                "API serves HTTPS with a certificate from the control plane's CA; \
                 wedgectl pins it with --ca-sha256"
            );
            wedge_pki::Credential {
                // The CA follows the server's certificate, for clients that pin it by hash.
                cert_pem: format!("{}{}", issued.cert_pem, ca.cert_pem()),
                key_pem: issued.key_pem,
            }
        }
    };
    let mut tls = wedge_pki::server_config_without_client_auth(&credential)
        .context("the API's certificate or key is not usable")?;
    // HTTP/1.1 only, like the server.
    Arc::make_mut(&mut tls).alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tls))
}
