//! Three `strata` processes on loopback forming one group: writes through any node, kill -9 of
//! the leader, re-election, every acknowledged write readable on the survivors, the killed node
//! catching up through a snapshot after the log was purged past it, and forged Raft RPCs.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    auth, init_group, request, start_member, status, wait_for_leader, Node, Resp, SECRET,
};

/// A put through `addr`, retried while the group elects (503 with an unknown outcome is not
/// retried: the test only records writes it knows were acknowledged).
fn put(addr: SocketAddr, key: &str, value: &[u8]) -> Option<u64> {
    let r: Resp = request(addr, "PUT", &format!("/kv/{key}"), &auth(), value);
    match r.status {
        200 => Some(r.version()),
        503 => None,
        s => panic!("put {key} via {addr}: {s} {}", r.text()),
    }
}

/// Every acknowledged write reads back on `a` (linearizable reads) with its version.
fn check_all(a: SocketAddr, acked: &BTreeMap<String, (u64, Vec<u8>)>) {
    for (k, (v, value)) in acked {
        let r = request(a, "GET", &format!("/kv/{k}"), &[], b"");
        assert_eq!(
            (r.status, r.version(), &r.body),
            (200, *v, value),
            "{k} on {a}"
        );
    }
}

#[test]
fn three_processes_survive_the_leader_s_kill_and_a_lagging_node_catches_up_by_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects");
    let dirs: Vec<_> = (1..=3).map(|i| tmp.path().join(format!("n{i}"))).collect();
    let mut nodes: BTreeMap<u64, Node> = (1..=3u64)
        .map(|i| {
            (
                i,
                start_member(i, &dirs[i as usize - 1], &objects, "127.0.0.1:0"),
            )
        })
        .collect();
    let addr_of: BTreeMap<u64, SocketAddr> = nodes.iter().map(|(i, n)| (*i, n.addr)).collect();
    let all: Vec<SocketAddr> = addr_of.values().copied().collect();

    // Form the group through node 1's admin API.
    init_group(&all);
    let leader = wait_for_leader(&all, None);

    // Writes through every node (followers forward to the leader), and a link.
    let mut acked: BTreeMap<String, (u64, Vec<u8>)> = BTreeMap::new();
    for i in 0..60 {
        let key = format!("k{i}");
        let value = format!("v{i}").into_bytes();
        let via = all[i % 3];
        let v = put(via, &key, &value).unwrap_or_else(|| panic!("put {key} via {via}"));
        acked.insert(key, (v, value));
    }
    let follower = addr_of[&(leader % 3 + 1)];
    let link = request(
        follower,
        "POST",
        "/api/links",
        &auth(),
        br#"{"url":"https://example.com/strata","code":"clusterlink"}"#,
    );
    assert_eq!(link.status, 201, "{}", link.text());

    // Linearizable and stale reads on every node see them.
    for a in &all {
        check_all(*a, &acked);
        let r = request(*a, "GET", "/clusterlink", &[], b"");
        assert_eq!(r.status, 302, "link on {a}");
    }

    // kill -9 the leader; the survivors elect a new one.
    let victim_status = status(addr_of[&leader]).expect("leader status");
    let victim_last = victim_status["last_log_index"].as_u64().unwrap();
    let victim_addr = addr_of[&leader];
    drop(nodes.remove(&leader));
    let survivors: Vec<SocketAddr> = nodes.values().map(|n| n.addr).collect();
    let new_leader = wait_for_leader(&survivors, Some(leader));
    assert_ne!(new_leader, leader);

    // Enough writes while it is down to seal and flush 1 MiB memtables a few times: the log is
    // purged past everything the killed node has.
    let big = vec![b'x'; 1024];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0;
    loop {
        let key = format!("big{}", i % 500);
        let mut value = big.clone();
        value.extend_from_slice(i.to_string().as_bytes());
        if let Some(v) = put(survivors[i % 2], &key, &value) {
            acked.insert(key, (v, value));
        }
        i += 1;
        if i % 500 == 0 {
            let purged = status(addr_of[&new_leader]).and_then(|s| s["purged_index"].as_u64());
            if purged.is_some_and(|p| p > victim_last) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the log was never purged past {victim_last}"
            );
        }
    }
    for a in &survivors {
        check_all(*a, &acked);
    }

    // The killed node restarts on its address and catches up through the snapshot.
    let victim_dir = &dirs[leader as usize - 1];
    nodes.insert(
        leader,
        start_member(leader, victim_dir, &objects, &victim_addr.to_string()),
    );
    let target = status(addr_of[&new_leader]).unwrap()["applied_index"]
        .as_u64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status(victim_addr);
        let applied = s.as_ref().and_then(|s| s["applied_index"].as_u64());
        if applied.is_some_and(|a| a >= target) {
            let snap = s.unwrap()["snapshot_index"].as_u64();
            assert!(
                snap.is_some_and(|x| x > victim_last),
                "it caught up without a snapshot past its old log end {victim_last}: {snap:?}"
            );
            let ready = request(victim_addr, "GET", "/ready", &[], b"");
            assert_eq!(ready.status, 200, "{}", ready.text());
            let ready = ready.json();
            assert!(
                ready["applied"].as_u64() >= ready["commit"].as_u64(),
                "{ready}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (k, (v, value)) in &acked {
        let r = request(
            victim_addr,
            "GET",
            &format!("/kv/{k}?consistency=stale"),
            &[],
            b"",
        );
        assert_eq!(
            (r.status, r.version(), &r.body),
            (200, *v, value),
            "{k} on the restarted node"
        );
    }
}

