//! Raft between nodes over HTTP: the client side of the RPCs (openraft's network factory) and of
//! the forwarding calls a follower makes to its leader (a write to propose, a read index).
//!
//! Wire format, version 1: `POST /raft/{append,vote,snapshot,propose,read-index}`, the request
//! body one postcard value (openraft's request, or a [`Command`]), the reply body one postcard
//! value `Result<Response, RaftError>` as openraft returns it; `POST /raft/confirm` (for all
//! ranges, see `cluster::confirm`), a `Vec<(range, Vote)>` answered by a `Vec<bool>` (a node
//! without the route answers 404, which the asker takes as no). Every call carries the cluster
//! secret in [`SECRET_HEADER`]; a node without a secret refuses all of them.

// openraft's RPC errors are large and its trait returns them; the helpers do the same.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header::{HeaderValue, CONTENT_TYPE, HOST};
use axum::http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use raftlog::store::{Command, Reply, TypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster::lease::Leases;

/// Header carrying the cluster secret on node-to-node calls.
pub const SECRET_HEADER: &str = "x-strata-cluster-secret";
/// Version of the RPC wire format, sent in [`VERSION_HEADER`]; a node refuses another version.
pub const WIRE_VERSION: &str = "1";
/// Header carrying [`WIRE_VERSION`].
pub const VERSION_HEADER: &str = "x-strata-raft-wire";
/// Header naming the node id a call is meant for: a node refuses calls for another id, so a
/// misconfigured address (or two nodes started with one id) fails loudly instead of feeding one
/// node's messages to another.
pub const TARGET_HEADER: &str = "x-strata-target-node";
/// The range (Raft group) a call is for; absent, the first range (as a node before ranges
/// sent it).
pub const RANGE_HEADER: &str = "x-strata-range";
/// The range epoch a forwarded write was routed with: the leader answers `WrongRange` when
/// its range has another epoch.
pub const EPOCH_HEADER: &str = "x-strata-range-epoch";
/// Largest RPC body a node accepts. A larger append is split by openraft (see
/// [`PayloadTooLarge`]); one larger entry cannot exist (client bodies are far smaller).
pub const MAX_RPC_BODY: usize = 64 << 20;

/// HTTP client for node-to-node calls, shared by every connection of a node.
#[derive(Clone)]
pub struct Peers {
    pool: Arc<Pool>,
    secret: HeaderValue,
}

/// Connects to `addr`, from `source` when given.
async fn connect(
    addr: &str,
    source: Option<std::net::IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(ip) = source else {
        return tokio::net::TcpStream::connect(addr).await;
    };
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        let socket = match target {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(std::net::SocketAddr::new(ip, 0))?;
        match socket.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{addr} resolves to nothing"),
        )
    }))
}

/// Idle keep-alive connections per peer address. Raft's calls are small and frequent (each
/// round of heartbeats confirming linearizable reads is one per follower): hyper's connection
/// API costs a fraction of a pooled general-purpose client's per call, and those calls share
/// the cores with the requests they serve.
struct Pool {
    /// Per address, newest last.
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    /// Local address of new connections.
    source: Option<std::net::IpAddr>,
}

/// A connection and when it went idle.
type Idle = (SendRequest<Full<Bytes>>, Instant);

/// Idle connections kept per peer (more are opened while more calls are in flight). Calls in
/// flight to one peer grow with the ranges it shares with this node (each range confirms its
/// own reads and sends its own heartbeats): with 64 ranges, a bound of 16 closed most returned
/// connections, and the connects and closes that followed took a tenth of the nodes' CPU.
/// An idle connection costs a descriptor and a few KiB, and goes after [`MAX_IDLE`].
const MAX_IDLE_PER_PEER: usize = 512;
/// A connection idle this long is closed rather than reused: a peer restarted or a middlebox
/// that dropped it silently would otherwise cost a call its whole timeout. Well below the
/// peer's own cut of idle connections (`--header-timeout-ms`, 10 s by default): a call sent
/// just as the peer closes the connection would be lost.
const MAX_IDLE: Duration = Duration::from_secs(4);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Pool {
    fn take(&self, addr: &str) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let conns = idle.get_mut(addr)?;
        conns.retain(|(c, since)| !c.is_closed() && since.elapsed() < MAX_IDLE);
        conns.pop().map(|(c, _)| c)
    }

    fn put(&self, addr: &str, conn: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let conns = idle.entry(addr.to_string()).or_default();
        if conns.len() < MAX_IDLE_PER_PEER {
            conns.push((conn, Instant::now()));
        }
    }

    /// A connection ready to send on: an idle one, or a new one.
    async fn ready(&self, addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
        while let Some(mut c) = self.take(addr) {
            // A connection the peer closed while idle fails here, before anything was sent.
            if c.ready().await.is_ok() {
                return Ok(c);
            }
        }
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect(addr, self.source))
            .await
            .map_err(|_| format!("connecting to {addr}: no answer within {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            // Ends when the peer or this side closes the connection; nothing to report.
            let _ = conn.await;
        });
        Ok(send)
    }
}

/// Why a forwarded call failed.
#[derive(Debug)]
pub enum CallError {
    /// The peer could not be reached or did not answer in time: the call may or may not have
    /// taken effect.
    Unreachable(String),
    /// The peer answered with an error status (e.g. it refused the secret).
    Refused(u16, String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "unreachable: {m}"),
            CallError::Refused(s, m) => write!(f, "refused with status {s}: {m}"),
        }
    }
}

