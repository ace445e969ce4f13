//! The OpenAPI description covers the whole HTTP API, the README's API table lists exactly
//! the described routes, and every error comes in the one shape.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// A control plane, and a client carrying an operator token it accepts.
async fn control_plane(dir: &std::path::Path) -> (wedge_control_plane::Running, reqwest::Client) {
    let role = wedge_control_plane::auth::Role::Operator;
    let (_, token) = wedge_control_plane::auth::create(dir, "test", role).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let running = wedge_control_plane::App::start(wedge_control_plane::Config {
        data_dir: dir.to_path_buf(),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        mqtt_listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .await
    .unwrap();
    (running, client)
}

/// `(METHOD, /path/{param})` of every operation in the description.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `(METHOD, /path)` of every route in the README's API table: each backticked
/// `METHOD /path?query` in the table's first column.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = include_str!("../../README.md");
    let table = readme
        .split("## HTTP API")
        .nth(1)
        .expect("README has an HTTP API section");
    let mut out = BTreeSet::new();
    for line in table.lines().take_while(|l| !l.starts_with("## ")) {
        let Some(first_cell) = line.strip_prefix("| ").and_then(|l| l.split(" |").next()) else {
            continue;
        };
        for part in first_cell.split('`').skip(1).step_by(2) {
            if let Some((method, path)) = part.split_once(' ')
                && ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method)
            {
                let path = path.split('?').next().unwrap();
                out.insert((method.to_string(), path.to_string()));
            }
        }
    }
    out
}

fn assert_error_shape(status: u16, body: &Value) {
    let e = &body["error"];
    assert!(
        e["code"].as_str().is_some_and(|c| !c.is_empty())
            && e["message"].as_str().is_some_and(|m| !m.is_empty())
            && body.as_object().unwrap().len() == 1
            && e.as_object().unwrap().len() == 2,
        "{status}: not the error shape: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_described_and_every_description_is_routed() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, client) = control_plane(dir.path()).await;
    let base = format!("http://{}", cp.api_addr());

    let resp = client
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let spec: Value = resp.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        spec,
        serde_json::to_value(wedge_control_plane::api::openapi()).unwrap(),
        "served and generated descriptions differ"
    );

    let ops = operations(&spec);
    assert!(ops.len() >= 15, "{ops:?}");
    for (method, path) in &ops {
        let op = &spec["paths"][path][method.to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{method} {path} describes no success"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{method} {path} has no tag"
        );

        // The route exists: whatever the answer to a made-up request, it is not "no such
        // route" (404 from the fallback) nor "method not allowed".
        let url = format!(
            "{base}{}",
            path.replace("{id}", "no-such-node")
                .replace("{name}", "no-such-deployment")
        );
        let req = match method.as_str() {
            "GET" => client.get(&url),
            "POST" => client.post(&url).json(&json!({})),
            "DELETE" => client.delete(&url),
            other => panic!("unexpected method {other}"),
        };
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path} is described but not routed");
        if status >= 400 {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_error_shape(status, &body);
            assert!(
                !(status == 404
                    && body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .starts_with("no such route")),
                "{method} {path} is described but not routed"
            );
        }
    }

    let readme = readme_routes();
    let missing: Vec<_> = ops.difference(&readme).collect();
    let extra: Vec<_> = readme.difference(&ops).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README's API table and the OpenAPI description differ: not in README {missing:?}, \
         not in the API {extra:?}"
    );
    cp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_one_shape() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, client) = control_plane(dir.path()).await;
    let base = format!("http://{}", cp.api_addr());

    let cases = [
        // unknown route, wrong method, unknown resources
        (client.get(format!("{base}/api/v1/nope")), 404, "not_found"),
        (
            client.delete(format!("{base}/api/v1/nodes")),
            405,
            "method_not_allowed",
        ),
        (
            client.get(format!("{base}/api/v1/nodes/ghost")),
            404,
            "not_found",
        ),
        (
            client.get(format!("{base}/api/v1/deployments/ghost")),
            404,
            "not_found",
        ),
        (
            client.get(format!("{base}/api/v1/nodes/%FF")),
            400,
            "bad_request",
        ),
        (
            client.get(format!("{base}/api/v1/nodes/x/telemetry?limit=-1")),
            400,
            "bad_request",
        ),
        // malformed and invalid bodies and queries
        (
            client
                .post(format!("{base}/api/v1/deployments"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "bad_request",
        ),
        (
            client
                .post(format!("{base}/api/v1/deployments"))
                .json(&json!({"name": "x", "module": "m@1", "surprise": 1})),
            400,
            "bad_request",
        ),
        (
            client.post(format!("{base}/api/v1/deployments")).body("{}"),
            400,
            "bad_request",
        ),
        (
            client
                .post(format!("{base}/api/v1/modules?name=a&version=1"))
                .body(&b"\0asm\x01\0\0\0"[..]),
            400,
            "bad_request",
        ),
        (
            client.post(format!("{base}/api/v1/modules")).body("x"),
            400,
            "bad_request",
        ),
    ];
    for (req, want_status, want_code) in cases {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, want_status, "{body}");
        if status >= 400 {
            assert_error_shape(status, &body);
            assert_eq!(body["error"]["code"], want_code, "{body}");
        }
    }
    cp.stop().await;
}
