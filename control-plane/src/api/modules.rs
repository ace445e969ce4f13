//! `/api/v1/modules`: upload and list WebAssembly components.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wedge_proto::Digest;
use wedge_proto::topics::validate_id;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::model::ModuleRecord;
use crate::time::{now_ms, rfc3339};

pub fn routes(max_body: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, upload))
        .layer(DefaultBodyLimit::max(max_body))
}

/// A WebAssembly component (`wasm32-wasip2`), as raw bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // Only describes the request body; the handler reads raw bytes.
struct WasmComponent(Vec<u8>);

/// A module as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModuleView {
    pub digest: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub uploaded_at: String,
    /// The publisher key that signed it (`ed25519:<base64>`), when uploaded signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// What the signature covers: `name-version-digest`, or `digest-only` for a legacy
    /// signature (still accepted; it does not stop the bytes being uploaded under another
    /// name or version).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "name-version-digest")]
    pub signature_covers: Option<String>,
    /// Native code compiled from it for nodes, by precompile key (listed by `GET
    /// /modules`; nodes with that key load it instead of compiling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub precompiled: Vec<NativeView>,
}

/// Native code compiled from a module for nodes with one precompile key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct NativeView {
    /// The precompile key (`TRIPLE/HASH`) nodes report in their heartbeats.
    pub key: String,
    pub digest: String,
    pub size: u64,
}

impl From<wedge_proto::messages::NativeArtifact> for NativeView {
    fn from(n: wedge_proto::messages::NativeArtifact) -> Self {
        Self {
            key: n.key,
            digest: n.digest.to_string(),
            size: n.size,
        }
    }
}

impl From<&ModuleRecord> for ModuleView {
    fn from(m: &ModuleRecord) -> Self {
        Self {
            digest: m.digest.to_string(),
            name: m.name.clone(),
            version: m.version.clone(),
            size: m.size,
            uploaded_at: rfc3339(m.uploaded_at_ms),
            signed_by: m
                .signature
                .as_ref()
                .map(|s| wedge_proto::signing::format_public_key(&s.public_key)),
            signature_covers: m.signature.as_ref().map(|s| s.covers.as_str().to_owned()),
            precompiled: Vec::new(),
        }
    }
}

/// The header that carries a publisher's signature with an upload.
pub const SIGNATURE_HEADER: &str = "wedge-signature";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UploadParams {
    /// Module name, `[A-Za-z0-9._-]{1,128}`.
    name: String,
    /// Version, same characters; a name and version are uploaded once.
    version: String,
}

/// Every uploaded module, by name and version.
#[utoipa::path(get, path = "/", tag = "modules",
    responses((status = 200, body = Vec<ModuleView>), (status = 500, body = ErrorBody)))]
async fn list(State(state): State<AppState>) -> Result<Json<Vec<ModuleView>>, ApiError> {
    let mut modules = state.store.modules()?;
    modules.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    let mut views = Vec::with_capacity(modules.len());
    for m in &modules {
        let mut view = ModuleView::from(m);
        view.precompiled = state
            .store
            .natives(&m.digest)?
            .into_iter()
            .map(NativeView::from)
            .collect();
        views.push(view);
    }
    Ok(Json(views))
}

/// Uploads a WebAssembly component. Uploading the same bytes again answers 200 with the
/// stored module; other bytes under an existing name and version are a conflict.
#[utoipa::path(post, path = "/", tag = "modules",
    params(
        UploadParams,
        ("Wedge-Signature" = Option<String>, Header,
            description = "a publisher's signature: `ed25519:<base64 public key>:<base64 signature>` over `wedge-module-v2:<name>@<version>:sha256:<hex digest>` (`wedgectl modules push --sign-key`); a legacy signature over `wedge-module-v1:sha256:<hex digest>` is accepted and shown as `digest-only`"),
    ),
    request_body(content = WasmComponent, content_type = "application/wasm"),
    responses(
        (status = 201, description = "stored", body = ModuleView),
        (status = 200, description = "already stored with the same digest", body = ModuleView),
        (status = 400, description = "not a valid component, a bad name or version, or a signature that does not verify", body = ErrorBody),
        (status = 409, description = "name and version exist with other bytes", body = ErrorBody),
        (status = 413, description = "larger than max_module_size", body = ErrorBody),
    ))]
