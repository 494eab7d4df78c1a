//! The `strata` binary as a real process on loopback: the key-value API, tokens, bad input,
//! a SIGKILL and restart that loses no acknowledged write, and a clean exit on SIGTERM.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use common::{request, start};

#[test]
fn kv_put_get_delete_with_versions_and_conditions() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &[]);
    let put = request(n.addr, "PUT", "/kv/user/42", &[], b"alice");
    assert_eq!(put.status, 200, "{}", put.text());
    let v1 = put.version();
    assert_eq!(put.json()["version"], v1);

    let got = request(n.addr, "GET", "/kv/user/42", &[], b"");
    assert_eq!(
        (got.status, got.body.as_slice(), got.version()),
        (200, &b"alice"[..], v1)
    );
    for c in ["stale", "lease", "linearizable"] {
        let r = request(
            n.addr,
            "GET",
            &format!("/kv/user/42?consistency={c}"),
            &[],
            b"",
        );
        assert_eq!((r.status, r.version()), (200, v1), "{c}");
    }

    // Compare-and-set on the version, and put-if-absent.
    let stale = request(
        n.addr,
        "PUT",
        &format!("/kv/user/42?if_version={}", v1 + 100),
        &[],
        b"bob",
    );
    assert_eq!(stale.status, 409);
    assert_eq!(stale.json()["current_version"], v1);
    let swapped = request(
        n.addr,
        "PUT",
        &format!("/kv/user/42?if_version={v1}"),
        &[],
        b"bob",
    );
    assert_eq!(swapped.status, 200, "{}", swapped.text());
    let v2 = swapped.version();
    assert!(v2 > v1);
    assert_eq!(swapped.json()["previous_version"], v1);
    assert_eq!(
        request(n.addr, "PUT", "/kv/user/42?if_absent", &[], b"carol").status,
        409
    );
    assert_eq!(
        request(n.addr, "PUT", "/kv/user/43?if_absent", &[], b"carol").status,
        200
    );
    assert_eq!(
        request(n.addr, "PUT", "/kv/user/44?if_version=0", &[], b"dave").status,
        200
    );

    // TTL: gone after it expires.
    assert_eq!(
        request(n.addr, "PUT", "/kv/session?ttl=1", &[], b"s").status,
        200
    );
    assert_eq!(request(n.addr, "GET", "/kv/session", &[], b"").status, 200);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(request(n.addr, "GET", "/kv/session", &[], b"").status, 404);

    let del = request(n.addr, "DELETE", "/kv/user/42", &[], b"");
    assert_eq!(del.status, 200);
    assert!(del.version() > v2);
    let gone = request(n.addr, "GET", "/kv/user/42", &[], b"");
    assert_eq!(gone.status, 404);
    assert_eq!(gone.json()["error"], "not_found");
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &["--max-body-bytes", "1024"]);
    let cases: &[(&str, &str, &[u8], u16)] = &[
        ("PUT", "/kv/k?if_version=abc", b"v", 400),
        ("PUT", "/kv/k?ttl=0", b"v", 400),
        ("PUT", "/kv/k?if_absent&if_version=3", b"v", 400),
        ("GET", "/kv/k?consistency=eventually", b"", 400),
        ("PUT", "/kv/k", &[b'x'; 4096], 413),
    ];
    for (method, path, body, want) in cases {
        let r = request(n.addr, method, path, &[], body);
        assert_eq!(r.status, *want, "{method} {path}: {}", r.text());
    }
    // A key over the engine's limit does not fit in a URI the server accepts.
    let long_key = format!("/kv/{}", "k".repeat(lsm::MAX_KEY_LEN + 1));
    let r = request(n.addr, "PUT", &long_key, &[], b"v");
    assert_eq!(r.status, 414, "{}", r.text());
    let r = request(n.addr, "PUT", "/kv/", &[], b"v");
    assert!(
        r.status == 400 || r.status == 404,
        "empty key: {}",
        r.status
    );
    // Nothing was stored by any of them.
    assert_eq!(request(n.addr, "GET", "/kv/k", &[], b"").status, 404);
    // Still serving.
    assert_eq!(request(n.addr, "GET", "/health", &[], b"").status, 200);
}

#[test]
fn writes_need_the_token_when_one_is_set() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &["--token", "s3cret-token"]);
    assert_eq!(request(n.addr, "PUT", "/kv/a", &[], b"1").status, 401);
    let wrong = [("Authorization", "Bearer s3cret-tokeX")];
    assert_eq!(request(n.addr, "PUT", "/kv/a", &wrong, b"1").status, 401);
    assert_eq!(request(n.addr, "DELETE", "/kv/a", &[], b"").status, 401);
    assert_eq!(request(n.addr, "GET", "/kv/a", &[], b"").status, 404);
    let ok = [("Authorization", "Bearer s3cret-token")];
    assert_eq!(request(n.addr, "PUT", "/kv/a", &ok, b"1").status, 200);
    assert_eq!(request(n.addr, "GET", "/kv/a", &[], b"").body, b"1");
}

