//! Ranges across processes: a node that missed a split routes requests for the moved keys
//! again once it learns of it; a request routed with an old epoch is answered with the range
//! as it is; a node joining through an address registers, is added to every range by
//! `strata admin --all-ranges`, then gets replicas of new ranges; a data directory written by
//! a single-group node (before ranges) opens as the first range with its data; a message for
//! a range a node lacks creates it, empty.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    auth, init_group, request, signal, start, start_member, try_request, wait_for_leader, Node,
    SECRET, TOKEN,
};

fn split(addr: SocketAddr, key: &str) -> serde_json::Value {
    let body = serde_json::json!({ "key": key }).to_string();
    let r = request(addr, "POST", "/admin/split", &auth(), body.as_bytes());
    assert_eq!(r.status, 200, "split at {key}: {}", r.text());
    r.json()
}

fn ranges_of(addr: SocketAddr) -> Vec<serde_json::Value> {
    let r = request(addr, "GET", "/admin/ranges", &auth(), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["ranges"].as_array().cloned().unwrap_or_default()
}

/// Waits until `f` holds, for at most `secs` seconds.
fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn put(addr: SocketAddr, key: &str, value: &str) {
    let r = request(
        addr,
        "PUT",
        &format!("/kv/{key}"),
        &auth(),
        value.as_bytes(),
    );
    assert_eq!(r.status, 200, "PUT {key} via {addr}: {}", r.text());
}

fn get(addr: SocketAddr, key: &str) -> Option<String> {
    let r = request(addr, "GET", &format!("/kv/{key}"), &[], b"");
    match r.status {
        200 => Some(r.text()),
        404 => None,
        st => panic!("GET {key} via {addr}: {st} {}", r.text()),
    }
}

/// Three members formed into a cluster, with a leader.
fn three(root: &Path) -> (Vec<Node>, Vec<SocketAddr>) {
    let objects = root.join("objects");
    let nodes: Vec<Node> = (1..=3)
        .map(|i| start_member(i, &root.join(format!("n{i}")), &objects, "127.0.0.1:0"))
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    init_group(&addrs);
    wait_for_leader(&addrs, None);
    (nodes, addrs)
}

#[test]
fn a_node_that_missed_a_split_serves_the_moved_keys_and_old_epochs_are_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, addrs) = three(tmp.path());
    put(addrs[0], "a-1", "before");

    // Node 3 sleeps through the split and the first write to the new range.
    signal(&nodes[2], "-STOP");
    let s = split(addrs[0], "m");
    assert_eq!(s["split"], true, "{s}");
    let child = s["child"]["id"].as_u64().unwrap();
    put(addrs[0], "n-1", "after");
    signal(&nodes[2], "-CONT");

    // At once, through the node that missed it: its picture still sends `n-1` to the first
    // range, whose read barrier makes it apply the split; the read is routed again.
    assert_eq!(get(addrs[2], "n-1").as_deref(), Some("after"));
    assert_eq!(get(addrs[2], "a-1").as_deref(), Some("before"));
    put(addrs[2], "n-2", "via-3");
    assert_eq!(get(addrs[0], "n-2").as_deref(), Some("via-3"));
    wait_until(20, "node 3 runs both ranges", || {
        ranges_of(addrs[2]).len() == 2
    });
    let r3 = ranges_of(addrs[2]);
    assert_eq!(r3[1]["id"].as_u64(), Some(child));
    assert_eq!(r3[0]["end"], "m");
    assert_eq!(r3[0]["epoch"], 2);

    // A write forwarded with the first range's old epoch: answered with the range as it is.
    let cmd = raftlog::store::Command::Write {
        ops: vec![raftlog::store::Op::Put {
            key: b"b".to_vec(),
            value: b"x".to_vec(),
        }],
        now_ms: 0,
    };
    let body = postcard::to_stdvec(&cmd).unwrap();
    let r = request(
        addrs[0],
        "POST",
        "/raft/propose",
        &[
            ("x-strata-cluster-secret", SECRET),
            ("x-strata-raft-wire", "1"),
            ("x-strata-target-node", "1"),
            ("x-strata-range", "1"),
            ("x-strata-range-epoch", "1"),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let reply: Result<raftlog::store::Reply, String> = postcard::from_bytes(&r.body).unwrap();
    match reply {
        Ok(raftlog::store::Reply::WrongRange(Some(d))) => {
            assert_eq!((d.id, d.epoch, d.end.as_deref()), (1, 2, Some(&b"m"[..])))
        }
        other => panic!("expected WrongRange with the current range, got {other:?}"),
    }
    assert_eq!(
        get(addrs[1], "b"),
        None,
        "the refused write changed nothing"
    );

    // Scans see both ranges from every node, both ways.
    for a in &addrs {
        let fwd = request(*a, "GET", "/kv?limit=1000", &[], b"").json();
        let keys: Vec<&str> = fwd["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["a-1", "n-1", "n-2"], "via {a}");
        let rev = request(*a, "GET", "/kv?limit=2&reverse=true", &[], b"").json();
        let keys: Vec<&str> = rev["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["n-2", "n-1"], "via {a}");
    }
}

#[test]
fn a_node_joining_gets_replicas_of_new_ranges_and_registers() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut nodes, addrs) = three(tmp.path());
    let objects = tmp.path().join("objects");
    // A range made before node 4 comes, with a key in it.
    let before = split(addrs[0], "c")["child"]["id"].as_u64().unwrap();
    put(addrs[1], "d", "before 4");
    // `--join ADDR`: it registers through node 1 before it holds any replica.
    let via = addrs[0].to_string();
    let n4 = start(
        &tmp.path().join("n4"),
        &[
            "--join",
            &via,
            "--node-id",
            "4",
            "--cluster-secret",
            SECRET,
            "--token",
            TOKEN,
            "--object-dir",
            objects.to_str().unwrap(),
        ],
    );
    let registered = |n: usize| {
        let r = request(addrs[1], "GET", "/admin/nodes", &auth(), b"");
        r.status == 200
            && r.json()["nodes"]
                .as_array()
                .is_some_and(|l| l.len() == n && l.iter().all(|x| x["live"] == true))
    };
    wait_until(30, "the joining node is registered", || registered(4));
    // Added to every range, through `strata admin --all-ranges` (each call at its range's
    // leader, wherever it is).
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .args([
                "admin",
                "--node",
                &format!("http://{}", addrs[0]),
                "--token",
                TOKEN,
            ])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "strata admin {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };
    let n4_addr = n4.addr.to_string();
    let added = admin(&["add-learner", "4", &n4_addr, "--all-ranges"]);
    assert_eq!(added.as_array().map(Vec::len), Some(2), "{added}");
    admin(&["change-membership", "1", "2", "3", "4", "--all-ranges"]);
    // The range made before it joined now has a replica on node 4, which serves it.
    wait_until(30, "node 4 runs the earlier range", || {
        ranges_of(n4.addr).iter().any(|r| {
            r["id"].as_u64() == Some(before) && r["replicas"] == serde_json::json!([1, 2, 3, 4])
        })
    });
    assert_eq!(get(n4.addr, "d").as_deref(), Some("before 4"));

    // A range created now has a replica on node 4.
    let s = split(addrs[0], "k");
    let child = s["child"]["id"].as_u64().unwrap();
    wait_until(30, "node 4 runs the new range", || {
        ranges_of(n4.addr)
            .iter()
            .any(|r| r["id"].as_u64() == Some(child) && r["leader"].as_u64().is_some())
    });
    let view = ranges_of(n4.addr);
    let new = view
        .iter()
        .find(|r| r["id"].as_u64() == Some(child))
        .unwrap();
    assert_eq!(new["replicas"], serde_json::json!([1, 2, 3, 4]), "{new}");
    put(n4.addr, "z", "through 4");
    assert_eq!(get(addrs[0], "z").as_deref(), Some("through 4"));

    let listed = request(addrs[1], "GET", "/admin/nodes", &auth(), b"").json();
    let four = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == 4)
        .cloned()
        .unwrap();
    assert_eq!(four["addr"], n4.addr.to_string());
    assert!(four["replicas"].as_u64() >= Some(2), "{four}");
    nodes.push(n4);
}

