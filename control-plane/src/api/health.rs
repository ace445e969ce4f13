//! Liveness and readiness probes.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Alive: the process answers HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "the process is alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the store answers, the control plane's MQTT session is connected to the
/// broker (the embedded one, or the external one given by `mqtt_broker`), and the handlers
/// of nodes' messages run and are not stuck on one message.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "store and broker are up", body = String, content_type = "text/plain"),
        (status = 503, description = "the store does not answer, the broker is not connected, or the inbound handlers are gone or stuck", body = String, content_type = "text/plain"),
    ))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, String) {
    let unavailable = |why: &str| (StatusCode::SERVICE_UNAVAILABLE, why.to_owned());
    if state.store.modules().is_err() {
        return unavailable("store unavailable");
    }
    if !state.counters.connected.load(Ordering::Relaxed) {
        return unavailable("not connected to the MQTT broker");
    }
    if let Some(problem) = state.counters.liveness.problem(crate::time::now_ms()) {
        return unavailable(&problem);
    }
    (StatusCode::OK, "ready".to_owned())
}

/// Prometheus metrics: nodes by status, rollouts by phase, telemetry ingest and acks, API
/// latency by route, resident memory. Like every API read it needs a token (viewer is
/// enough): give Prometheus one with `authorization: {credentials: …}`.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "OpenMetrics text", body = String,
        content_type = "application/openmetrics-text")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, wedge_service::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
}
