//! Who may use the node's local broker: devices with a username and password, optionally
//! over TLS; anonymous devices only when the configuration says so.
//!
//! Passwords are stored as Argon2id PHC strings (`wedge-node hash-password` makes one), never
//! in clear. Verifying one costs tens of milliseconds of CPU on purpose, so it runs on the
//! blocking pool, and a password that verified is remembered (as its SHA-256, per user) so a
//! device that reconnects every few seconds does not cost a core. At most two verifications
//! run at once; a login that waits more than 2 s for one is refused. The node's own modules
//! reach the broker in-process and never pass this gate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use wedge_broker::{Admission, BoxFuture, Gate, Pace, Refusal, Session, Stream, Unrestricted};

/// The `[devices]` section of the node's configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// Let devices connect without a username and password (the demo does; off by default).
    pub allow_anonymous: bool,
    /// Serve the local broker over TLS with this certificate chain (PEM) …
    pub tls_cert_file: Option<PathBuf>,
    /// … and this private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    pub users: Vec<DeviceUser>,
}

/// One device account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceUser {
    pub username: String,
    /// Argon2 PHC string (`$argon2id$…`), from `wedge-node hash-password`.
    pub password_hash: String,
}

impl DevicesConfig {
    /// Checks what serde cannot: hashes parse, TLS files come in pairs.
    pub fn validate(&self) -> anyhow::Result<()> {
        for u in &self.users {
            if u.username.is_empty() {
                bail!("devices.users: a username must not be empty");
            }
            PasswordHash::new(&u.password_hash).map_err(|e| {
                anyhow::anyhow!(
                    "devices.users {}: password_hash is not a PHC string ({e}); make one with \
                     `wedge-node hash-password`",
                    u.username
                )
            })?;
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            bail!("devices.tls_cert_file and devices.tls_key_file go together");
        }
        Ok(())
    }
}

/// An Argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?
        .to_string())
}

/// The local broker's gate.
pub struct DeviceGate {
    users: HashMap<String, String>,
    allow_anonymous: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// username → SHA-256 of the password that last verified.
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// Argon2 runs at once: each takes ~19 MiB and tens of ms of a core, so wrong passwords
    /// tried in parallel would otherwise take the device's memory and CPU.
    verifying: Arc<tokio::sync::Semaphore>,
    /// Held by the router while a module's queue is too full for acknowledged messages:
    /// every device connection stops reading (see `router`).
    pace: Pace,
}

/// Argon2 verifications that may run at the same time.
const CONCURRENT_VERIFICATIONS: usize = 2;
/// How long a login waits for a verification slot before it is refused.
const VERIFY_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl DeviceGate {
    pub fn new(config: &DevicesConfig) -> anyhow::Result<Arc<Self>> {
        config.validate()?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                let read = |p: &PathBuf| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))
                };
                let credential = wedge_pki::Credential {
                    cert_pem: read(cert)?,
                    key_pem: read(key)?,
                };
                Some(wedge_pki::server_config_without_client_auth(&credential)?)
            }
            _ => None,
        };
        if config.allow_anonymous {
            tracing::warn!("devices may connect to the local broker without a password");
        } else if config.users.is_empty() {
            tracing::warn!(
                "no device accounts ([[devices.users]]) and anonymous devices are off: no \
                 device can connect to the local broker"
            );
        }
        Ok(Arc::new(Self {
            users: config
                .users
                .iter()
                .map(|u| (u.username.clone(), u.password_hash.clone()))
                .collect(),
            allow_anonymous: config.allow_anonymous,
            tls,
            verified: Mutex::new(HashMap::new()),
            verifying: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS)),
            pace: Pace::default(),
        }))
    }

    /// The pace every device connection reads at.
    pub fn pace(&self) -> Pace {
        self.pace.clone()
    }

    /// Whether the local broker speaks TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    fn check(self: &Arc<Self>, username: &str, password: &str) -> BoxFuture<bool> {
        let Some(hash) = self.users.get(username).cloned() else {
            return Box::pin(async { false });
        };
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let known = self
            .verified
            .lock()
            .map(|v| v.get(username) == Some(&digest))
            .unwrap_or(false);
        if known {
            return Box::pin(async { true });
        }
        let me = self.clone();
        let username = username.to_string();
        let password = password.to_string();
        Box::pin(async move {
            // A login that cannot get a slot soon is refused: under a flood of wrong
            // passwords honest devices may be refused too (they retry), but the node keeps
            // its memory and its cores for its modules.
            let Ok(Ok(_permit)) =
                tokio::time::timeout(VERIFY_QUEUE_WAIT, me.verifying.clone().acquire_owned()).await
            else {
                tracing::warn!(
                    user = username,
                    "device refused: too many password checks at once"
                );
                return false;
            };
            let ok = tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash).is_ok_and(|parsed| {
                    argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false);
            if ok && let Ok(mut v) = me.verified.lock() {
                v.insert(username, digest);
            }
            ok
        })
    }
}

