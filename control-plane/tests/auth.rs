//! Every refusal of the API's token checks: no token, a bad one, a revoked one (401), a
//! viewer writing (403), a token over its rate (429); and what stays public.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::Value;
use wedge_control_plane::auth::{self, Role};

const DEADLINE: Duration = Duration::from_secs(30);

async fn send(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = client.request(method, url).json(&serde_json::json!({}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_rates_and_revocation() {
    let dir = tempfile::tempdir().unwrap();
    let (viewer_entry, viewer) = auth::create(dir.path(), "viewer", Role::Viewer).unwrap();
    let (_, operator) = auth::create(dir.path(), "operator", Role::Operator).unwrap();
    let (_, busy) = auth::create(dir.path(), "busy", Role::Viewer).unwrap();
    let cp = wedge_control_plane::App::start(wedge_control_plane::Config {
        data_dir: dir.path().to_path_buf(),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        mqtt_listen: "127.0.0.1:0".parse().unwrap(),
        auth: wedge_control_plane::config::AuthConfig {
            enabled: true,
            rate_per_sec: 1,
            rate_burst: 10,
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", cp.api_addr());
    let c = reqwest::Client::new();
    let nodes = format!("{base}/api/v1/nodes");
    let deployments = format!("{base}/api/v1/deployments");
    use reqwest::Method;

    // 401: no token, a malformed one, a wrong secret.
    let (status, headers, body) = send(&c, Method::GET, &nodes, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(headers["www-authenticate"], "Bearer");
    for bad in [
        "nonsense".to_string(),
        format!("wdg_{}_{}", viewer_entry.id, "A".repeat(43)),
    ] {
        let (status, _, body) = send(&c, Method::GET, &nodes, Some(&bad)).await;
        assert_eq!(status, 401, "{body}");
    }

    // A viewer reads but may not write: 403 says why.
    let (status, _, _) = send(&c, Method::GET, &nodes, Some(&viewer)).await;
    assert_eq!(status, 200);
    let (status, _, body) = send(&c, Method::POST, &deployments, Some(&viewer)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs an operator token"),
        "{body}"
    );
    // An operator gets through to the handler (which then judges the body).
    let (status, _, body) = send(&c, Method::POST, &deployments, Some(&operator)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &"bad_request".into())
    );

    // The probes, the dashboard's assets and the API description need no token.
    for path in [
        "/healthz",
        "/readyz",
        "/",
        "/dashboard/app.js",
        "/api/openapi.json",
    ] {
        let resp = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }

    // 429 beyond the burst, with Retry-After; other tokens are not affected.
    let mut answers = Vec::new();
    for _ in 0..20 {
        let (status, headers, _) = send(&c, Method::GET, &nodes, Some(&busy)).await;
        answers.push((status, headers.get("retry-after").cloned()));
    }
    assert!(answers[..10].iter().all(|(s, _)| *s == 200), "{answers:?}");
    let limited = answers.iter().find(|(s, _)| *s == 429);
    let (_, retry_after) = limited.expect("a 429 after the burst");
    let retry: u64 = retry_after
        .as_ref()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let (status, _, _) = send(&c, Method::GET, &nodes, Some(&operator)).await;
    assert_eq!(status, 200);

    // Revoking and creating take effect on the running control plane.
    assert!(auth::revoke(dir.path(), &viewer_entry.id).unwrap());
    let (_, late) = auth::create(dir.path(), "late", Role::Viewer).unwrap();
    let start = Instant::now();
    loop {
        let (revoked, _, _) = send(&c, Method::GET, &nodes, Some(&viewer)).await;
        let (created, _, _) = send(&c, Method::GET, &nodes, Some(&late)).await;
        if (revoked, created) == (401, 200) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "({revoked}, {created})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cp.stop().await;
}
