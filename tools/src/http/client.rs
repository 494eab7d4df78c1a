//! The requests of each phase, for each system.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::args::{Phase, System};

/// One keep-alive connection to one node.
pub struct Client {
    http: reqwest::Client,
    base: String,
    system: System,
    token: Option<String>,
}

/// What a request came back as.
pub enum Outcome {
    Ok,
    /// An answer other than the expected one (status and the start of the body).
    Failed(String),
}

fn b64(s: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Client {
    pub fn new(base: &str, system: System, token: Option<String>) -> Result<Client> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            system,
            token,
        })
    }

    fn authed(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn finish(
        r: reqwest::Result<reqwest::Response>,
        want: u16,
    ) -> Result<(Outcome, Vec<u8>)> {
        let r = match r {
            Ok(r) => r,
            Err(e) => return Ok((Outcome::Failed(e.to_string()), Vec::new())),
        };
        let status = r.status().as_u16();
        let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        if status == want {
            Ok((Outcome::Ok, body))
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Ok((Outcome::Failed(format!("{status} {text}")), body))
        }
    }

    pub async fn put(&self, key: &str, value: &[u8]) -> Result<Outcome> {
        let r = match self.system {
            System::Strata => {
                let req = self
                    .http
                    .put(format!("{}/kv/{key}", self.base))
                    .body(value.to_vec());
                self.authed(req).send().await
            }
            System::Etcd => {
                let body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
                self.http
                    .post(format!("{}/v3/kv/put", self.base))
                    .json(&body)
                    .send()
                    .await
            }
        };
        Ok(Self::finish(r, 200).await?.0)
    }

    pub async fn get(&self, key: &str) -> Result<Outcome> {
        let r = match self.system {
            System::Strata => {
                self.http
                    .get(format!("{}/kv/{key}?consistency=linearizable", self.base))
                    .send()
                    .await
            }
            // Range requests are linearizable unless `serializable` is set.
            System::Etcd => {
                self.http
                    .post(format!("{}/v3/kv/range", self.base))
                    .json(&json!({ "key": b64(key.as_bytes()) }))
                    .send()
                    .await
            }
        };
        let (o, body) = Self::finish(r, 200).await?;
        if let (Outcome::Ok, System::Etcd) = (&o, self.system) {
            // A missing key is 200 with no kvs: count it as a failure, like Strata's 404.
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if v.get("kvs").is_none() {
                return Ok(Outcome::Failed(format!("{key} not found")));
            }
        }
        Ok(o)
    }

    /// Creates a link; returns its code.
    pub async fn create(&self, url: &str) -> Result<(Outcome, Option<String>)> {
        let req = self
            .http
            .post(format!("{}/api/links", self.base))
            .json(&json!({ "url": url }));
        let (o, body) = Self::finish(self.authed(req).send().await, 201).await?;
        let code = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_string));
        Ok((o, code))
    }

    pub async fn redirect(&self, code: &str) -> Result<Outcome> {
        let r = self.http.get(format!("{}/{code}", self.base)).send().await;
        let (o, _) = Self::finish(r, 302).await?;
        Ok(o)
    }
}

/// Phases a system supports.
pub fn check(system: System, phase: Phase) -> Result<()> {
    if system == System::Etcd && matches!(phase, Phase::Create | Phase::Redirect) {
        bail!("etcd has no {phase:?} phase");
    }
    Ok(())
}
