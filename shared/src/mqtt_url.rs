//! `mqtt://host[:port]` and `mqtts://host[:port]` — how both binaries are told where a
//! broker is (a node its control plane, the control plane an external broker).

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: MQTT over TLS (default port 8883); otherwise plain (1883).
    pub tls: bool,
}

/// Parses `mqtts://host[:port]`, `mqtt://host[:port]` (also `tcp://`) or a bare
/// `host[:port]` (plain). IPv6 hosts go in brackets: `mqtt://[::1]:1883`.
pub fn parse(url: &str) -> Result<MqttUrl, String> {
    let (rest, tls) = match url.strip_prefix("mqtts://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("mqtt://")
                .or_else(|| url.strip_prefix("tcp://"))
                .unwrap_or(url),
            false,
        ),
    };
    if rest.contains("://") {
        return Err(format!(
            "URL {url:?}: only mqtts:// and mqtt:// are supported"
        ));
    }
    let rest = rest.trim_end_matches('/');
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("URL {url:?}: bad port"))?,
        ),
        _ => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("URL {url:?}: no host"));
    }
    Ok(MqttUrl {
        host: host.to_string(),
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_we_document() {
        let u = parse("mqtts://cp.example:9883").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("cp.example", 9883, true));
        assert_eq!(parse("mqtts://cp").unwrap().port, 8883);
        assert_eq!(parse("mqtt://cp").unwrap().port, 1883);
        assert!(!parse("tcp://cp:1").unwrap().tls);
        assert_eq!(parse("[::1]:9").unwrap().host, "::1");
        assert!(parse("http://x").is_err());
        assert!(parse("mqtt://:1").is_err());
    }
}
