//! Short links through the built binary: creation (generated and custom codes), the redirect,
//! metadata, deletion, expiry, concurrent creation of one code, and rejected targets and codes.

mod common;

use common::{request, start};

fn create(addr: std::net::SocketAddr, body: &str) -> common::Resp {
    request(
        addr,
        "POST",
        "/api/links",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

#[test]
fn create_follow_inspect_and_delete_links() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &[]);
    let r = create(
        n.addr,
        r#"{"url":"https://example.com/some/long/path?x=1"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    let code = j["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 7);
    assert!(code.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(j["short_url"], format!("http://{}/{code}", n.addr));
    assert_eq!(j["target"], "https://example.com/some/long/path?x=1");

    let go = request(n.addr, "GET", &format!("/{code}"), &[], b"");
    assert_eq!(go.status, 302);
    assert_eq!(
        go.header("location"),
        Some("https://example.com/some/long/path?x=1")
    );
    let info = request(n.addr, "GET", &format!("/api/links/{code}"), &[], b"");
    assert_eq!(
        (info.status, info.json()["code"].as_str()),
        (200, Some(code.as_str()))
    );

    // Custom codes: taken is 409; invalid or reserved is 400.
    assert_eq!(
        create(n.addr, r#"{"url":"http://a.org","code":"my-link"}"#).status,
        201
    );
    assert_eq!(
        create(n.addr, r#"{"url":"http://b.org","code":"my-link"}"#).status,
        409
    );
    let kept = request(n.addr, "GET", "/my-link", &[], b"");
    assert_eq!(kept.header("location"), Some("http://a.org/"));
    for body in [
        r#"{"url":"http://a.org","code":"api"}"#,
        r#"{"url":"http://a.org","code":"no spaces"}"#,
        r#"{"url":"http://a.org","code":"x"}"#,
        r#"{"url":"javascript:alert(1)"}"#,
        r#"{"url":"file:///etc/passwd"}"#,
        r#"{"url":"not a url"}"#,
        r#"{"url":"http://a.org","unknown":1}"#,
        r#"{"url":"#,
        r#"[]"#,
    ] {
        let r = create(n.addr, body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.json()["message"].is_string());
    }

    // The KV API cannot write around the link checks.
    let sneaky = request(
        n.addr,
        "PUT",
        "/kv/link%2Fevil",
        &[],
        br#"{"v":1,"target":"javascript:x"}"#,
    );
    assert_eq!(sneaky.status, 400, "{}", sneaky.text());
    let sneaky = request(n.addr, "PUT", "/kv/link/evil", &[], b"x");
    assert_eq!(sneaky.status, 400, "{}", sneaky.text());

    let del = request(n.addr, "DELETE", "/api/links/my-link", &[], b"");
    assert_eq!(del.status, 204);
    assert_eq!(request(n.addr, "GET", "/my-link", &[], b"").status, 404);
    assert_eq!(request(n.addr, "GET", "/nosuch1", &[], b"").status, 404);

    // Expiry.
    let r = create(
        n.addr,
        r#"{"url":"http://a.org","code":"brief","ttl_seconds":1}"#,
    );
    assert_eq!(r.status, 201);
    assert_eq!(request(n.addr, "GET", "/brief", &[], b"").status, 302);
    std::thread::sleep(std::time::Duration::from_millis(1300));
    assert_eq!(request(n.addr, "GET", "/brief", &[], b"").status, 404);
}

#[test]
fn one_code_created_concurrently_has_one_winner() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &["--redirect-status", "308"]);
    let addr = n.addr;
    let wins: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    create(
                        addr,
                        &format!(r#"{{"url":"http://site{i}.org","code":"race"}}"#),
                    )
                    .status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(wins.iter().filter(|&&s| s == 201).count(), 1, "{wins:?}");
    assert_eq!(wins.iter().filter(|&&s| s == 409).count(), 7, "{wins:?}");
    assert_eq!(request(addr, "GET", "/race", &[], b"").status, 308);
}

fn last_log_index(addr: std::net::SocketAddr) -> u64 {
    let s = request(addr, "GET", "/admin/status", &[], b"");
    assert_eq!(s.status, 200, "{}", s.text());
    s.json()["last_log_index"].as_u64().unwrap()
}

fn visits(addr: std::net::SocketAddr, code: &str) -> u64 {
    let r = request(addr, "GET", &format!("/api/links/{code}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["visits"].as_u64().unwrap()
}

fn batch(addr: std::net::SocketAddr, body: &str) -> common::Resp {
    request(
        addr,
        "POST",
        "/api/links/batch",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

#[test]
fn batches_create_many_links_in_one_write_and_report_each_item() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &[]);
    assert_eq!(
        create(n.addr, r#"{"url":"http://a.org","code":"taken1"}"#).status,
        201
    );
    let before = last_log_index(n.addr);
    let r = batch(
        n.addr,
        r#"{"links":[
            {"url":"https://one.example/x"},
            {"url":"javascript:alert(1)"},
            {"url":"https://two.example/","code":"batch-a","max_visits":5},
            {"url":"https://three.example/","code":"taken1"},
            {"url":"https://four.example/","code":"batch-a"},
            {"url":"https://five.example/","unknown":1},
            {"url":"https://six.example/","max_visits":0},
            {"url":"https://seven.example/","ttl_seconds":60}
        ]}"#,
    );
    assert_eq!(r.status, 207, "{}", r.text());
    let j = r.json();
    let results = j["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 400, 201, 409, 409, 400, 400, 201], "{j}");
    assert_eq!(
        (j["created"].as_u64(), j["failed"].as_u64()),
        (Some(3), Some(5))
    );
    for (i, e) in [
        (1, "bad_request"),
        (3, "conflict"),
        (4, "conflict"),
        (5, "bad_request"),
    ] {
        assert_eq!(results[i]["error"], e, "{i}");
        assert!(results[i]["message"].is_string());
    }
    // One write for the whole batch (nothing collided).
    assert_eq!(last_log_index(n.addr) - before, 1);
    assert_eq!(results[2]["code"], "batch-a");
    assert_eq!(results[2]["max_visits"], 5);
    assert!(results[7]["expires_ms"].as_u64().is_some());
    for (i, target) in [
        (0, "https://one.example/x"),
        (2, "https://two.example/"),
        (7, "https://seven.example/"),
    ] {
        let code = results[i]["code"].as_str().unwrap();
        let go = request(n.addr, "GET", &format!("/{code}"), &[], b"");
        assert_eq!(
            (go.status, go.header("location")),
            (302, Some(target)),
            "{i}"
        );
    }
    // The taken code still points where it did.
    assert_eq!(
        request(n.addr, "GET", "/taken1", &[], b"").header("location"),
        Some("http://a.org/")
    );

    // All valid: 201, distinct codes, one write.
    let items: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"url":"https://e.org/{i}"}}"#))
        .collect();
    let before = last_log_index(n.addr);
    let r = batch(n.addr, &format!(r#"{{"links":[{}]}}"#, items.join(",")));
    assert_eq!(r.status, 201, "{}", r.text());
    let codes: std::collections::HashSet<String> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), 300);
    assert_eq!(last_log_index(n.addr) - before, 1);

    // Whole-request refusals.
    assert_eq!(batch(n.addr, r#"{"links":[]}"#).status, 400);
    let many: Vec<&str> = (0..1001).map(|_| r#"{"url":"https://e.org"}"#).collect();
    assert_eq!(
        batch(n.addr, &format!(r#"{{"links":[{}]}}"#, many.join(","))).status,
        400
    );
    assert_eq!(batch(n.addr, r#"{"links":{}}"#).status, 400);
    assert_eq!(batch(n.addr, r#"[]"#).status, 400);
}

#[test]
fn visits_are_counted_in_batches_and_survive_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &[]);
    let r = create(n.addr, r#"{"url":"https://example.com/","code":"counted"}"#);
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["visits"], 0);
    let before = last_log_index(n.addr);
    const N: u64 = 200;
    for _ in 0..N {
        assert_eq!(request(n.addr, "GET", "/counted", &[], b"").status, 302);
    }
    assert_eq!(visits(n.addr, "counted"), N, "pending visits count at once");
    // Within ~2 s a flush wrote them: a few log entries, not one per redirect.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let grew = last_log_index(n.addr) - before;
    assert!(
        (1..=5).contains(&grew),
        "the log grew by {grew} entries for {N} redirects"
    );
    assert_eq!(visits(n.addr, "counted"), N);
    // They are stored: a killed node still reports them.
    drop(n);
    let n = start(tmp.path(), &[]);
    assert_eq!(visits(n.addr, "counted"), N);

    // A graceful stop writes what was counted since the last flush.
    for _ in 0..7 {
        assert_eq!(request(n.addr, "GET", "/counted", &[], b"").status, 302);
    }
    let mut n = n;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &n.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(n.child.wait().unwrap().code(), Some(0));
    drop(n);
    let n = start(tmp.path(), &[]);
    assert_eq!(visits(n.addr, "counted"), N + 7);

    // Deleting the link deletes its count: the code made anew starts from zero.
    assert_eq!(
        request(n.addr, "DELETE", "/api/links/counted", &[], b"").status,
        204
    );
    assert_eq!(
        create(n.addr, r#"{"url":"https://example.org/","code":"counted"}"#).status,
        201
    );
    assert_eq!(visits(n.addr, "counted"), 0);
    assert_eq!(request(n.addr, "GET", "/counted", &[], b"").status, 302);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(visits(n.addr, "counted"), 1);
}

#[test]
fn max_visits_ends_a_link_with_410() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &[]);
    let r = create(
        n.addr,
        r#"{"url":"https://example.com/","code":"thrice","max_visits":3}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["max_visits"], 3);
    for i in 0..3 {
        assert_eq!(
            request(n.addr, "GET", "/thrice", &[], b"").status,
            302,
            "visit {i}"
        );
    }
    let gone = request(n.addr, "GET", "/thrice", &[], b"");
    assert_eq!(gone.status, 410, "{}", gone.text());
    assert_eq!(gone.json()["error"], "gone");
    // Still so once the counts are stored, and the refused visit was not counted.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(request(n.addr, "GET", "/thrice", &[], b"").status, 410);
    let info = request(n.addr, "GET", "/api/links/thrice", &[], b"").json();
    assert_eq!(
        (info["visits"].as_u64(), info["max_visits"].as_u64()),
        (Some(3), Some(3))
    );
    // Concurrent redirects do not overshoot the limit on one node.
    assert_eq!(
        create(
            n.addr,
            r#"{"url":"https://e.org/","code":"tenx","max_visits":10}"#
        )
        .status,
        201
    );
    let addr = n.addr;
    let oks: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    (0..5)
                        .filter(|_| request(addr, "GET", "/tenx", &[], b"").status == 302)
                        .count()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(oks, 10);
    assert_eq!(visits(n.addr, "tenx"), 10);
    assert_eq!(
        create(n.addr, r#"{"url":"https://e.org/","max_visits":0}"#).status,
        400
    );
}

#[test]
fn link_creation_is_rate_limited_per_client() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &["--link-rate-per-minute", "5"]);
    for i in 0..5 {
        let r = create(n.addr, &format!(r#"{{"url":"https://e.org/{i}"}}"#));
        assert_eq!(r.status, 201, "{i}: {}", r.text());
    }
    let r = create(n.addr, r#"{"url":"https://e.org/6"}"#);
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"], "rate_limited");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    let r = batch(n.addr, r#"{"links":[{"url":"https://e.org/b"}]}"#);
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r.header("retry-after").is_some());
    // Invalid requests are refused as such, and redirects are not limited.
    assert_eq!(create(n.addr, r#"{"url":"ftp://e.org"}"#).status, 400);
    assert_eq!(request(n.addr, "GET", "/nosuch1", &[], b"").status, 404);

    // A batch larger than the budget creates what the budget allows.
    let tmp2 = tempfile::tempdir().unwrap();
    let n2 = start(tmp2.path(), &["--link-rate-per-minute", "10"]);
    let items: Vec<String> = (0..15)
        .map(|i| format!(r#"{{"url":"https://e.org/{i}"}}"#))
        .collect();
    let r = batch(n2.addr, &format!(r#"{{"links":[{}]}}"#, items.join(",")));
    assert_eq!(r.status, 207, "{}", r.text());
    let statuses: Vec<u64> = r.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 429).count(),
        5,
        "{statuses:?}"
    );
    // 0 turns the limit off.
    let tmp3 = tempfile::tempdir().unwrap();
    let n3 = start(tmp3.path(), &["--link-rate-per-minute", "0"]);
    let items: Vec<String> = (0..700)
        .map(|i| format!(r#"{{"url":"https://e.org/{i}"}}"#))
        .collect();
    assert_eq!(
        batch(n3.addr, &format!(r#"{{"links":[{}]}}"#, items.join(","))).status,
        201
    );
}