/// The gate as rumqttd sees it (an `Arc` of it, so password checks can outlive the call).
pub struct SharedDeviceGate(pub Arc<DeviceGate>);

impl Gate for SharedDeviceGate {
    fn accept(
        &self,
        stream: tokio::net::TcpStream,
    ) -> BoxFuture<std::io::Result<(Box<dyn Stream>, Option<Vec<u8>>)>> {
        let tls = self.0.tls.clone();
        Box::pin(async move {
            match tls {
                Some(config) => {
                    let (stream, _) = wedge_pki::accept(config, stream).await?;
                    Ok((Box::new(stream) as Box<dyn Stream>, None))
                }
                None => Ok((Box::new(stream) as Box<dyn Stream>, None)),
            }
        })
    }

    fn admit(&self, a: Admission) -> BoxFuture<Result<Arc<dyn Session>, Refusal>> {
        let gate = self.0.clone();
        Box::pin(async move {
            if wedge_proto::topics::is_internal_client_id(&a.client_id) {
                tracing::warn!(
                    client_id = a.client_id,
                    "device refused: the client id is reserved for the node's own link"
                );
                return Err(Refusal::ClientIdentifierNotValid);
            }
            let allowed = match (a.username.as_deref(), a.password.as_deref()) {
                (Some(user), Some(password)) if !user.is_empty() => {
                    gate.check(user, password).await
                }
                _ => gate.allow_anonymous,
            };
            if allowed {
                // A device may publish and subscribe to anything on the local broker (the
                // node's own link and the uplink are not reachable from it), at the
                // node's pace.
                let session = Unrestricted {
                    pace: Some(gate.pace.clone()),
                };
                Ok(Arc::new(session) as Arc<dyn Session>)
            } else {
                tracing::warn!(
                    client_id = a.client_id,
                    user = a.username.as_deref().unwrap_or("(none)"),
                    "device refused: unknown user, wrong password or no credentials"
                );
                Err(Refusal::BadUserNamePassword)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn password_checks_are_bounded_and_a_login_that_cannot_get_a_slot_is_refused() {
        let config = DevicesConfig {
            users: vec![DeviceUser {
                username: "sensor-1".into(),
                password_hash: hash_password("s3cret").unwrap(),
            }],
            ..Default::default()
        };
        let gate = DeviceGate::new(&config).unwrap();
        // Every slot taken (as by a flood of wrong passwords in flight).
        let held = gate
            .verifying
            .clone()
            .acquire_many_owned(CONCURRENT_VERIFICATIONS as u32)
            .await
            .unwrap();
        assert!(
            !gate.check("sensor-1", "s3cret").await,
            "refused while busy"
        );
        drop(held);
        assert!(gate.check("sensor-1", "s3cret").await);
        // A flood of wrong passwords: all refused, never more than the slots at once.
        let flood: Vec<_> = (0..8)
            .map(|i| gate.check("sensor-1", &format!("wrong-{i}")))
            .collect();
        for check in flood {
            assert!(!check.await);
        }
        assert_eq!(gate.verifying.available_permits(), CONCURRENT_VERIFICATIONS);
    }

    #[tokio::test]
    async fn passwords_verify_against_their_hash_only() {
        let config = DevicesConfig {
            users: vec![DeviceUser {
                username: "sensor-1".into(),
                password_hash: hash_password("s3cret").unwrap(),
            }],
            ..Default::default()
        };
        config.validate().unwrap();
        assert!(config.users[0].password_hash.starts_with("$argon2id$"));
        let gate = DeviceGate::new(&config).unwrap();
        assert!(gate.check("sensor-1", "s3cret").await);
        assert!(gate.check("sensor-1", "s3cret").await, "remembered");
        assert!(!gate.check("sensor-1", "wrong").await);
        assert!(!gate.check("sensor-2", "s3cret").await);

        let bad = DevicesConfig {
            users: vec![DeviceUser {
                username: "x".into(),
                password_hash: "plaintext".into(),
            }],
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
