//! The requests of each phase, for each system, over one keep-alive HTTP/1.1 connection.
//!
//! hyper's connection API directly, not a pooled client: the load generator shares the cores
//! with the servers it measures, so every microsecond it spends per request is taken from them
//! (reqwest's pool, URL parsing and redirect machinery cost about as much CPU per request as a
//! Strata node's whole redirect handler).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::args::{Phase, System};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One keep-alive connection to one node (made again after the server closes it).
pub struct Client {
    /// `host:port`.
    addr: String,
    host: HeaderValue,
    system: System,
    auth: Option<HeaderValue>,
    conn: Option<SendRequest<Full<Bytes>>>,
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
    /// A client of the node at `base` (`http://host:port`); connects on the first request.
    pub fn new(base: &str, system: System, token: Option<String>) -> Result<Client> {
        let addr = base
            .trim_end_matches('/')
            .strip_prefix("http://")
            .with_context(|| format!("{base}: only http:// targets are supported"))?
            .to_string();
        if addr.is_empty() || addr.contains('/') {
            bail!("{base}: give a base URL, http://host:port");
        }
        let host = HeaderValue::from_str(&addr).with_context(|| format!("{base}: bad host"))?;
        let auth = token
            .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
            .transpose()
            .context("the token is not a valid header value")?;
        Ok(Client {
            addr,
            host,
            system,
            auth,
            conn: None,
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", self.addr))?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// Sends one request; the status and body, or why there is none.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
        authed: bool,
    ) -> Result<(u16, Bytes), String> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let (true, Some(a)) = (authed, &self.auth) {
            req = req.header(AUTHORIZATION, a.clone());
        }
        let body = match body {
            Some((b, content_type)) => {
                req = req.header(CONTENT_TYPE, content_type);
                b
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
        let reuse = self.conn.take().filter(|c| !c.is_closed());
        let exchange = async {
            let mut conn = match reuse {
                Some(c) => c,
                None => self.connect().await?,
            };
            conn.ready().await.map_err(|e| e.to_string())?;
            let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body, conn))
        };
        let (status, body, conn) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))??;
        self.conn = Some(conn);
        Ok((status, body))
    }

    async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: Option<(Bytes, &'static str)>,
        authed: bool,
        want: u16,
    ) -> (Outcome, Bytes) {
        match self.send(method, path, body, authed).await {
            Err(e) => (Outcome::Failed(e), Bytes::new()),
            Ok((status, body)) if status == want => (Outcome::Ok, body),
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                (Outcome::Failed(format!("{status} {text}")), body)
            }
        }
    }

    pub async fn put(&mut self, key: &str, value: &[u8]) -> Result<Outcome> {
        let (o, _) = match self.system {
            System::Strata => {
                let body = Bytes::copy_from_slice(value);
                let path = format!("/kv/{key}");
                self.expect(
                    Method::PUT,
                    &path,
                    Some((body, "application/octet-stream")),
                    true,
                    200,
                )
                .await
            }
            System::Etcd => {
                let body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
                let body = Bytes::from(serde_json::to_vec(&body)?);
                self.expect(
                    Method::POST,
                    "/v3/kv/put",
                    Some((body, "application/json")),
                    false,
                    200,
                )
                .await
            }
        };
        Ok(o)
    }

    pub async fn get(&mut self, key: &str) -> Result<Outcome> {
        let (o, body) = match self.system {
            System::Strata => {
                let path = format!("/kv/{key}?consistency=linearizable");
                self.expect(Method::GET, &path, None, false, 200).await
            }
            // Range requests are linearizable unless `serializable` is set.
            System::Etcd => {
                let body = json!({ "key": b64(key.as_bytes()) });
                let body = Bytes::from(serde_json::to_vec(&body)?);
                self.expect(
                    Method::POST,
                    "/v3/kv/range",
                    Some((body, "application/json")),
                    false,
                    200,
                )
                .await
            }
        };
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
    pub async fn create(&mut self, url: &str) -> Result<(Outcome, Option<String>)> {
        let body = Bytes::from(serde_json::to_vec(&json!({ "url": url }))?);
        let (o, body) = self
            .expect(
                Method::POST,
                "/api/links",
                Some((body, "application/json")),
                true,
                201,
            )
            .await;
        let code = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_string));
        Ok((o, code))
    }

    /// A request answered without data or Raft. etcd's `/health` reads through Raft, so it
    /// gets `/version`.
    pub async fn ping(&mut self) -> Result<Outcome> {
        let path = match self.system {
            System::Strata => "/health",
            System::Etcd => "/version",
        };
        Ok(self.expect(Method::GET, path, None, false, 200).await.0)
    }

    /// Splits the range holding `key` at `key` (Strata's admin API).
    pub async fn split(&mut self, key: &str) -> Result<Outcome> {
        let body = Bytes::from(serde_json::to_vec(&json!({ "key": key }))?);
        Ok(self
            .expect(
                Method::POST,
                "/admin/split",
                Some((body, "application/json")),
                true,
                200,
            )
            .await
            .0)
    }

    pub async fn redirect(&mut self, code: &str) -> Result<Outcome> {
        let path = format!("/{code}");
        Ok(self.expect(Method::GET, &path, None, false, 302).await.0)
    }
}

/// Phases a system supports.
pub fn check(system: System, phase: Phase) -> Result<()> {
    if system == System::Etcd && matches!(phase, Phase::Create | Phase::Redirect) {
        bail!("etcd has no {phase:?} phase");
    }
    Ok(())
}
