// {{name}}: a Wedge module. `init` gets the deployment's config (JSON text), `onMessage`
// every local MQTT message matching the deployment's subscriptions (payload: Uint8Array),
// `onTick` the time every `tick_ms`. Throwing a string returns it as the error. The host
// calls are imported from 'wedge:module/host@0.1.0' (see wit/wedge.wit).
import { publish, log } from 'wedge:module/host@0.1.0';

let config = { threshold: 50, alert_topic: 'alerts/{{name}}' };

export function init(text) {
  try {
    config = { ...config, ...JSON.parse(text) };
  } catch (e) {
    throw `invalid config: ${e}`;
  }
  log('info', `{{name}} ready: alerts above ${config.threshold}`);
}

export function onMessage(topic, payload) {
  // A reading: a JSON number, or an object with a numeric "value".
  let value;
  try {
    value = JSON.parse(new TextDecoder().decode(payload));
  } catch {
    return;
  }
  if (value !== null && typeof value === 'object') value = value.value;
  if (typeof value === 'number' && value > config.threshold) {
    publish(config.alert_topic, new TextEncoder().encode(JSON.stringify({ topic, value })));
  }
}

export function onTick(_nowMs) {}
