"""{{name}}: a Wedge module.

`init` gets the deployment's config (JSON text), `on_message` every local MQTT message
matching the deployment's subscriptions, `on_tick` the time every `tick_ms`. Raising
`Err(text)` returns an error. The host calls are in `wit_world.imports.host` (see
wit/wedge.wit); componentize-py generates `wit_world` at build time.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host

config = {"threshold": 50.0, "alert_topic": "alerts/{{name}}"}


class WitWorld(wit_world.WitWorld):
    def init(self, text: str) -> None:
        try:
            config.update(json.loads(text))
        except ValueError as e:
            raise Err(f"invalid config: {e}")
        host.log(host.Level.INFO, f"{{name}} ready: alerts above {config['threshold']}")

    def on_message(self, topic: str, payload: bytes) -> None:
        # A reading: a JSON number, or an object with a numeric "value".
        try:
            value = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(value, dict):
            value = value.get("value")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if value > float(config["threshold"]):
                alert = json.dumps({"topic": topic, "value": value})
                host.publish(config["alert_topic"], alert.encode())

    def on_tick(self, now_ms: int) -> None:
        pass
