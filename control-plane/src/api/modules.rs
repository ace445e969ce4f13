//! `/api/v1/modules`: upload and list WebAssembly components.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use wedge_shared::Digest;
use wedge_shared::topics::validate_id;

use super::AppState;
use super::error::ApiError;
use crate::store::ModuleRecord;
use crate::time::{now_ms, rfc3339};

pub fn routes(max_body: usize) -> Router<AppState> {
    Router::new()
        .route("/", get(list).post(upload))
        .layer(DefaultBodyLimit::max(max_body))
}

/// A module as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ModuleView {
    pub digest: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub uploaded_at: String,
}

impl From<&ModuleRecord> for ModuleView {
    fn from(m: &ModuleRecord) -> Self {
        Self {
            digest: m.digest.to_string(),
            name: m.name.clone(),
            version: m.version.clone(),
            size: m.size,
            uploaded_at: rfc3339(m.uploaded_at_ms),
        }
    }
}

#[derive(Debug, Deserialize)]
struct UploadParams {
    name: String,
    version: String,
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<ModuleView>>, ApiError> {
    let mut modules = state.store.modules()?;
    modules.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(Json(modules.iter().map(ModuleView::from).collect()))
}

async fn upload(
    State(state): State<AppState>,
    params: Result<Query<UploadParams>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ModuleView>), ApiError> {
    let Query(params) = params?;
    validate_id(&params.name).map_err(|e| ApiError::bad_request(format!("name {e}")))?;
    validate_id(&params.version).map_err(|e| ApiError::bad_request(format!("version {e}")))?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "a module may be at most {} bytes",
                state.max_module_size
            ))
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    validate_component(&body).map_err(ApiError::bad_request)?;

    let digest = Digest::of(&body);
    if let Some(existing) = state.store.module(&params.name, &params.version)? {
        if existing.digest == digest {
            return Ok((StatusCode::OK, Json(ModuleView::from(&existing))));
        }
        return Err(ApiError::conflict(format!(
            "{}@{} already exists with digest {}; upload a new version",
            params.name, params.version, existing.digest
        )));
    }
    let record = ModuleRecord {
        name: params.name,
        version: params.version,
        digest,
        size: body.len() as u64,
        uploaded_at_ms: now_ms(),
    };
    let store = state.store.clone();
    let stored = record.clone();
    tokio::task::spawn_blocking(move || store.put_module(&stored, &body))
        .await
        .map_err(ApiError::internal)??;
    tracing::info!(module = %record.name, version = %record.version, digest = %record.digest, "module uploaded");
    Ok((StatusCode::CREATED, Json(ModuleView::from(&record))))
}

/// Checks that `bytes` is a valid WebAssembly component (not a core module, not garbage).
pub fn validate_component(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("the body is empty; send the .wasm component as the request body".into());
    }
    if !wasmparser::Parser::is_component(bytes) {
        if wasmparser::Parser::is_core_wasm(bytes) {
            return Err(
                "this is a core WebAssembly module, not a component; build for \
                        wasm32-wasip2 or wrap it with `wasm-tools component new`"
                    .into(),
            );
        }
        return Err("the body is not a WebAssembly component".into());
    }
    let mut validator = wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
    validator
        .validate_all(bytes)
        .map(drop)
        .map_err(|e| format!("invalid WebAssembly component: {e}"))
}
