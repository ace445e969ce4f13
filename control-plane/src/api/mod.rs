//! The HTTP API (JSON). One file per resource; [`error::ApiError`] is the one error shape:
//! `{"error": {"code": "...", "message": "..."}}`.

pub mod auth;
pub mod deployments;
pub mod error;
pub mod extract;
pub mod fleet;
pub mod health;
pub mod identity;
pub mod modules;
pub mod nodes;
pub mod serve;
pub mod tls;

use std::sync::Arc;

use std::sync::OnceLock;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use crate::state::AppState;

/// The description of the API: title, version, tags. Paths and schemas come from the
/// handlers' `#[utoipa::path]` attributes through [`routes`].
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Wedge control plane",
        description = "Fleet registry, module store, deployments and rollouts, telemetry."
    ),
    tags(
        (name = "modules", description = "WebAssembly components"),
        (name = "deployments", description = "what runs where, revisions and rollouts"),
        (name = "nodes", description = "the fleet, node by node"),
        (name = "fleet", description = "the fleet in one answer"),
        (name = "health", description = "probes"),
        (name = "meta", description = "this description"),
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

/// Every operation takes a bearer token (`wedge-control token create`); without one the
/// answer is 401, with a viewer token on a write 403, over the token's rate 429.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        openapi
            .components
            .get_or_insert_default()
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "An API token, `wdg_<id>_<secret>`: viewer reads, operator also writes",
                        ))
                        .build(),
                ),
            );
    }
}

/// Every API route with its description. Routes are registered only through
/// `utoipa_axum::routes!`, which takes method and path from the handler's description: a
/// route cannot exist undescribed, nor a description without its route.
fn routes(max_body: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .merge(health::routes())
        .routes(routes!(openapi_json))
        .nest("/api/v1/modules", modules::routes(max_body))
        .nest("/api/v1/deployments", deployments::routes())
        .nest(
            "/api/v1/nodes",
            nodes::routes().merge(identity::node_routes()),
        )
        .nest("/api/v1/enrollment-tokens", identity::token_routes())
        .nest("/api/v1/fleet", fleet::routes())
}

/// The OpenAPI 3 description of this API, as served at `/api/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = routes(0).split_for_parts().1;
    api.info.version = env!("CARGO_PKG_VERSION").into();
    describe_auth(&mut api);
    api
}

/// What the token check (`auth::check`) does, in every operation's description: public
/// paths need no token (`security: []`); every other operation may answer 401 (no valid
/// token) and 429 (over the token's rate), and a write 403 (a viewer's token). Done here
/// once rather than on each handler, so no operation can forget it.
fn describe_auth(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in api.paths.paths.iter_mut() {
        let public = auth::public(path);
        let operations = [
            (&mut item.get, false),
            (&mut item.head, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.patch, true),
            (&mut item.delete, true),
        ];
        for (op, writes) in operations {
            let Some(op) = op.as_mut() else { continue };
            if public {
                op.security = Some(Vec::new());
                continue;
            }
            let responses = &mut op.responses.responses;
            responses
                .entry("401".into())
                .or_insert_with(|| error("no token, or one unknown, revoked or expired").into());
            responses
                .entry("429".into())
                .or_insert_with(|| error("over the token's rate; see Retry-After").into());
            if writes {
                responses
                    .entry("403".into())
                    .or_insert_with(|| error("a viewer's token cannot write").into());
            }
        }
    }
}

/// This API's OpenAPI 3 description.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    static SPEC: OnceLock<String> = OnceLock::new();
    let body = SPEC.get_or_init(|| {
        // Our own description always serializes.
        openapi().to_pretty_json().unwrap_or_default()
    });
    ([(header::CONTENT_TYPE, "application/json")], body.as_str())
}

/// The whole API, and the dashboard at `/`, behind the token checks of `guard`.
pub fn router(state: AppState, guard: Arc<auth::Guard>) -> Router {
    let (api, _) = routes(state.max_module_size).split_for_parts();
    api.merge(crate::dashboard::routes())
        .fallback(|| async { error::ApiError::not_found("no such route; see /api/openapi.json") })
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(guard, auth::check))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .with_state(state)
}