#[test]
fn forged_raft_rpcs_are_refused_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let n = start_member(
        1,
        &tmp.path().join("n"),
        &tmp.path().join("objects"),
        "127.0.0.1:0",
    );
    init_group(&[n.addr]);
    wait_for_leader(&[n.addr], None);
    let term = status(n.addr).unwrap()["term"].as_u64().unwrap();
    let wire = ("x-strata-raft-wire", "1");
    let to = ("x-strata-target-node", "1");
    // A well-formed vote request for term 1000 from node 9: accepted, it would depose the leader.
    let forged: openraft::raft::VoteRequest<u64> =
        openraft::raft::VoteRequest::new(openraft::Vote::new(1000, 9), None);
    let vote = postcard::to_stdvec(&forged).unwrap();
    for path in ["append", "vote", "snapshot", "propose", "read-index"] {
        let p = format!("/raft/{path}");
        let none = request(n.addr, "POST", &p, &[wire, to], &vote);
        assert_eq!(none.status, 401, "{path} without a secret: {}", none.text());
        let wrong = request(
            n.addr,
            "POST",
            &p,
            &[wire, to, ("x-strata-cluster-secret", "guess")],
            &vote,
        );
        assert_eq!(wrong.status, 401, "{path} with a wrong secret");
        let garbage = request(
            n.addr,
            "POST",
            &p,
            &[wire, to, ("x-strata-cluster-secret", SECRET)],
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        );
        assert_eq!(
            garbage.status,
            400,
            "{path} with garbage: {}",
            garbage.text()
        );
        assert_eq!(garbage.json()["error"], "bad_request");
    }
    let s = status(n.addr).unwrap();
    assert_eq!(
        s["term"].as_u64(),
        Some(term),
        "a forged vote changed the term"
    );
    assert_eq!(s["leader"].as_u64(), Some(1));
    // The node still works.
    assert!(put(n.addr, "after", b"ok").is_some());
}

#[test]
fn visits_counted_on_every_node_add_up_and_scans_work_through_followers() {
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects");
    let nodes: Vec<Node> = (1..=3u64)
        .map(|i| {
            start_member(
                i,
                &tmp.path().join(format!("n{i}")),
                &objects,
                "127.0.0.1:0",
            )
        })
        .collect();
    let all: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    init_group(&all);
    wait_for_leader(&all, None);
    let r = request(
        all[1],
        "POST",
        "/api/links",
        &auth(),
        br#"{"url":"https://example.com/","code":"everywhere"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for i in 0..30 {
        assert!(put(all[i % 3], &format!("s/{i:02}"), b"x").is_some());
    }

    // Every node counts its own redirects of one link at once, so their counter updates
    // conflict (compare-and-set) and are retried: the total must still come out exact.
    std::thread::scope(|s| {
        for a in &all {
            let a = *a;
            s.spawn(move || {
                for _ in 0..30 {
                    // A node that has not applied the link yet answers 404; retry it.
                    let deadline = Instant::now() + Duration::from_secs(10);
                    loop {
                        let st = request(a, "GET", "/everywhere", &[], b"").status;
                        if st == 302 {
                            break;
                        }
                        assert!(Instant::now() < deadline, "redirect on {a}: {st}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let counts: Vec<u64> = all
            .iter()
            .map(|a| {
                let r = request(*a, "GET", "/api/links/everywhere", &[], b"");
                r.json()["visits"].as_u64().unwrap()
            })
            .collect();
        if counts.iter().all(|&c| c == 90) {
            break;
        }
        assert!(Instant::now() < deadline, "visits per node: {counts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A linearizable scan through each node sees every key, and no link record.
    for a in &all {
        let r = request(*a, "GET", "/kv?limit=1000", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let keys: Vec<String> = r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap().to_string())
            .collect();
        let want: Vec<String> = (0..30).map(|i| format!("s/{i:02}")).collect();
        assert_eq!(keys, want, "on {a}");
    }
}