#[test]
fn a_killed_node_restarts_with_every_acknowledged_write_and_exits_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let mut n = start(tmp.path(), &[]);
    // 1 MiB memtables: enough writes to seal, upload and snapshot a few times.
    let value = vec![b'v'; 2000];
    let acked = common::put_items(n.addr, 1500, &value);
    n.child.kill().unwrap();
    n.child.wait().unwrap();
    drop(n);
    let mut n = start(tmp.path(), &[]);
    for (i, version) in &acked {
        let r = request(n.addr, "GET", &format!("/kv/item-{i}"), &[], b"");
        assert_eq!((r.status, r.version()), (200, *version), "item-{i}");
        assert_eq!(r.body.len(), value.len());
    }
    // SIGTERM: finish, stop Raft, exit 0.
    let pid = n.child.id() as i32;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = n.child.wait().unwrap();
    assert_eq!(
        (exit.code(), exit.signal()),
        (Some(0), None),
        "exit on SIGTERM"
    );
}

/// Concurrent writes share Raft entries (fewer entries than writes), yet two writes of one key
/// never share an entry: each gets its own version, so a compare-and-set can tell them apart.
#[test]
fn concurrent_writes_share_entries_but_never_a_version_of_one_key() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &[]);
    let addr = n.addr;
    let entries = |a| {
        let s = request(a, "GET", "/admin/status", &[], b"").json();
        s["last_log_index"].as_u64().expect("last_log_index")
    };
    let before = entries(addr);
    let threads: Vec<_> = (0..32)
        .map(|t| {
            std::thread::spawn(move || {
                let mut versions = Vec::new();
                for i in 0..20 {
                    let own = request(addr, "PUT", &format!("/kv/t{t}/{i}"), &[], b"x");
                    assert_eq!(own.status, 200, "{}", own.text());
                    let shared = request(
                        addr,
                        "PUT",
                        "/kv/shared",
                        &[],
                        format!("{t}-{i}").as_bytes(),
                    );
                    assert_eq!(shared.status, 200, "{}", shared.text());
                    versions.push(shared.version());
                }
                versions
            })
        })
        .collect();
    let mut shared: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let writes = 32 * 20 * 2;
    let used = entries(addr) - before;
    assert!(
        used < writes,
        "{writes} concurrent writes took {used} entries: nothing was batched"
    );
    shared.sort_unstable();
    let n_shared = shared.len();
    shared.dedup();
    assert_eq!(
        shared.len(),
        n_shared,
        "two writes of one key got one version"
    );
}

#[test]
fn metrics_report_requests_by_route_and_the_replica_s_state() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &[]);
    for i in 0..3 {
        assert_eq!(
            request(n.addr, "PUT", &format!("/kv/m{i}"), &[], b"x").status,
            200
        );
    }
    assert_eq!(request(n.addr, "GET", "/kv/missing", &[], b"").status, 404);
    let m = request(n.addr, "GET", "/metrics", &[], b"");
    assert_eq!(m.status, 200);
    let text = m.text();
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
            .to_string()
    };
    // Labels come in registration order: route, method, status.
    assert!(
        line("strata_http_requests_total{route=\"/kv/{*key}\",method=\"PUT\",status=\"200\"}")
            .ends_with(" 3")
    );
    assert!(
        line("strata_http_requests_total{route=\"/kv/{*key}\",method=\"GET\",status=\"404\"}")
            .ends_with(" 1")
    );
    assert!(line("strata_raft_is_leader").ends_with(" 1"));
    let applied: i64 = line("strata_raft_applied_index ")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(applied >= 3, "applied index {applied}");
    line("strata_http_request_duration_seconds_bucket{");
    line("strata_engine_memtable_bytes ");
}

/// Every key of a scan, page by page, following the cursor; checks each page's size.
fn scan_all(addr: std::net::SocketAddr, query: &str, limit: usize) -> Vec<serde_json::Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/kv?{query}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = request(addr, "GET", &path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let page = r.json();
        let got = page["items"].as_array().unwrap().clone();
        assert!(got.len() <= limit, "{path}: {} items", got.len());
        match page["cursor"].as_str() {
            Some(c) => {
                assert_eq!(got.len(), limit, "only a full page has a next one");
                cursor = Some(c.to_string());
                items.extend(got);
            }
            None => {
                items.extend(got);
                return items;
            }
        }
    }
    panic!("{query}: the cursor never ended");
}

