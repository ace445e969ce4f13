//! `sensor-decoder`: turns compact binary sensor frames into JSON on the local broker.
//!
//! Frame (7 bytes, big-endian), as battery-powered radio sensors send them:
//!
//! | byte | field |
//! | --- | --- |
//! | 0 | format version, 1 |
//! | 1–2 | sensor id (u16) |
//! | 3 | kind: 1 temperature (°C), 2 relative humidity (%), 3 pressure (hPa) |
//! | 4–5 | value (i16): hundredths for kinds 1 and 2, tenths for kind 3 |
//! | 6 | battery (%) |
//!
//! Config (optional): `{"output_prefix": "<topic prefix>"}`, default `"decoded"`. A frame is
//! published as `{"sensor", "kind", "value", "unit", "battery"}` to
//! `<output_prefix>/<sensor id>/<kind>`. Malformed frames are refused with an error (counted by
//! the node), never fatal.

use serde::Deserialize;

use wedge_sdk::{Module, host};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub output_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            output_prefix: "decoded".into(),
        }
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sensor: u16,
    pub kind: &'static str,
    pub unit: &'static str,
    pub value: f64,
    pub battery: u8,
}

/// Decodes one frame.
pub fn decode(frame: &[u8]) -> Result<Reading, String> {
    let [version, id_hi, id_lo, kind, v_hi, v_lo, battery] = frame else {
        return Err(format!("a frame has 7 bytes, this one {}", frame.len()));
    };
    if *version != 1 {
        return Err(format!("unknown frame version {version}"));
    }
    let raw = f64::from(i16::from_be_bytes([*v_hi, *v_lo]));
    let (kind, unit, value) = match kind {
        1 => ("temperature", "C", raw / 100.0),
        2 => ("humidity", "%", raw / 100.0),
        3 => ("pressure", "hPa", raw / 10.0),
        other => return Err(format!("unknown sensor kind {other}")),
    };
    if *battery > 100 {
        return Err(format!("battery of {battery}% is not a percentage"));
    }
    Ok(Reading {
        sensor: u16::from_be_bytes([*id_hi, *id_lo]),
        kind,
        unit,
        value,
        battery: *battery,
    })
}

/// The topic and JSON payload a reading is published as.
pub fn render(prefix: &str, r: &Reading) -> (String, Vec<u8>) {
    let topic = format!("{prefix}/{}/{}", r.sensor, r.kind);
    let body = serde_json::json!({
        "sensor": r.sensor, "kind": r.kind, "value": r.value, "unit": r.unit, "battery": r.battery,
    });
    (topic, body.to_string().into_bytes())
}

/// The module: where decoded readings go.
pub struct Decoder {
    output_prefix: String,
}

impl Module for Decoder {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = wedge_sdk::config(config)?;
        if config.output_prefix.is_empty() || config.output_prefix.contains(['+', '#']) {
            return Err("invalid config: output_prefix must be a topic without wildcards".into());
        }
        Ok(Self {
            output_prefix: config.output_prefix,
        })
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let reading = decode(payload).map_err(|e| format!("{topic}: {e}"))?;
        let (out, body) = render(&self.output_prefix, &reading);
        host::publish(&out, &body)
    }
}

wedge_sdk::module!(Decoder);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_kind() {
        let t = decode(&[1, 0x01, 0x02, 1, 0x08, 0x66, 87]).unwrap();
        assert_eq!(
            t,
            Reading {
                sensor: 258,
                kind: "temperature",
                unit: "C",
                value: 21.5,
                battery: 87
            }
        );
        assert_eq!(decode(&[1, 0, 1, 1, 0xFF, 0x38, 50]).unwrap().value, -2.0);
        assert_eq!(decode(&[1, 0, 1, 2, 0x17, 0x70, 50]).unwrap().value, 60.0);
        assert_eq!(decode(&[1, 0, 1, 3, 0x27, 0x9A, 50]).unwrap().value, 1013.8);
        let (topic, body) = render("decoded", &t);
        assert_eq!(topic, "decoded/258/temperature");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["value"], 21.5);
    }

    #[test]
    fn refuses_malformed_frames() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[1, 0, 1, 1, 0, 0]).is_err());
        assert!(decode(&[2, 0, 1, 1, 0, 0, 1]).is_err());
        assert!(decode(&[1, 0, 1, 9, 0, 0, 1]).is_err());
        assert!(decode(&[1, 0, 1, 1, 0, 0, 101]).is_err());
    }
}
