//! Helpers of the node's suites: start the built `strata` binary on loopback, and a minimal
//! HTTP/1.1 client (no client library needed for a few requests).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// A `strata serve` process on loopback.
pub use testkit::process::NodeProcess as Node;

/// Starts `strata serve` (on a free loopback port unless `extra` names one) and waits for its
/// "listening" line.
pub fn start(dir: &Path, extra: &[&str]) -> Node {
    try_start(dir, extra).unwrap_or_else(|e| panic!("{e}"))
}

/// [`start`], or why the process did not come up (e.g. its address is still taken); the process
/// is then killed.
pub fn try_start(dir: &Path, extra: &[&str]) -> Result<Node, String> {
    let listen: &[&str] = if extra.contains(&"--listen") {
        &[]
    } else {
        &["--listen", "127.0.0.1:0"]
    };
    let mut args: Vec<&OsStr> = ["serve", "--memtable-mb", "1", "--data-dir"]
        .iter()
        .map(OsStr::new)
        .collect();
    args.push(dir.as_os_str());
    args.extend(listen.iter().chain(extra).map(OsStr::new));
    testkit::process::start_node(Path::new(env!("CARGO_BIN_EXE_strata")), args)
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn version(&self) -> u64 {
        self.header("x-strata-version")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no version header: {} {:?}", self.status, self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`, so the body ends at EOF).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|| panic!("{method} {path} on {addr}: no answer"))
}

/// [`request`], or `None` when the node cannot be reached or sends no complete answer.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Resp> {
    try_request_within(addr, method, path, headers, body, Duration::from_secs(30))
}

/// [`try_request`] giving up (`None`) when connecting, or any read or write, takes longer than
/// `timeout`.
pub fn try_request_within(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Option<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    // A server refusing a large body may close before reading it all.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())?;
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Some(Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// Puts `count` keys `item-{i}` holding `value` and returns each one's version.
pub fn put_items(addr: SocketAddr, count: usize, value: &[u8]) -> Vec<(usize, u64)> {
    (0..count)
        .map(|i| {
            let r = request(addr, "PUT", &format!("/kv/item-{i}"), &[], value);
            assert_eq!(r.status, 200, "{}", r.text());
            (i, r.version())
        })
        .collect()
}

// Groups of `--join` nodes on loopback.

/// The group secret of the nodes [`start_member`] starts.
pub const SECRET: &str = "test-cluster-secret";
/// Their API token.
pub const TOKEN: &str = "test-token";

/// The headers of an authorized JSON request to a [`start_member`] node.
pub fn auth() -> [(&'static str, &'static str); 2] {
    [
        ("Authorization", "Bearer test-token"),
        ("Content-Type", "application/json"),
    ]
}

/// Starts member `id` of a group on `listen` (`127.0.0.1:0`: a free port), its tables in the
/// shared `objects` directory and its log purged down to 100 entries after snapshots.
pub fn start_member(id: u64, dir: &Path, objects: &Path, listen: &str) -> Node {
    try_start_member(id, dir, objects, listen).unwrap_or_else(|e| panic!("{e}"))
}

/// [`start_member`], or why it did not come up.
pub fn try_start_member(id: u64, dir: &Path, objects: &Path, listen: &str) -> Result<Node, String> {
    try_start(
        dir,
        &[
            "--join",
            "--node-id",
            &id.to_string(),
            "--listen",
            listen,
            "--cluster-secret",
            SECRET,
            "--token",
            TOKEN,
            "--object-dir",
            objects.to_str().unwrap(),
            "--raft-keep-entries",
            "100",
        ],
    )
}

/// Starts member `id` again on `addr` (its old address), retrying while the address is not
/// free yet.
pub fn restart_member(id: u64, dir: &Path, objects: &Path, addr: SocketAddr) -> Node {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_start_member(id, dir, objects, &addr.to_string()) {
            Ok(n) => return n,
            Err(e) => assert!(
                Instant::now() < deadline,
                "node {id} does not restart on {addr}: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Forms a group of the members at `addrs` (node ids 1, 2, ... in that order) through the first
/// one's admin API.
pub fn init_group(addrs: &[SocketAddr]) {
    let members: serde_json::Map<String, serde_json::Value> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| ((i + 1).to_string(), a.to_string().into()))
        .collect();
    let body = serde_json::json!({ "members": members }).to_string();
    let r = request(addrs[0], "POST", "/admin/init", &auth(), body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
}

/// `GET /admin/status` of a member, or `None` when it does not answer 200.
pub fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    let r = try_request(addr, "GET", "/admin/status", &auth(), b"")?;
    (r.status == 200).then(|| r.json())
}

/// Waits until every node in `addrs` names the same leader, other than `gone`, and returns it.
pub fn wait_for_leader(addrs: &[SocketAddr], gone: Option<u64>) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders: Vec<Option<u64>> = addrs
            .iter()
            .map(|a| status(*a).and_then(|s| s["leader"].as_u64()))
            .collect();
        if let Some(Some(l)) = leaders.first() {
            if Some(*l) != gone && leaders.iter().all(|x| *x == Some(*l)) {
                return *l;
            }
        }
        assert!(Instant::now() < deadline, "no common leader: {leaders:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `sig` (`-STOP`, `-CONT`, ...) to the node's process.
pub fn signal(node: &Node, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &node.child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} failed");
}