impl Peers {
    /// A client authenticating with `secret`, connecting from `source` when given.
    pub fn new(secret: &str, source: Option<std::net::IpAddr>) -> anyhow::Result<Peers> {
        let secret = HeaderValue::from_str(secret)
            .map_err(|_| anyhow::anyhow!("the cluster secret must be printable ASCII"))?;
        Ok(Peers {
            pool: Arc::new(Pool {
                idle: Mutex::default(),
                source,
            }),
            secret,
        })
    }

    /// Posts `req` to `http://{addr}/raft/{path}` and decodes the reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: To<'_>,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let body = postcard::to_stdvec(req).map_err(|e| CallError::Unreachable(e.to_string()))?;
        self.post(to, path, body, timeout).await
    }

    async fn post<Resp: DeserializeOwned>(
        &self,
        to: To<'_>,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let addr = to.addr;
        let url = || format!("http://{addr}/raft/{path}");
        let mut req = Request::post(format!("/raft/{path}"))
            .header(HOST, addr)
            .header(SECRET_HEADER, self.secret.clone())
            .header(VERSION_HEADER, WIRE_VERSION)
            .header(TARGET_HEADER, to.node)
            .header(RANGE_HEADER, to.range)
            .header(CONTENT_TYPE, "application/octet-stream");
        if let Some(epoch) = to.epoch {
            req = req.header(EPOCH_HEADER, epoch);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Unreachable(format!("{}: {e}", url())))?;
        let exchange = async {
            let mut conn = self.pool.ready(addr).await?;
            let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            // Only a connection that carried a whole exchange goes back to the pool.
            self.pool.put(addr, conn);
            Ok::<_, String>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                CallError::Unreachable(format!("{}: no answer within {timeout:?}", url()))
            })?
            .map_err(|e| CallError::Unreachable(format!("{}: {e}", url())))?;
        if !status.is_success() {
            let msg = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(CallError::Refused(status.as_u16(), msg));
        }
        crate::transport::wire::decode(&bytes)
            .map_err(|e| CallError::Unreachable(format!("{}: undecodable reply: {e}", url())))
    }

    /// Proposes `cmd` through the leader (`target` at `addr`).
    pub async fn propose(
        &self,
        to: To<'_>,
        cmd: &Command,
        timeout: Duration,
    ) -> Result<Result<Reply, String>, CallError> {
        self.call(to, "propose", cmd, timeout).await
    }
}

impl Peers {
    /// The id of the node at `addr` (it checks the secret, not the target).
    pub async fn node_id(&self, addr: &str, timeout: Duration) -> Result<u64, CallError> {
        let to = To {
            node: 0,
            addr,
            range: 0,
            epoch: None,
        };
        self.call(to, "node-id", &(), timeout).await
    }
}

/// Where a call goes: a node, at an address, for one of its ranges.
#[derive(Debug, Clone, Copy)]
pub struct To<'a> {
    pub node: u64,
    pub addr: &'a str,
    pub range: u64,
    /// The range's epoch as the caller routed by, if the call depends on it.
    pub epoch: Option<u64>,
}

/// openraft's network factory of one range: one [`Conn`] per target node.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
    leases: Arc<Leases>,
    range: u64,
}

impl Network {
    /// Calls of range `range` go through `peers`; acknowledged AppendEntries are recorded in
    /// `leases`.
    pub fn new(peers: Peers, leases: Arc<Leases>, range: u64) -> Network {
        Network {
            peers,
            leases,
            range,
        }
    }
}

/// A connection to one node, at the address its membership entry names.
pub struct Conn {
    peers: Peers,
    leases: Arc<Leases>,
    target: u64,
    addr: String,
    range: u64,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Conn {
        Conn {
            peers: self.peers.clone(),
            leases: self.leases.clone(),
            target,
            addr: node.addr.clone(),
            range: self.range,
        }
    }
}

impl Conn {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = encode(req)?;
        self.send(path, body, option).await
    }

    async fn send<Resp, E>(
        &self,
        path: &str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let r: Result<Resp, RaftError<u64, E>> = self
            .peers
            .post(
                To {
                    node: self.target,
                    addr: &self.addr,
                    range: self.range,
                    epoch: None,
                },
                path,
                body,
                option.hard_ttl(),
            )
            .await
            .map_err(|e| match e {
                CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(
                    &AnyError::error(format!("node {}: {m}", self.target)),
                )),
                CallError::Refused(s, m) => RPCError::Network(NetworkError::new(&AnyError::error(
                    format!("node {} refused ({s}): {m}", self.target),
                ))),
            })?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        // Taken before anything else: the lease counts from the send time, and earlier is safe.
        let sent = Instant::now();
        let vote = rpc.vote;
        self.leases
            .sending_commit(rpc.leader_commit.map_or(0, |l| l.index));
        let n = rpc.entries.len() as u64;
        let body = encode(&rpc)?;
        if body.len() > MAX_RPC_BODY && n > 1 {
            // openraft retries with at most this many entries.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(n / 2),
            ));
        }
        let r = self.send("append", body, &option).await;
        // Each of these means the follower accepted `vote` as its leader's (a conflict is a
        // log mismatch found after that), and so refuses other candidates for a while.
        if let Ok(
            AppendEntriesResponse::Success
            | AppendEntriesResponse::PartialSuccess(_)
            | AppendEntriesResponse::Conflict,
        ) = &r
        {
            self.leases.acked(self.target, &vote, sent);
        }
        r
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.rpc("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.rpc("vote", &rpc, &option).await
    }
}

fn encode<Req: Serialize, E: std::error::Error>(
    req: &Req,
) -> Result<Vec<u8>, RPCError<u64, BasicNode, RaftError<u64, E>>> {
    postcard::to_stdvec(req).map_err(|e| RPCError::Network(NetworkError::new(&AnyError::new(&e))))
}