async fn upload(
    State(state): State<AppState>,
    params: Result<Query<UploadParams>, axum::extract::rejection::QueryRejection>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ModuleView>), ApiError> {
    let signature = match headers.get(SIGNATURE_HEADER) {
        None => None,
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::bad_request("the Wedge-Signature header is not text"))?;
            Some(
                wedge_proto::signing::ModuleSignature::from_header(text)
                    .map_err(|e| ApiError::bad_request(format!("Wedge-Signature: {e}")))?,
            )
        }
    };
    let Query(params) = params?;
    validate_id(&params.name).map_err(|e| ApiError::bad_request(format!("name {e}")))?;
    validate_id(&params.version).map_err(|e| ApiError::bad_request(format!("version {e}")))?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!(
                "the module is over the control plane's max_module_size = {} bytes (raise \
                 it with --max-module-size, WEDGE_MAX_MODULE_SIZE or max_module_size in the \
                 config file)",
                state.max_module_size
            ))
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    validate_component(&body).map_err(ApiError::bad_request)?;

    let digest = Digest::of(&body);
    let signature = match signature {
        None => None,
        Some(sig) => {
            let key = wedge_proto::signing::format_public_key(&sig.public_key);
            let module = wedge_proto::signing::Signed {
                name: &params.name,
                version: &params.version,
                digest: &digest,
            };
            let sig = sig.recognise(module).map_err(|_| {
                ApiError::bad_request(format!(
                    "Wedge-Signature does not verify: it was not made by {key} over this \
                     module as {}@{} ({digest})",
                    params.name, params.version
                ))
            })?;
            if sig.covers == wedge_proto::signing::Covers::DigestOnly {
                tracing::warn!(module = %params.name, version = %params.version, %key,
                    "legacy digest-only signature accepted: it does not bind the name and version");
            }
            Some(sig)
        }
    };
    if let Some(mut existing) = state.store.module(&params.name, &params.version)? {
        if existing.digest == digest {
            // The same bytes, now (differently) signed: keep the new signature.
            if signature.is_some() && signature != existing.signature {
                existing.signature = signature;
                let store = state.store.clone();
                let stored = existing.clone();
                tokio::task::spawn_blocking(move || store.put_module(&stored, &body))
                    .await
                    .map_err(ApiError::internal)??;
            }
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
        signature,
    };
    let store = state.store.clone();
    let stored = record.clone();
    tokio::task::spawn_blocking(move || store.put_module(&stored, &body))
        .await
        .map_err(ApiError::internal)??;
    tracing::info!(module = %record.name, version = %record.version, digest = %record.digest, "module uploaded");
    state.precompiler.uploaded(record.digest);
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
        .map_err(|e| format!("invalid WebAssembly component: {e}"))?;
    wedge_proto::rules::check_imports(component_imports(bytes)?)
}

/// The names the outer component imports (nested components' and modules' imports are
/// satisfied inside it, so they are skipped).
fn component_imports(bytes: &[u8]) -> Result<Vec<&str>, String> {
    use wasmparser::Payload;
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("invalid WebAssembly component: {e}"))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import =
                        import.map_err(|e| format!("invalid WebAssembly component: {e}"))?;
                    names.push(import.name.name);
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::validate_component;

    /// A component that imports the instances `names` (each of an empty instance type).
    fn importing(names: &[&str]) -> Vec<u8> {
        use wasm_encoder::{
            Component, ComponentImportSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
        };
        let mut component = Component::new();
        let mut types = ComponentTypeSection::new();
        types.instance(&InstanceType::new());
        component.section(&types);
        let mut imports = ComponentImportSection::new();
        for name in names {
            imports.import(*name, ComponentTypeRef::Instance(0));
        }
        component.section(&imports);
        component.finish()
    }

    #[test]
    fn imports_are_checked_against_what_nodes_provide() {
        let rust = wedge_modules::bytes("threshold-alert").unwrap();
        assert_eq!(validate_component(&rust), Ok(()));
        assert_eq!(
            validate_component(&importing(&[
                "wedge:module/host@0.1.0",
                "wasi:io/error@0.2.0"
            ])),
            Ok(())
        );
        let http = validate_component(&importing(&["wasi:http/types@0.2.10"])).unwrap_err();
        assert!(
            http.contains("wasi:http/types@0.2.10") && http.contains("--disable http fetch-event"),
            "{http}"
        );
        let foreign = validate_component(&importing(&["acme:db/query"])).unwrap_err();
        assert!(foreign.contains("acme:db/query"), "{foreign}");
    }
}
