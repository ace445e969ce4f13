//! The HTTP client: one base URL, an optional bearer token, and errors that say what
//! happened in the words of the server when it answered.

use std::time::Duration;

use serde_json::Value;

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the control plane at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server answered with an error (`{"error": {"code", "message"}}`).
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the control plane sent an answer that is not JSON: {0}")]
    BadAnswer(String),
}

/// A client of one control plane.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Whom an `https://` API must prove it is: the pinned CA, or the certificates of a file.
/// There is no default trust: the control plane's certificate comes from its own CA.
fn tls(settings: &crate::settings::Settings) -> anyhow::Result<rustls::ClientConfig> {
    use anyhow::Context as _;
    let config = match (&settings.ca_sha256, &settings.ca_file) {
        (Some(pin), _) => wedge_pki::client_config_pinned(pin)?,
        (None, Some(file)) => {
            let pem = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the CA file {}", file.display()))?;
            wedge_pki::client_config_anonymous(&pem)
                .with_context(|| format!("no usable certificates in {}", file.display()))?
        }
        (None, None) => anyhow::bail!(
            "{} is HTTPS: say whom to trust with --ca-sha256 HASH (the control plane's CA, \
             printed by wedge-control at start and by `wedgectl enroll-token create`) or \
             --ca-file FILE (WEDGE_CA_SHA256, WEDGE_CA_FILE, or ca_sha256/ca_file in the \
             config file)",
            settings.api
        ),
    };
    Ok(std::sync::Arc::unwrap_or_clone(config))
}

/// A successful answer: the status (200 and 201 can mean different things) and the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Client {
    pub fn new(settings: &crate::settings::Settings) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if settings.api.starts_with("https://") {
            http = http.use_preconfigured_tls(tls(settings)?);
        }
        Ok(Self {
            base: settings.api.trim_end_matches('/').to_string(),
            token: settings.token.clone(),
            http: http.build()?,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        Ok(self.send(self.http.get(self.url(path))).await?.body)
    }

    pub async fn delete(&self, path: &str) -> Result<Answer, Error> {
        self.send(self.http.delete(self.url(path))).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Answer, Error> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    /// Posts a module, with its publisher signature header if given.
    pub async fn post_bytes(
        &self,
        path: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> Result<Answer, Error> {
        let mut req = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("wedge-signature", sig);
        }
        self.send(req).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, mut req: reqwest::RequestBuilder) -> Result<Answer, Error> {
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| Error::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| Error::Unreachable {
            url: self.base.clone(),
            reason: root_cause(&e),
        })?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if status == 204 {
            return Ok(Answer {
                status,
                body: Value::Null,
            });
        }
        if (200..300).contains(&status) {
            return body
                .map(|body| Answer { status, body })
                .ok_or_else(|| Error::BadAnswer(snippet(&text)));
        }
        let error = body.as_ref().map(|b| &b["error"]);
        Err(Error::Api {
            status,
            code: error
                .and_then(|e| e["code"].as_str())
                .unwrap_or("unknown")
                .to_string(),
            message: error
                .and_then(|e| e["message"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("the control plane answered: {}", snippet(&text))),
        })
    }
}

/// The innermost cause (e.g. "Connection refused"), which is what a person needs to read.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn snippet(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if t.is_empty() { "(empty)".into() } else { t }
}

/// Everything but RFC 3986's unreserved characters is escaped.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Encodes one path segment or query value (node ids and names are restricted, but the
/// server should say so, not a wrong URL).
pub fn segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, ESCAPED).to_string()
}
