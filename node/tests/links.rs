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
