//! The node's small HTTP server: `/metrics` for Prometheus, `/healthz` and `/readyz` for
//! supervisors. It listens on `http_listen` (loopback by default: the series name modules
//! and the node's backlog, so expose it deliberately).
//!
//! Readiness is about local work: the local broker runs, its in-process link to the modules
//! is open, and the store answers. The uplink
//! is *reported* (`uplink: connected|disconnected`) but does not make the node unready —
//! a node cut off from the control plane still runs its modules and buffers telemetry, which
//! is its job; restarting it for a dead uplink would only lose that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wedge_broker::EmbeddedBroker;

use crate::buffer::Buffer;
use crate::metrics::Metrics;
use crate::uplink;

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub broker: Arc<EmbeddedBroker>,
    pub buffer: Buffer,
    pub uplink: Arc<uplink::Counters>,
    /// Whether the in-process link that carries local messages to modules is open.
    pub local_link: Arc<std::sync::atomic::AtomicBool>,
}

/// Binds `addr` (so a taken port fails the start, before anything else runs).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for HTTP (metrics, probes) on {addr}: {e}"))
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state);
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    if let Err(e) = serve.await {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, wedge_service::metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let broker = state.broker.is_running();
    let link = state.local_link.load(Ordering::Relaxed);
    let buffer = state.buffer.clone();
    // A sled read; off the async threads in case the disk is slow.
    let store = tokio::task::spawn_blocking(move || buffer.first_available().is_ok())
        .await
        .unwrap_or(false);
    let uplink = if state.uplink.connected.load(Ordering::Relaxed) {
        "connected"
    } else {
        "disconnected"
    };
    let ready = broker && link && store;
    let body = serde_json::json!({
        "ready": ready,
        "local_broker": if broker { "running" } else { "stopped" },
        "module_link": if link { "open" } else { "closed" },
        "store": if store { "ok" } else { "failing" },
        "uplink": uplink,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}
