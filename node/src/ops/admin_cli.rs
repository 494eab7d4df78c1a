//! `strata admin ...`: a client of a node's admin API. Membership changes sent to a follower
//! come back as 421 naming the leader; the command repeats them there once. With
//! `--all-ranges`, a membership change is made range by range over the user ranges the node
//! lists, each at its own leader.

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
        AdminAction::AddLearner {
            id,
            addr,
            range,
            all_ranges,
        } => {
            let body = json!({ "id": id, "addr": addr, "range": range });
            if *all_ranges {
                return every_range(&http, &args, "/admin/learners", body).await;
            }
            (reqwest::Method::POST, "/admin/learners", Some(body))
        }
        AdminAction::ChangeMembership {
            voters,
            remove,
            range,
            all_ranges,
        } => {
            let body = json!({ "voters": voters, "remove": remove, "range": range });
            if *all_ranges {
                return every_range(&http, &args, "/admin/membership", body).await;
            }
            (reqwest::Method::POST, "/admin/membership", Some(body))
        }
        AdminAction::Split { key } => (
            reqwest::Method::POST,
            "/admin/split",
            Some(json!({ "key": key })),
        ),
        AdminAction::Ranges => (reqwest::Method::GET, "/admin/ranges", None),
        AdminAction::Nodes => (reqwest::Method::GET, "/admin/nodes", None),
    };
    let (status, v) = to_leader(&http, &args, method, path, body.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    if !status.is_success() {
        bail!("the node answered {status}");
    }
    Ok(())
}

/// Sends the call to the node asked, then once more to the leader it names if it is not the
/// leader.
async fn to_leader(
    http: &reqwest::Client,
    args: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(reqwest::StatusCode, Value)> {
    let (status, v) = send(http, args, &args.node, method.clone(), path, body).await?;
    if status == reqwest::StatusCode::MISDIRECTED_REQUEST {
        if let Some(leader) = v.get("leader_addr").and_then(Value::as_str) {
            let base = format!("http://{leader}");
            return send(http, args, &base, method, path, body).await;
        }
    }
    Ok((status, v))
}

/// Makes the membership call `path` with `body` for every user range the node lists, in
/// order, stopping at the first refusal. Prints each range's answer.
async fn every_range(
    http: &reqwest::Client,
    args: &AdminArgs,
    path: &str,
    mut body: Value,
) -> Result<()> {
    let (status, listed) = send(
        http,
        args,
        &args.node,
        reqwest::Method::GET,
        "/admin/ranges",
        None,
    )
    .await?;
    if !status.is_success() {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        bail!("listing the ranges: the node answered {status}");
    }
    let ids: Vec<u64> = listed["ranges"]
        .as_array()
        .map(|l| l.iter().filter_map(|r| r["id"].as_u64()).collect())
        .unwrap_or_default();
    if ids.is_empty() {
        bail!("the node lists no range");
    }
    let mut answers = Vec::new();
    let mut failed = None;
    for id in ids {
        body["range"] = id.into();
        let (status, v) = to_leader(http, args, reqwest::Method::POST, path, Some(&body)).await?;
        answers.push(json!({ "range": id, "status": status.as_u16(), "answer": v }));
        if !status.is_success() {
            failed = Some((id, status));
            break;
        }
    }
    println!("{}", serde_json::to_string_pretty(&answers)?);
    if let Some((id, status)) = failed {
        bail!("range {id}: the node answered {status} (the ranges before it are changed)");
    }
    Ok(())
}
