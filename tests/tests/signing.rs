//! Signed modules: a node that trusts a publisher key runs modules signed by it and refuses,
//! with a clear state in the API, unsigned ones and ones signed by another key; the control
//! plane refuses a signature that does not verify at upload.

use std::time::Duration;

use anyhow::ensure;
use serde_json::json;
use wedge_shared::Digest;
use wedge_shared::signing::{ModuleSignature, format_public_key, public_key};
use wedge_tests::{ControlPlane, Node};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_modules_signed_by_a_trusted_publisher_run() -> anyhow::Result<()> {
    let (trusted, stranger) = ([11u8; 32], [22u8; 32]);
    let cp = ControlPlane::start().await?;
    let mut node = Node::start_configured(&cp, "secure", &[], "127.0.0.1:0".parse()?, |c| {
        c.trusted_publishers = vec![format_public_key(&public_key(&trusted))]
    })
    .await?;
    cp.api.wait_status("secure", "online", DEADLINE).await?;

    let upload = |name: &'static str, module: &'static str, key: Option<[u8; 32]>| {
        let api = cp.api.clone();
        async move {
            let bytes = wedge_modules::bytes(module)?;
            let sig = key.map(|k| ModuleSignature::sign(&k, &Digest::of(&bytes)));
            api.post_signed(
                &format!("/api/v1/modules?name={name}&version=1"),
                bytes,
                sig.as_ref(),
            )
            .await
        }
    };
    let (status, body) = upload("signed", "window-stats", Some(trusted)).await?;
    ensure!(status == 201, "{body}");
    ensure!(
        body["signed_by"] == format_public_key(&public_key(&trusted)),
        "{body}"
    );
    let (status, _) = upload("unsigned", "forward", None).await?;
    ensure!(status == 201);
    let (status, _) = upload("foreign", "threshold-alert", Some(stranger)).await?;
    ensure!(status == 201);

    // A signature made over other bytes is refused at upload.
    let other = ModuleSignature::sign(&trusted, &Digest::of(b"something else"));
    let (status, body) = cp
        .api
        .post_signed(
            "/api/v1/modules?name=forged&version=1",
            wedge_modules::bytes("forward")?,
            Some(&other),
        )
        .await?;
    ensure!(status == 400, "{body}");
    ensure!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not verify")),
        "{body}"
    );

    for name in ["signed", "unsigned", "foreign"] {
        cp.api
            .deploy(&json!({
                "name": name,
                "module": format!("{name}@1"),
                "nodes": ["secure"],
                "subscriptions": ["sensors/#"],
                "config": {},
            }))
            .await?;
    }
    cp.api
        .wait_module_state("secure", "signed", "running", DEADLINE)
        .await?;
    let module = |node: serde_json::Value, name: &str| {
        node["modules"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let unsigned = module(
        cp.api
            .wait_module_state("secure", "unsigned", "failed", DEADLINE)
            .await?,
        "unsigned",
    );
    let foreign = module(
        cp.api
            .wait_module_state("secure", "foreign", "failed", DEADLINE)
            .await?,
        "foreign",
    );
    ensure!(
        unsigned["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("unsigned module refused")),
        "{unsigned}"
    );
    ensure!(
        foreign["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!(
                "untrusted key {}",
                format_public_key(&public_key(&stranger))
            ))),
        "{foreign}"
    );
    node.stop().await;
    cp.stop().await;
    Ok(())
}
