//! Bearer-token checks in front of the API: 401 without a valid token, 403 when its role
//! may not make the request, 429 beyond the token's request rate.
//!
//! The probes, the dashboard's static assets and the OpenAPI description are public: they
//! hold no fleet data (the dashboard fetches its data through the API, with a token).

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use crate::auth::ApiTokens;

/// The checks and their state.
#[derive(Debug)]
pub struct Guard {
    tokens: Option<ApiTokens>,
    limiter: DefaultKeyedRateLimiter<String>,
}

impl Guard {
    /// `tokens: None` turns checking off (the demo, loudly).
    pub fn new(tokens: Option<ApiTokens>, per_sec: u32, burst: u32) -> Self {
        let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_sec);
        Self {
            tokens,
            limiter: RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)),
        }
    }
}

pub(crate) fn public(path: &str) -> bool {
    matches!(path, "/" | "/healthz" | "/readyz" | "/api/openapi.json")
        || path.starts_with("/dashboard/")
}

pub async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let Some(tokens) = &guard.tokens else {
        return next.run(req).await;
    };
    if public(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return unauthorized("this API needs a token: send `Authorization: Bearer <token>`");
    };
    let Some(entry) = tokens.verify(presented) else {
        return unauthorized("the token is not valid (unknown, malformed or revoked)");
    };
    if !entry.role.allows(req.method()) {
        return ApiError::forbidden(format!(
            "token {} ({}) may only read; {} {} needs an operator token",
            entry.id,
            entry.role.as_str(),
            req.method(),
            req.uri().path()
        ))
        .into_response();
    }
    if let Err(not_until) = guard.limiter.check_key(&entry.id) {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut resp = ApiError::too_many_requests(format!(
            "token {} is over its request rate; retry in {secs} s",
            entry.id
        ))
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    next.run(req).await
}

fn unauthorized(message: &str) -> Response {
    let mut resp = ApiError::unauthorized(message).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}
