//! Modules written in JavaScript (componentize-js) and Python (componentize-py), built from
//! `wasm-modules/threshold-alert-js` and `threshold-alert-py` by `wasm-modules/build-guests`,
//! uploaded, deployed and checked on a real node like the Rust `threshold-alert` (their
//! first readings sent while they compile, reported `compiling`); a node whose component
//! limits are too small for one says which setting to raise.

use std::time::Duration;

use serde_json::{Value, json};
use wedge_tests::{ControlPlane, Device, Node, wait_for};

const DEADLINE: Duration = Duration::from_secs(120);

/// A guest module's name and bytes.
type Guest = (&'static str, Vec<u8>);

/// The guest modules, or `None` outside CI when they have not been built.
fn guests() -> anyhow::Result<Option<Vec<Guest>>> {
    let mut all = Vec::new();
    for name in wedge_modules::GUESTS {
        match wedge_modules::guest(name)? {
            Some(bytes) => all.push((*name, bytes)),
            None => {
                eprintln!("skipped: {name} is not built (wasm-modules/build-guests)");
                return Ok(None);
            }
        }
    }
    Ok(Some(all))
}

async fn upload(api: &wedge_tests::Api, name: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
    let (status, body) = api
        .post_bytes(&format!("/api/v1/modules?name={name}&version=1"), bytes)
        .await?;
    anyhow::ensure!(status == 201, "upload of {name}: {status} {body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn javascript_and_python_modules_run_like_the_rust_one() -> anyhow::Result<()> {
    let Some(guests) = guests()? else {
        return Ok(());
    };
    let cp = ControlPlane::start().await?;
    let node = Node::start(&cp, "edge", &[]).await?;
    let api = &cp.api;
    for (name, bytes) in guests {
        upload(api, name, bytes).await?;
        api.deploy(&json!({
            "name": name,
            "module": format!("{name}@1"),
            "nodes": ["edge"],
            "subscriptions": [format!("{name}/#")],
            "config": {"threshold": 50, "alert_topic": format!("alerts/{name}")},
        }))
        .await?;
    }
    // Each module takes seconds to compile; its readings are sent meanwhile, and wait in
    // its queue.
    let mut device = Device::connect(node.local_mqtt_addr, "device", &["alerts/#"]).await?;
    for name in wedge_modules::GUESTS {
        api.wait_module_state("edge", name, "compiling", DEADLINE)
            .await?;
        for reading in ["20", "71.5", r#"{"value": 90}"#, "not a number", "49"] {
            device
                .publish(&format!("{name}/room1"), reading.as_bytes())
                .await?;
        }
    }
    for name in wedge_modules::GUESTS {
        api.wait_module_state("edge", name, "running", DEADLINE)
            .await?;
    }
    let mut alerts: Vec<(String, Value)> = Vec::new();
    while alerts.len() < 4 {
        let (topic, payload) = device.recv(DEADLINE).await?;
        alerts.push((topic, serde_json::from_slice(&payload)?));
    }
    for name in wedge_modules::GUESTS {
        let values: Vec<f64> = alerts
            .iter()
            .filter(|(topic, _)| *topic == format!("alerts/{name}"))
            .map(|(_, alert)| {
                assert_eq!(alert["topic"], format!("{name}/room1"));
                assert_eq!(alert["threshold"].as_f64(), Some(50.0));
                alert["value"].as_f64().unwrap_or_default()
            })
            .collect();
        assert_eq!(values, [71.5, 90.0], "{name}");
        wait_for(
            &format!("{name} counted five messages"),
            DEADLINE,
            || async {
                api.module("edge", name)
                    .await
                    .filter(|m| m["stats"]["messages"] == 5 && m["stats"]["published"] == 2)
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_component_limit_that_is_too_small_names_its_setting() -> anyhow::Result<()> {
    let Some(guests) = guests()? else {
        return Ok(());
    };
    let cp = ControlPlane::start().await?;
    // componentize-py makes 14 core instances.
    let _node = Node::start_configured(&cp, "edge", &[], "127.0.0.1:0".parse()?, |c| {
        c.limits.instances = 10;
    })
    .await?;
    let api = &cp.api;
    let (name, bytes) = guests
        .into_iter()
        .find(|(name, _)| *name == "threshold-alert-py")
        .ok_or_else(|| anyhow::anyhow!("no Python guest"))?;
    upload(api, name, bytes).await?;
    api.deploy(&json!({
        "name": "py",
        "module": format!("{name}@1"),
        "nodes": ["edge"],
        "subscriptions": ["py/#"],
        "config": {"threshold": 50, "alert_topic": "alerts/py"},
    }))
    .await?;
    let failed = wait_for("the module reported failed", DEADLINE, || async {
        api.module("edge", "py")
            .await
            .filter(|m| m["state"] == "failed")
    })
    .await?;
    let error = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("limits.instances = 10") && error.contains("instance count too high"),
        "{error}"
    );
    Ok(())
}
