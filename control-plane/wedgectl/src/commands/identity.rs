//! `wedgectl enroll-token …`, `wedgectl revoke NODE`, `wedgectl readmit NODE`,
//! `wedgectl replace NODE`.

use std::time::Duration;

use serde_json::json;

use crate::client::{Client, segment};
use crate::output::{self, Format, text};
use crate::{Failure, Result};

/// What `enroll-token create` asks for.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub name: &'a str,
    pub uses: u32,
    pub ttl: Duration,
    pub nodes: Option<&'a str>,
}

pub async fn create_token(client: &Client, out: Format, token: NewToken<'_>) -> Result<()> {
    let mut body = json!({"name": token.name, "uses": token.uses,
        "ttl_seconds": token.ttl.as_secs()});
    if let Some(nodes) = token.nodes {
        body["nodes"] = json!(nodes);
    }
    let answer = client.post_json("/api/v1/enrollment-tokens", &body).await?;
    let t = answer.body;
    if out == Format::Json {
        output::json(&t);
        return Ok(());
    }
    println!("Token:      {}", text(&t["token"]));
    println!("CA SHA-256: {}", text(&t["ca_sha256"]));
    println!("Uses:       {}", text(&t["uses"]));
    println!("Expires:    {}", text(&t["expires_at"]));
    if t.get("nodes").is_some() {
        println!("Nodes:      {}", text(&t["nodes"]));
    }
    println!();
    println!("Start a node with it (the token is shown only now):");
    println!(
        "  wedge-node --node-id ID --control-plane mqtts://HOST:8883 --enroll-token {} --ca-sha256 {}",
        text(&t["token"]),
        text(&t["ca_sha256"])
    );
    Ok(())
}

pub async fn list_tokens(client: &Client, out: Format) -> Result<()> {
    let all = client.get("/api/v1/enrollment-tokens").await?;
    if out == Format::Json {
        output::json(&all);
        return Ok(());
    }
    let mut t = output::table(&["id", "name", "uses left", "nodes", "expires"]);
    for e in all.as_array().into_iter().flatten() {
        let expires = e["expires_ms"]
            .as_u64()
            .map(|ms| {
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                    .to_string()
            })
            .unwrap_or_default();
        t.add_row(vec![
            text(&e["id"]),
            text(&e["name"]),
            text(&e["uses_left"]),
            e["nodes"].as_str().map_or("any".to_string(), output::clean),
            expires,
        ]);
    }
    println!("{t}");
    Ok(())
}

pub async fn delete_token(client: &Client, id: &str) -> Result<()> {
    client
        .delete(&format!("/api/v1/enrollment-tokens/{}", segment(id)))
        .await?;
    println!("enrollment token {id} deleted");
    Ok(())
}

pub async fn revoke(client: &Client, out: Format, node: &str) -> Result<()> {
    let answer = client
        .post_json(
            &format!("/api/v1/nodes/{}/revoke", segment(node)),
            &json!({}),
        )
        .await?;
    if out == Format::Json {
        output::json(&answer.body);
    } else {
        println!("node {node} revoked: its certificates are refused and its connection is cut");
    }
    Ok(())
}

pub async fn readmit(client: &Client, node: &str) -> Result<()> {
    client
        .post_json(
            &format!("/api/v1/nodes/{}/readmit", segment(node)),
            &json!({}),
        )
        .await
        .map_err(Failure::from)?;
    println!("node {node} may enroll again (with a new enrollment token)");
    Ok(())
}

pub async fn replace(client: &Client, out: Format, node: &str) -> Result<()> {
    let answer = client
        .post_json(
            &format!("/api/v1/nodes/{}/replace", segment(node)),
            &json!({}),
        )
        .await?;
    if out == Format::Json {
        output::json(&answer.body);
    } else {
        println!(
            "node {node} replaced: its old certificates are refused; the new machine may now \
             enroll as {node} (with an enrollment token)"
        );
    }
    Ok(())
}
