//! The HTTP API (JSON). One file per resource; [`error::ApiError`] is the one error shape:
//! `{"error": {"code": "...", "message": "..."}}`.

pub mod deployments;
pub mod error;
pub mod fleet;
pub mod health;
pub mod modules;
pub mod nodes;

use std::sync::Arc;

use axum::Router;

use crate::fleet::Fleet;
use crate::mqtt::Counters;
use crate::rollout::Rollouts;
use crate::store::Store;

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub fleet: Arc<Fleet>,
    pub rollouts: Arc<Rollouts>,
    pub counters: Arc<Counters>,
    pub max_module_size: usize,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let max_body = state.max_module_size;
    Router::new()
        .merge(health::routes())
        .nest(
            "/api/v1",
            Router::new()
                .nest("/modules", modules::routes(max_body))
                .nest("/deployments", deployments::routes())
                .nest("/nodes", nodes::routes())
                .nest("/fleet", fleet::routes()),
        )
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .with_state(state)
}
