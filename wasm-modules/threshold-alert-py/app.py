"""threshold-alert in Python: publishes an alert when a reading goes above a threshold.

Config: {"threshold": <number>, "alert_topic": "<topic>"}. A reading is a payload that is a
JSON number, or a JSON object with a numeric "value"; for a reading above the threshold the
module publishes {"topic", "value", "threshold"} to alert_topic. Anything else is ignored.
The same behaviour as the Rust module in ../threshold-alert.

componentize-py generates the `wit_world` package from the WIT at build time: the class
`WitWorld` implements the world's exports (snake_case), and raising `Err(text)` returns the
`err` of the result.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import host

_config = None


def reading(payload: bytes):
    """The reading in `payload`, or None when it is not one."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global _config
        try:
            parsed = json.loads(config)
            _config = (float(parsed["threshold"]), str(parsed["alert_topic"]))
        except (ValueError, KeyError, TypeError) as e:
            raise Err(f'invalid config: {e}; expected {{"threshold": <number>, "alert_topic": "<topic>"}}')

    def on_message(self, topic: str, payload: bytes) -> None:
        threshold, alert_topic = _config
        value = reading(payload)
        if value is not None and value > threshold:
            alert = {"topic": topic, "value": value, "threshold": threshold}
            host.publish(alert_topic, json.dumps(alert).encode())

    def on_tick(self, now_ms: int) -> None:
        pass