fn keys(items: &[serde_json::Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn scans_page_through_ranges_and_prefixes_and_never_show_links() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start(tmp.path(), &[]);
    let mut versions = std::collections::HashMap::new();
    for i in 0..250 {
        let r = request(
            n.addr,
            "PUT",
            &format!("/kv/scan/k{i:03}"),
            &[],
            format!("v{i}").as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        versions.insert(format!("scan/k{i:03}"), r.version());
    }
    for k in ["a-before", "scan0", "zz-after"] {
        assert_eq!(
            request(n.addr, "PUT", &format!("/kv/{k}"), &[], b"x").status,
            200
        );
    }
    assert_eq!(
        request(n.addr, "PUT", "/kv/bin/x", &[], &[0xff, 0xfe, 0]).status,
        200
    );
    // Links (and, once flushed, a visit counter) live under link/, between these keys.
    let r = request(
        n.addr,
        "POST",
        "/api/links",
        &[("Content-Type", "application/json")],
        br#"{"url":"https://example.com/","code":"scanme"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(request(n.addr, "GET", "/scanme", &[], b"").status, 302);
    std::thread::sleep(Duration::from_millis(1500));

    let want: Vec<String> = (0..250).map(|i| format!("scan/k{i:03}")).collect();
    // Forward, by prefix, over three pages; every key once, in order, with its version.
    let items = scan_all(n.addr, "prefix=scan/", 100);
    assert_eq!(keys(&items), want);
    for it in &items {
        let k = it["key"].as_str().unwrap();
        assert_eq!(it["version"].as_u64(), Some(versions[k]), "{k}");
        assert_eq!(it["value"], format!("v{}", k[6..].parse::<u32>().unwrap()));
        assert!(it.get("encoding").is_none());
    }
    // Reverse, with a page size that does not divide 250.
    let mut rev = want.clone();
    rev.reverse();
    assert_eq!(
        keys(&scan_all(n.addr, "prefix=scan/&reverse=true", 70)),
        rev
    );
    // start/end: end exclusive, both directions, paged.
    let mid: Vec<String> = (100..110).map(|i| format!("scan/k{i:03}")).collect();
    assert_eq!(
        keys(&scan_all(n.addr, "start=scan/k100&end=scan/k110", 3)),
        mid
    );
    let mut mid_rev = mid.clone();
    mid_rev.reverse();
    assert_eq!(
        keys(&scan_all(
            n.addr,
            "start=scan/k100&end=scan/k110&reverse=true",
            4
        )),
        mid_rev
    );
    assert_eq!(
        keys(&scan_all(n.addr, "start=scan/k248", 10)),
        ["scan/k248", "scan/k249", "scan0", "zz-after"]
    );

    // The whole key space: no link/ key, whatever the page size or direction.
    let mut all = vec!["a-before".to_string(), "bin/x".into()];
    all.extend(want.iter().cloned());
    all.extend(["scan0".to_string(), "zz-after".into()]);
    for limit in [1, 7, 1000] {
        assert_eq!(
            keys(&scan_all(n.addr, "consistency=stale", limit)),
            all,
            "{limit}"
        );
    }
    let mut all_rev = all.clone();
    all_rev.reverse();
    assert_eq!(
        keys(&scan_all(n.addr, "reverse=true&consistency=lease", 6)),
        all_rev
    );
    // Around the link range: "lin..." to "m" holds only links.
    assert_eq!(scan_all(n.addr, "start=lin&end=m", 5).len(), 0);
    assert_eq!(scan_all(n.addr, "prefix=lin", 5).len(), 0);
    assert_eq!(
        scan_all(n.addr, "prefix=&reverse=true", 1000).len(),
        all.len()
    );
    // Binary values come back as base64.
    let bin = scan_all(n.addr, "prefix=bin/", 10);
    assert_eq!(
        (bin[0]["value"].as_str(), bin[0]["encoding"].as_str()),
        (Some("//4A"), Some("base64"))
    );

    // Deleted and expired keys are not listed.
    assert_eq!(
        request(n.addr, "DELETE", "/kv/scan/k005", &[], b"").status,
        200
    );
    assert_eq!(
        request(n.addr, "PUT", "/kv/scan/k0051?ttl=1", &[], b"t").status,
        200
    );
    assert!(keys(&scan_all(n.addr, "prefix=scan/k005", 10)) == ["scan/k0051"]);
    std::thread::sleep(Duration::from_millis(1300));
    assert!(scan_all(n.addr, "prefix=scan/k005", 10).is_empty());

    // Refused: reserved ranges, bad limits, mixed bounds, a cursor of the other direction.
    let fwd = request(n.addr, "GET", "/kv?prefix=scan/&limit=2", &[], b"").json();
    let fwd_cursor = fwd["cursor"].as_str().unwrap().to_string();
    for q in [
        "prefix=link/".to_string(),
        "prefix=link/scanme".into(),
        "start=link/".into(),
        "start=a&end=link/scanme/visits".into(),
        "limit=0".into(),
        "limit=1001".into(),
        "limit=x".into(),
        "prefix=a&start=b".into(),
        "consistency=sometimes".into(),
        "reverse=maybe".into(),
        "bogus=1".into(),
        "cursor=%21%21".into(),
        format!("reverse=true&cursor={fwd_cursor}"),
    ] {
        let r = request(n.addr, "GET", &format!("/kv?{q}"), &[], b"");
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_request", "{q}");
    }
    // The KV API cannot read the link's records by key either.
    assert_eq!(
        request(n.addr, "GET", "/kv/link/scanme", &[], b"").status,
        400
    );
    assert_eq!(
        request(n.addr, "GET", "/kv/link/scanme/visits", &[], b"").status,
        400
    );
}
