//! The fleet dashboard at `/`: one HTML page, a script and a style sheet, embedded in the
//! binary (no CDN, no build step, works offline next to the fleet).
//!
//! The page is a client of the public HTTP API and nothing else: whatever it shows, an
//! operator can also get with `curl` or `wedgectl`. It polls (every 2 s, the node list every
//! 5 s) rather than holding a stream open per browser: polling is stateless for the control
//! plane and recovers by itself when the connection drops. With API tokens on, the page asks
//! for one on the first 401 and keeps it in the browser's local storage.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("app.css");

/// The page only loads what it ships with: no inline script, no third-party origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX)))
        .route(
            "/dashboard/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/dashboard/app.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The assets change with the binary; a reload after an upgrade must see them.
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}
