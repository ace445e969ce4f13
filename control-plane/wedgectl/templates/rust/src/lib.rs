//! {{name}}: a Wedge module. `init` gets the deployment's config (JSON text), `on_message`
//! every local MQTT message matching the deployment's subscriptions, `on_tick` the time
//! every `tick_ms`. The host calls are in `wedge::module::host` (see wit/wedge.wit).

use std::cell::RefCell;

wit_bindgen::generate!({ path: "wit", world: "module" });

use wedge::module::host;

/// What `init` read from the config.
struct State {
    threshold: f64,
    alert_topic: String,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

struct Module;

impl Guest for Module {
    fn init(config: String) -> Result<(), String> {
        let config: serde_json::Value =
            serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        let state = State {
            threshold: config["threshold"].as_f64().unwrap_or(50.0),
            alert_topic: config["alert_topic"].as_str().unwrap_or("alerts/{{name}}").to_string(),
        };
        host::log(host::Level::Info, &format!("{{name}} ready: alerts above {}", state.threshold));
        STATE.with(|s| *s.borrow_mut() = Some(state));
        Ok(())
    }

    fn on_message(topic: String, payload: Vec<u8>) -> Result<(), String> {
        // A reading: a JSON number, or an object with a numeric "value".
        let value = match serde_json::from_slice::<serde_json::Value>(&payload) {
            Ok(serde_json::Value::Object(o)) => o.get("value").and_then(|v| v.as_f64()),
            Ok(v) => v.as_f64(),
            Err(_) => None,
        };
        STATE.with(|s| {
            let state = s.borrow();
            let state = state.as_ref().ok_or("not initialised")?;
            match value {
                Some(v) if v > state.threshold => {
                    let alert = serde_json::json!({"topic": topic, "value": v});
                    host::publish(&state.alert_topic, alert.to_string().as_bytes())
                }
                _ => Ok(()),
            }
        })
    }

    fn on_tick(_now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

export!(Module);
