//! `/api/v1/enrollment-tokens` and node revocation: who may join the fleet, and who is
//! cut off. Answers 409 when the broker runs without TLS (there is no node identity then).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedge_proto::topics::validate_id;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::Path;
use crate::identity::{EnrollToken, NodeIdentities};
use crate::time::{now_ms, rfc3339};

pub fn token_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(delete_token))
}

pub fn node_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(revoke))
        .routes(routes!(readmit))
        .routes(routes!(replace))
}

fn identity(state: &AppState) -> Result<&NodeIdentities, ApiError> {
    state.identity.as_deref().ok_or_else(|| {
        ApiError::conflict(
            "the broker runs without TLS (tls.enabled = false): nodes have no identity",
        )
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    /// What the token is for (shown in lists).
    #[serde(default)]
    name: String,
    /// How many nodes may enroll with it (1 to 100,000; default 1).
    #[serde(default = "one")]
    uses: u32,
    /// How long it is valid, in seconds (60 s to 30 days; default 24 h).
    #[serde(default = "day")]
    ttl_seconds: u64,
    /// The node ids it may enroll: one id, or a pattern where `*` stands for any run of
    /// characters (`berlin-*`). Absent: any id not already enrolled.
    #[serde(default)]
    nodes: Option<String>,
}

fn one() -> u32 {
    1
}
fn day() -> u64 {
    86_400
}

#[derive(Debug, Serialize, ToSchema)]
struct CreatedToken {
    /// The bootstrap token (`wde_<id>_<secret>`): shown only now.
    token: String,
    id: String,
    uses: u32,
    expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<String>,
    /// SHA-256 of the control plane's CA certificate: a node pins it (`uplink.ca_sha256`).
    ca_sha256: String,
}

/// Creates a bootstrap token for enrolling nodes.
#[utoipa::path(post, path = "", tag = "nodes",
    request_body = CreateToken,
    responses(
        (status = 201, body = CreatedToken),
        (status = 400, description = "bad request", body = ErrorBody),
        (status = 409, description = "broker TLS is off", body = ErrorBody),
    ))]
async fn create_token(
    State(state): State<AppState>,
    body: Result<Json<CreateToken>, JsonRejection>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let Json(req) = body?;
    let identity = identity(&state)?;
    if !(1..=100_000).contains(&req.uses) {
        return Err(ApiError::bad_request("uses must be 1 to 100000"));
    }
    if !(60..=30 * 86_400).contains(&req.ttl_seconds) {
        return Err(ApiError::bad_request("ttl_seconds must be 60 to 2592000"));
    }
    if req.name.len() > 64 || req.name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name is at most 64 printable characters",
        ));
    }
    if let Some(pattern) = &req.nodes {
        crate::identity::validate_pattern(pattern).map_err(ApiError::bad_request)?;
    }
    let (entry, token) = identity
        .tokens()
        .create(
            &req.name,
            req.uses,
            req.ttl_seconds * 1000,
            req.nodes.as_deref(),
            now_ms(),
        )
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            id: entry.id,
            uses: entry.uses_left,
            expires_at: rfc3339(entry.expires_ms),
            nodes: entry.nodes,
            ca_sha256: identity.ca_sha256(),
        }),
    ))
}

/// Lists the bootstrap tokens (never their secrets).
#[utoipa::path(get, path = "", tag = "nodes",
    responses(
        (status = 200, body = Vec<EnrollToken>),
        (status = 409, description = "broker TLS is off", body = ErrorBody),
    ))]
async fn list_tokens(State(state): State<AppState>) -> Result<Json<Vec<EnrollToken>>, ApiError> {
    Ok(Json(identity(&state)?.tokens().list()))
}

/// Deletes a bootstrap token: nodes can no longer enroll with it.
#[utoipa::path(delete, path = "/{id}", tag = "nodes",
    params(("id" = String, Path, description = "token id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such token", body = ErrorBody),
    ))]
async fn delete_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if identity(&state)?
        .tokens()
        .delete(&id)
        .map_err(ApiError::internal)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "no enrollment token with id {id}"
        )))
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct RevocationView {
    node_id: String,
    /// Certificates issued to the node up to this time are refused.
    revoked_at: String,
    /// Whether the node is shut out (cannot connect or enroll).
    revoked: bool,
}

/// Revokes a node: every certificate it holds is refused and its connection is cut at once.
#[utoipa::path(post, path = "/{id}/revoke", tag = "nodes",
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, body = RevocationView),
        (status = 400, description = "not a node id", body = ErrorBody),
    ))]
async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<RevocationView>, ApiError> {
    validate_id(&id).map_err(|e| ApiError::bad_request(format!("node id {e}")))?;
    let at = identity(&state)?
        .revoke(&id, now_ms())
        .map_err(ApiError::internal)?;
    // Its connection is cut now; say why rather than wait for its last will.
    state
        .fleet
        .offline(&id, "revoked", now_ms())
        .map_err(ApiError::internal)?;
    Ok(Json(RevocationView {
        node_id: id,
        revoked_at: rfc3339(at),
        revoked: true,
    }))
}

/// Lifts a revocation: the node may enroll again with a bootstrap token. The certificates
/// it held before stay refused.
#[utoipa::path(post, path = "/{id}/readmit", tag = "nodes",
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 204, description = "readmitted"),
        (status = 404, description = "the node is not revoked", body = ErrorBody),
    ))]
async fn readmit(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if identity(&state)?.readmit(&id).map_err(ApiError::internal)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("node {id} is not revoked")))
    }
}

#[derive(Debug, Serialize, ToSchema)]
struct ReplacementView {
    node_id: String,
    /// Certificates issued to the node up to this time are refused; the id may enroll again.
    replaced_at: String,
}

/// Lets another machine take over a node's id (replaced hardware, a wiped data directory):
/// every certificate issued to it so far is refused and its connection is cut, and the id
/// may enroll again with a bootstrap token. Without this, enrolling an id that holds a
/// valid certificate is refused.
#[utoipa::path(post, path = "/{id}/replace", tag = "nodes",
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, body = ReplacementView),
        (status = 400, description = "not a node id", body = ErrorBody),
        (status = 409, description = "the node is revoked (readmit it instead), or broker TLS is off", body = ErrorBody),
    ))]
async fn replace(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ReplacementView>, ApiError> {
    validate_id(&id).map_err(|e| ApiError::bad_request(format!("node id {e}")))?;
    let identity = identity(&state)?;
    if identity.revoked_at(&id).is_some() {
        return Err(ApiError::conflict(format!(
            "node {id} is revoked: readmit it to let it enroll again"
        )));
    }
    let at = identity
        .replace(&id, now_ms())
        .map_err(ApiError::internal)?;
    Ok(Json(ReplacementView {
        node_id: id,
        replaced_at: rfc3339(at),
    }))
}
