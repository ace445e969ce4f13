//! Helpers the example modules share. Plain Rust with no host calls, so it builds for the
//! guest (`wasm32-wasip2`) and is tested natively.

use serde::de::DeserializeOwned;

/// The numeric reading in a payload: a JSON number, or a JSON object with a numeric
/// `"value"`. `None` for anything else.
pub fn reading(payload: &[u8]) -> Option<f64> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    match &value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::Object(map) => map.get("value")?.as_f64(),
        _ => None,
    }
}

/// Parses a module's JSON configuration; empty text means the type's defaults.
pub fn config<T: DeserializeOwned + Default>(json: &str) -> Result<T, String> {
    if json.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings() {
        assert_eq!(reading(b"42"), Some(42.0));
        assert_eq!(reading(br#"{"value": -1.5, "unit": "C"}"#), Some(-1.5));
        assert_eq!(reading(b"\"42\""), None);
        assert_eq!(reading(br#"{"value": "x"}"#), None);
        assert_eq!(reading(b"[1]"), None);
        assert_eq!(reading(b"garbage"), None);
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Cfg {
        n: u32,
    }

    #[test]
    fn configs() {
        assert_eq!(config::<Cfg>(""), Ok(Cfg { n: 0 }));
        assert_eq!(config::<Cfg>(r#"{"n": 3}"#), Ok(Cfg { n: 3 }));
        assert!(config::<Cfg>(r#"{"m": 3}"#).is_err());
    }
}
