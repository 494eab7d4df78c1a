//! What a client may make the node hold: slow headers, unauthenticated bodies, invented methods,
//! large scan pages, requests still open at shutdown, and settings that protect nothing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{request, start};

/// Reads whatever answer arrives within `within`: the bytes, and whether the server closed.
fn read_for(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let until = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

#[test]
fn slowloris_is_cut_off_by_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), &["--header-timeout-ms", "600"]);
    let mut s = TcpStream::connect(node.addr).expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .expect("start");
    let began = Instant::now();
    // One header byte every 100 ms: the connection stays busy, the headers never end.
    let mut closed = false;
    while began.elapsed() < Duration::from_secs(5) {
        if s.write_all(b"X").is_err() {
            closed = true;
            break;
        }
        let (_, eof) = read_for(&mut s, Duration::from_millis(100));
        if eof {
            closed = true;
            break;
        }
    }
    assert!(closed, "a client trickling headers kept its connection 5 s");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    // The node still serves others.
    assert_eq!(request(node.addr, "GET", "/health", &[], b"").status, 200);
}

#[test]
fn idle_connections_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(
        dir.path(),
        &["--idle-timeout-ms", "500", "--header-timeout-ms", "60000"],
    );
    let mut s = TcpStream::connect(node.addr).expect("connect");
    let began = Instant::now();
    let (_, eof) = read_for(&mut s, Duration::from_secs(4));
    assert!(eof, "an idle connection was kept 4 s");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
}

/// Sends headers announcing `length` body bytes and none of them; the answer must come anyway.
fn refused_before_the_body(addr: SocketAddr, head: &str, length: usize) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(format!("{head}Host: x\r\nContent-Length: {length}\r\n\r\n").as_bytes())
        .expect("headers");
    // 60 KiB of the body at most: less than 64 KiB reach the server before it answers.
    let _ = s.write_all(&vec![0u8; 60 << 10]);
    let (got, _) = read_for(&mut s, Duration::from_secs(3));
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        !text.is_empty(),
        "no answer within 3 s: the server waits for the body of {head:?}"
    );
    // And the connection does not stay open for the rest of the body.
    let (_, eof) = read_for(&mut s, Duration::from_secs(3));
    assert!(eof, "the connection stayed open after the refusal");
    text
}

#[test]
fn unauthenticated_bodies_are_never_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(
        dir.path(),
        &["--token", "t0ken", "--cluster-secret", "s3cret"],
    );
    let text = refused_before_the_body(
        node.addr,
        "POST /raft/append HTTP/1.1\r\nx-strata-cluster-secret: wrong\r\n",
        64 << 20,
    );
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("\"unauthorized\""), "{text}");
    let text = refused_before_the_body(node.addr, "PUT /kv/big HTTP/1.1\r\n", 8 << 20);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    let text = refused_before_the_body(node.addr, "POST /api/links/batch HTTP/1.1\r\n", 4 << 20);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    // With the token, the same write goes through.
    let r = request(
        node.addr,
        "PUT",
        "/kv/big",
        &[("Authorization", "Bearer t0ken")],
        b"v",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn errors_are_json_and_bodies_have_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), &["--max-body-bytes", "1024"]);
    let r = request(node.addr, "PUT", "/kv/k", &[], &[b'x'; 4096]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"], "payload_too_large");
    let r = request(node.addr, "GET", "/kv/%FF%FE", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "bad_request");
    let r = request(node.addr, "PATCH", "/kv/k", &[], b"");
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.json()["error"], "method_not_allowed");
    let r = request(node.addr, "GET", "/no/such/route", &[], b"");
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"], "not_found");
    // A single link's body is bounded far below the KV limit.
    let r = request(
        node.addr,
        "POST",
        "/api/links",
        &[("Content-Type", "application/json")],
        &[b' '; 20 << 10],
    );
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn invented_methods_add_no_metric_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), &[]);
    let mut s = TcpStream::connect(node.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // Pipelined on one connection, read back in bulk: 10,000 requests in about a second.
    let mut buf = vec![0u8; 1 << 16];
    for chunk in 0..100 {
        let mut batch = String::new();
        for i in 0..100 {
            batch.push_str(&format!(
                "FOO{} /kv/x HTTP/1.1\r\nHost: x\r\n\r\n",
                chunk * 100 + i
            ));
        }
        s.write_all(batch.as_bytes()).expect("send");
        let mut answers = 0;
        let mut seen = Vec::new();
        while answers < 100 {
            let n = s.read(&mut buf).expect("answers");
            assert!(n > 0, "closed after {answers} answers of chunk {chunk}");
            seen.extend_from_slice(&buf[..n]);
            answers = seen.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
        }
    }
    let m = request(node.addr, "GET", "/metrics", &[], b"").text();
    let series = m
        .lines()
        .filter(|l| l.starts_with("strata_http_requests_total{"))
        .count();
    assert!(series < 20, "{series} request series:\n{m}");
    assert!(m.contains("method=\"other\""), "{m}");
}

