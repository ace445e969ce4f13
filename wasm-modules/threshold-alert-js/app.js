// threshold-alert in JavaScript: publishes an alert when a reading goes above a threshold.
//
// Config: {"threshold": <number>, "alert_topic": "<topic>"}. A reading is a payload that is
// a JSON number, or a JSON object with a numeric "value"; for a reading above the threshold
// the module publishes {"topic", "value", "threshold"} to alert_topic. Anything else is
// ignored. The same behaviour as the Rust module in ../threshold-alert.
//
// Exports are the world's functions in camelCase; a thrown string is the `err` of the
// result. Imports come from 'wedge:module/host@0.1.0'.
import { publish } from 'wedge:module/host@0.1.0';

let config = null;
const decoder = new TextDecoder();
const encoder = new TextEncoder();

function reading(payload) {
  let value;
  try {
    value = JSON.parse(decoder.decode(payload));
  } catch {
    return null;
  }
  if (value !== null && typeof value === 'object') value = value.value;
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

export function init(text) {
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw `invalid config: ${e}`;
  }
  if (typeof parsed?.threshold !== 'number' || typeof parsed?.alert_topic !== 'string') {
    throw 'invalid config: expected {"threshold": <number>, "alert_topic": "<topic>"}';
  }
  config = parsed;
}

export function onMessage(topic, payload) {
  const value = reading(payload);
  if (value !== null && value > config.threshold) {
    const alert = JSON.stringify({ topic, value, threshold: config.threshold });
    publish(config.alert_topic, encoder.encode(alert));
  }
}

export function onTick(_nowMs) {}
