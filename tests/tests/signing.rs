//! Signed modules: a node that trusts a publisher key runs modules signed by it and refuses,
//! with a clear state in the API, unsigned ones and ones signed by another key; the control
//! plane refuses a signature that does not verify at upload, and one made for the same bytes
//! under another name or version (signatures bind them); a legacy digest-only signature is
//! still accepted, and marked as such.

use std::time::Duration;

use anyhow::ensure;
use serde_json::json;
use wedge_proto::Digest;
use wedge_proto::signing::{Covers, ModuleSignature, Signed, format_public_key, public_key};
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

    let sign = |key: &[u8; 32], name: &str, version: &str, bytes: &[u8], covers: Covers| {
        let digest = Digest::of(bytes);
        let module = Signed {
            name,
            version,
            digest: &digest,
        };
        ModuleSignature::sign_covering(key, module, covers)
    };
    let upload = |name: &'static str, module: &'static str, key: Option<[u8; 32]>| {
        let api = cp.api.clone();
        async move {
            let bytes = wedge_modules::bytes(module)?;
            let sig = key.map(|k| sign(&k, name, "1", &bytes, Covers::NameVersionDigest));
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
    ensure!(body["signature_covers"] == "name-version-digest", "{body}");
    let (status, _) = upload("unsigned", "forward", None).await?;
    ensure!(status == 201);
    let (status, _) = upload("foreign", "threshold-alert", Some(stranger)).await?;
    ensure!(status == 201);

    // A signature made over other bytes is refused at upload.
    let other = sign(
        &trusted,
        "forged",
        "1",
        b"something else",
        Covers::NameVersionDigest,
    );
    let refused = |status: u16, body: &serde_json::Value| {
        status == 400
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("does not verify"))
    };
    let (status, body) = cp
        .api
        .post_signed(
            "/api/v1/modules?name=forged&version=1",
            wedge_modules::bytes("forward")?,
            Some(&other),
        )
        .await?;
    ensure!(refused(status, &body), "{body}");

    // The publisher signed window-stats as `signed@1`; the same bytes and signature
    // re-labelled as another version or another module are refused.
    let window_stats = wedge_modules::bytes("window-stats")?;
    let signed_as_1 = sign(
        &trusted,
        "signed",
        "1",
        &window_stats,
        Covers::NameVersionDigest,
    );
    for relabel in ["signed&version=2", "latest&version=1"] {
        let (status, body) = cp
            .api
            .post_signed(
                &format!("/api/v1/modules?name={relabel}"),
                window_stats.clone(),
                Some(&signed_as_1),
            )
            .await?;
        ensure!(refused(status, &body), "{relabel}: {status} {body}");
    }

    // A legacy signature over the digest alone still verifies and runs, marked as such.
    let decoder = wedge_modules::bytes("sensor-decoder")?;
    let legacy = sign(&trusted, "", "", &decoder, Covers::DigestOnly);
    let (status, body) = cp
        .api
        .post_signed(
            "/api/v1/modules?name=legacy&version=1",
            decoder,
            Some(&legacy),
        )
        .await?;
    ensure!(status == 201, "{body}");
    ensure!(body["signature_covers"] == "digest-only", "{body}");

    for name in ["signed", "unsigned", "foreign", "legacy"] {
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
    for name in ["signed", "legacy"] {
        cp.api
            .wait_module_state("secure", name, "running", DEADLINE)
            .await?;
    }
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
