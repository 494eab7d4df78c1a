//! `strata admin ...`: a client of a node's admin API. Membership changes sent to a follower
//! come back as 421 naming the leader; the command repeats them there once.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::ops::config::{AdminAction, AdminArgs};

async fn send(
    http: &reqwest::Client,
    args: &AdminArgs,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(reqwest::StatusCode, Value)> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut req = http.request(method, &url);
    if let Some(t) = &args.token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await.with_context(|| format!("calling {url}"))?;
    let status = r.status();
    let text = r.text().await.with_context(|| format!("reading {url}"))?;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, v))
}

/// Runs one admin command and prints the node's JSON answer.
pub async fn run(args: AdminArgs) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(150))
        .build()?;
    let (method, path, body) = match &args.action {
        AdminAction::Status => (reqwest::Method::GET, "/admin/status", None),
        AdminAction::Init { members } => {
            let m: serde_json::Map<String, Value> = members
                .iter()
                .map(|(id, addr)| (id.to_string(), Value::String(addr.clone())))
                .collect();
            (
                reqwest::Method::POST,
                "/admin/init",
                Some(json!({ "members": m })),
            )
        }
        AdminAction::AddLearner { id, addr, range } => (
            reqwest::Method::POST,
            "/admin/learners",
            Some(json!({ "id": id, "addr": addr, "range": range })),
        ),
        AdminAction::ChangeMembership {
            voters,
            remove,
            range,
        } => (
            reqwest::Method::POST,
            "/admin/membership",
            Some(json!({ "voters": voters, "remove": remove, "range": range })),
        ),
        AdminAction::Split { key } => (
            reqwest::Method::POST,
            "/admin/split",
            Some(json!({ "key": key })),
        ),
        AdminAction::Ranges => (reqwest::Method::GET, "/admin/ranges", None),
        AdminAction::Nodes => (reqwest::Method::GET, "/admin/nodes", None),
    };
    let (mut status, mut v) = send(
        &http,
        &args,
        &args.node,
        method.clone(),
        path,
        body.as_ref(),
    )
    .await?;
    if status == reqwest::StatusCode::MISDIRECTED_REQUEST {
        if let Some(leader) = v.get("leader_addr").and_then(Value::as_str) {
            let base = format!("http://{leader}");
            (status, v) = send(&http, &args, &base, method, path, body.as_ref()).await?;
        }
    }
    println!("{}", serde_json::to_string_pretty(&v)?);
    if !status.is_success() {
        bail!("the node answered {status}");
    }
    Ok(())
}