#[test]
fn scan_pages_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), &["--scan-page-bytes", "1048576"]);
    let value = vec![b'v'; 256 << 10];
    for i in 0..12 {
        let r = request(node.addr, "PUT", &format!("/kv/big-{i:02}"), &[], &value);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for reverse in [false, true] {
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/kv?prefix=big-&limit=1000&reverse={reverse}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let r = request(node.addr, "GET", &path, &[], b"");
            assert_eq!(r.status, 200, "{}", r.text());
            assert!(
                r.body.len() < (1 << 20) + 4096,
                "a page of {} bytes",
                r.body.len()
            );
            let page = r.json();
            let items = page["items"].as_array().expect("items");
            assert!(
                !items.is_empty() && items.len() <= 4,
                "{} items",
                items.len()
            );
            keys.extend(
                items
                    .iter()
                    .map(|i| i["key"].as_str().expect("key").to_string()),
            );
            pages += 1;
            match page["cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut want: Vec<String> = (0..12).map(|i| format!("big-{i:02}")).collect();
        if reverse {
            want.reverse();
        }
        assert_eq!(keys, want, "reverse={reverse}");
        assert!(pages >= 3, "{pages} pages");
    }
}

#[test]
fn shutdown_closes_what_is_left_at_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = start(dir.path(), &["--shutdown-timeout-ms", "500"]);
    // A request in flight that never completes: its body never comes.
    let mut s = TcpStream::connect(node.addr).expect("connect");
    s.write_all(b"PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .expect("send");
    std::thread::sleep(Duration::from_millis(200));
    let began = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &node.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    loop {
        if let Some(st) = node.child.try_wait().expect("wait") {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(8),
            "the node still waits for a slow request 8 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `strata serve` with `extra`: it must refuse to start, naming the option.
fn refuses_to_start(extra: &[&str], naming: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let began = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if began.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("strata serve {extra:?} started");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(!status.success(), "{extra:?}: {err}");
    assert!(err.contains(naming), "{extra:?}: {err}");
}

#[test]
fn empty_secrets_refuse_to_start() {
    refuses_to_start(&["--token", ""], "--token");
    refuses_to_start(&["--cluster-secret", " "], "--cluster-secret");
}

#[test]
fn requests_in_flight_are_bounded_but_probes_always_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = start(dir.path(), &["--max-in-flight", "1"]);
    // A write whose body never finishes holds the one slot.
    let mut s = TcpStream::connect(node.addr).expect("connect");
    s.write_all(b"PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let r = request(node.addr, "GET", "/kv/other", &[], b"");
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(request(node.addr, "GET", "/health", &[], b"").status, 200);
    // The slot comes back when the request ends.
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    let r = request(node.addr, "GET", "/kv/other", &[], b"");
    assert_eq!(r.status, 404, "{}", r.text());
}