/// The data directory `tests/fixtures/single-group-node.tar.gz` was written by the
/// single-group node of commit 2c1ca1f (`strata serve --memtable-mb 1 --token tok`): 300 keys
/// `key-000`..`key-299` of about 10 KB (two tables in its object store, the rest in its Raft
/// log), `key-007` overwritten with `short`, `key-008` deleted, and a link `abc` visited once.
#[test]
fn a_single_group_data_directory_opens_as_the_first_range_with_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/single-group-node.tar.gz");
    let ok = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(tmp.path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "unpacking {}", fixture.display());
    let dir = tmp.path().join("data");
    let check = |addr: SocketAddr| {
        assert_eq!(get(addr, "key-007").as_deref(), Some("short"));
        assert_eq!(get(addr, "key-008"), None);
        let v = get(addr, "key-123").unwrap();
        assert!(
            v.starts_with("value-123-") && v.len() > 9000,
            "{}",
            &v[..40]
        );
        let mut n = 0;
        let mut cursor = String::new();
        loop {
            let page = request(addr, "GET", &format!("/kv?limit=100{cursor}"), &[], b"").json();
            n += page["items"].as_array().unwrap().len();
            match page["cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(n, 299 + usize::from(get(addr, "zz-new").is_some()));
        let link = request(
            addr,
            "GET",
            "/api/links/abc",
            &[("Authorization", "Bearer tok")],
            b"",
        );
        assert_eq!(link.status, 200, "{}", link.text());
        assert_eq!(link.json()["target"], "https://example.com/a");
        assert!(link.json()["visits"].as_u64() >= Some(1));
    };
    let node = start(&dir, &["--token", "tok"]);
    check(node.addr);
    let r = ranges_of_with(node.addr, "tok");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["id"], 1);
    assert_eq!(r[0]["end"], serde_json::Value::Null);
    // It splits, and takes writes in the new range.
    let body = br#"{"key": "zz"}"#;
    let s = request(
        node.addr,
        "POST",
        "/admin/split",
        &[
            ("Authorization", "Bearer tok"),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    assert_eq!(s.status, 200, "{}", s.text());
    let w = request(
        node.addr,
        "PUT",
        "/kv/zz-new",
        &[("Authorization", "Bearer tok")],
        b"1",
    );
    assert_eq!(w.status, 200, "{}", w.text());
    let addr = node.addr;
    drop(node);
    // And comes back the same.
    let node = start(&dir, &["--token", "tok", "--listen", &addr.to_string()]);
    check(node.addr);
    assert_eq!(ranges_of_with(node.addr, "tok").len(), 2);
}

fn ranges_of_with(addr: SocketAddr, token: &str) -> Vec<serde_json::Value> {
    let auth = format!("Bearer {token}");
    let r = request(
        addr,
        "GET",
        "/admin/ranges",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["ranges"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_message_for_a_range_a_node_lacks_creates_it_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n1");
    let objects = tmp.path().join("objects");
    let node = start_member(1, &dir, &objects, "127.0.0.1:0");
    init_group(&[node.addr]);
    wait_for_leader(&[node.addr], None);
    let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(3, 2), None);
    let body = postcard::to_stdvec(&vote).unwrap();
    let headers = |range: &'static str| {
        [
            ("x-strata-cluster-secret", SECRET),
            ("x-strata-raft-wire", "1"),
            ("x-strata-target-node", "1"),
            ("x-strata-range", range),
        ]
    };
    let r = request(node.addr, "POST", "/raft/vote", &headers("77"), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        dir.join("ranges/77/created").exists(),
        "no replica directory for range 77"
    );
    // Not a number: refused, nothing created.
    let r = request(node.addr, "POST", "/raft/vote", &headers("seventy"), &body);
    assert_eq!(r.status, 400, "{}", r.text());
    // The empty replica has no range yet: it routes nothing.
    assert_eq!(ranges_of(node.addr).len(), 1);
    let health = try_request(node.addr, "GET", "/health", &[], b"").unwrap();
    assert_eq!(health.status, 200);
    // It starts again with the node.
    let addr = node.addr;
    drop(node);
    let node = common::restart_member(1, &dir, &objects, addr);
    wait_for_leader(&[node.addr], None);
    put(node.addr, "k", "v");
    assert_eq!(get(node.addr, "k").as_deref(), Some("v"));
}
