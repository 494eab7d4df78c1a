//! A node that lost its data directory: it must not vote in the groups it belonged to (it may
//! have voted in their current terms already) until an operator removed it from each group's
//! voters and added it back, and it must never form a new group over the object store of an
//! existing one.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    auth, init_group, request, restart_member, start_member, status, try_request_within,
    wait_for_leader, Node,
};

fn put(addr: SocketAddr, key: &str, value: &str) -> Option<u16> {
    try_request_within(
        addr,
        "PUT",
        &format!("/kv/{key}"),
        &auth(),
        value.as_bytes(),
        Duration::from_secs(2),
    )
    .map(|r| r.status)
}

/// Retries a put through `addr` until it succeeds or `within` passed.
fn put_within(addr: SocketAddr, key: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if put(addr, key, "v") == Some(200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn wait_status(addr: SocketAddr, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if status(addr).is_some_and(|s| f(&s)) {
            return;
        }
        assert!(Instant::now() < end, "{addr}: {what}: {:?}", status(addr));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Makes `voters` the voters of `range`, at its leader (found through the 421 of a node that
/// does not lead it).
fn membership(addrs: &[SocketAddr], range: u64, voters: &[u64]) {
    let body = serde_json::json!({ "voters": voters, "range": range }).to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        for a in addrs {
            let r = request(*a, "POST", "/admin/membership", &auth(), body.as_bytes());
            if r.status == 200 {
                return;
            }
            last = r.text();
            if r.status == 421 {
                if let Some(l) = r.json()["leader_addr"].as_str() {
                    let r = request(
                        l.parse().unwrap(),
                        "POST",
                        "/admin/membership",
                        &auth(),
                        body.as_bytes(),
                    );
                    if r.status == 200 {
                        return;
                    }
                    last = r.text();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("range {range} voters {voters:?} not made: {last}");
}

#[test]
fn a_wiped_node_does_not_vote_until_re_added_and_never_forms_a_group() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects");
    let dirs: Vec<PathBuf> = (1..=3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let mut nodes: Vec<Option<Node>> = (0..3)
        .map(|i| {
            Some(start_member(
                i as u64 + 1,
                &dirs[i],
                &objects,
                "127.0.0.1:0",
            ))
        })
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().flatten().map(|n| n.addr).collect();
    init_group(&addrs);
    let leader = wait_for_leader(&addrs, None) as usize - 1;
    for i in 0..20 {
        assert_eq!(put(addrs[leader], &format!("k{i}"), "v"), Some(200));
    }
    // A second range, holding a key: the node that loses its data was a voter there too.
    let r = request(
        addrs[leader],
        "POST",
        "/admin/split",
        &auth(),
        br#"{"key": "m"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let child = r.json()["child"]["id"].as_u64().expect("a child range");
    assert_eq!(put(addrs[leader], "n", "in the second range"), Some(200));
    let cluster = status(addrs[0]).unwrap()["cluster_id"]
        .as_str()
        .expect("the group has a cluster id")
        .to_string();
    for a in &addrs {
        wait_status(*a, "learns the cluster id", |s| {
            s["cluster_id"] == cluster.as_str()
        });
    }

    // A follower loses its directory and comes back on its address.
    let wiped = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    drop(nodes[wiped].take());
    std::fs::remove_dir_all(&dirs[wiped]).unwrap();
    nodes[wiped] = Some(restart_member(
        wiped as u64 + 1,
        &dirs[wiped],
        &objects,
        addrs[wiped],
    ));
    wait_status(addrs[wiped], "rejoins, catching up", |s| {
        s["rejoining"] == true && s["applied_index"].as_u64().unwrap_or(0) > 20
    });

    // Without the leader, the other follower can only be elected with the wiped node's vote,
    // which it must not give.
    drop(nodes[leader].take());
    assert!(
        !put_within(addrs[other], "during", Duration::from_secs(5)),
        "a group of a wiped node and one other elected a leader"
    );
    nodes[leader] = Some(restart_member(
        leader as u64 + 1,
        &dirs[leader],
        &objects,
        addrs[leader],
    ));
    let l = wait_for_leader(&[addrs[leader], addrs[other]], None) as usize - 1;
    assert!(put_within(addrs[l], "back", Duration::from_secs(10)));

    // The rebuild: out of the voters (kept as a learner), then promoted again, in every group.
    // One group is not enough: the node may have voted in the others' terms too.
    let voters: Vec<u64> = [leader, other].iter().map(|i| *i as u64 + 1).collect();
    membership(&addrs, 1, &voters);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        status(addrs[wiped]).unwrap()["rejoining"],
        true,
        "the rejoin ended with the first range alone"
    );
    membership(&addrs, child, &voters);
    membership(&addrs, 0, &voters);
    wait_status(addrs[wiped], "ends its rejoin as a learner", |s| {
        s["rejoining"] == false
    });
    for range in [1, child, 0] {
        membership(&addrs, range, &[1, 2, 3]);
    }
    // Now it votes: with the leader gone (or, if it leads, having been elected), it and the
    // remaining node elect one.
    let l = wait_for_leader(&addrs, None) as usize - 1;
    let gone = if l == wiped { other } else { l };
    drop(nodes[gone].take());
    let live = [wiped, 3 - gone - wiped];
    assert!(
        put_within(addrs[live[0]], "after", Duration::from_secs(10)),
        "the promoted node did not take part"
    );
    for i in 0..20 {
        let r = request(addrs[wiped], "GET", &format!("/kv/k{i}"), &[], b"");
        assert_eq!(r.status, 200, "k{i} through the rebuilt node: {}", r.text());
    }
    // The second range may have lost its leader with that node too: it elects one of its own.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = request(addrs[wiped], "GET", "/kv/n", &[], b"");
        if r.status == 200 {
            break;
        }
        assert!(
            r.status == 503 && Instant::now() < deadline,
            "n through the rebuilt node: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A node with an empty directory told to form a group over that prefix refuses.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("fresh"))
        .arg("--object-dir")
        .arg(&objects)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("already holds cluster") && stderr.contains(&cluster),
        "{stderr}"
    );
}
