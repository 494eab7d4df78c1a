//! Splits: the child range created on every replica as it applies the Split entry, without
//! `initialize()`, its log starting after the split's log id; a second split at the same key,
//! and writes routed to the wrong side, change nothing.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{put, test_config, Cluster};
use openraft::ServerState;
use raftlog::inproc::Router;
use raftlog::range::{create_child, is_created, ChildSpec, SplitHook};
use raftlog::store::{Command, Reply};
use raftlog::{MaintainerOptions, Replica};

const T: Duration = Duration::from_secs(20);

fn child_dir(c: &Cluster, node: u64, range: u64) -> PathBuf {
    c.dir(node).join("ranges").join(range.to_string())
}

/// Starts node `id`'s replica of range 2 from its directory, without initialize().
async fn start_child(c: &Cluster, id: u64, router: &Arc<Router>) -> Replica {
    Replica::start_group(
        id,
        2,
        &child_dir(c, id, 2),
        common::engine_options(c.objects.clone()),
        test_config(),
        router.factory(id),
        MaintainerOptions::default(),
        None,
    )
    .await
    .expect("start child")
}

/// Hooks on every node's replica of range 1 that create children under its directory.
fn install_hooks(c: &Cluster) {
    for &id in &c.ids {
        let root = c.dir(id).join("ranges");
        let engine = common::engine_options(c.objects.clone());
        let hook: SplitHook = Arc::new(move |spec: &ChildSpec| {
            std::fs::create_dir_all(&root).expect("ranges dir");
            create_child(
                &root.join(spec.desc.id.to_string()),
                spec,
                id,
                engine.clone(),
            )
            .map(|_| ())
        });
        c.node(id).sm.set_split_hook(hook);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_creates_the_child_on_every_replica_without_initialize() {
    let c = Cluster::new(3).await;
    install_hooks(&c);
    let (_, r) = c.write(put("apple", "1"), T).await;
    assert!(matches!(r, Reply::Write(_)), "{r:?}");

    // Data after the key: refused, nothing changes.
    let (_, r) = c
        .write(
            Command::Split {
                key: b"a".to_vec(),
                child: 2,
            },
            T,
        )
        .await;
    assert!(
        matches!(r, Reply::SplitRefused(ref m) if m.contains("holds data")),
        "{r:?}"
    );

    let (_, r) = c
        .write(
            Command::Split {
                key: b"m".to_vec(),
                child: 2,
            },
            T,
        )
        .await;
    let Reply::Split { parent, child } = r else {
        panic!("split refused: {r:?}");
    };
    assert_eq!(parent.end.as_deref(), Some(&b"m"[..]));
    assert_eq!(
        (child.id, child.start.as_slice(), child.end.clone()),
        (2, &b"m"[..], None)
    );
    assert_eq!(parent.epoch, child.epoch);

    // The same split again: the key is the range's end now.
    let (_, r) = c
        .write(
            Command::Split {
                key: b"m".to_vec(),
                child: 3,
            },
            T,
        )
        .await;
    assert!(matches!(r, Reply::SplitRefused(_)), "{r:?}");
    // A write for the child's keys, sent to the parent: refused with the parent's descriptor.
    let (_, r) = c.write(put("zebra", "1"), T).await;
    assert_eq!(r, Reply::WrongRange(Some(parent.clone())));

    // Every replica applied the split and created the child (and nothing for range 3).
    let last = c
        .node(c.leader(T).await)
        .sm
        .last_applied()
        .expect("applied")
        .index;
    for &id in &c.ids {
        c.wait_applied(id, last, T).await;
        assert_eq!(c.node(id).sm.range(), Some(parent.clone()), "node {id}");
        assert!(is_created(&child_dir(&c, id, 2)), "node {id} has the child");
        assert!(
            !child_dir(&c, id, 3).exists(),
            "node {id}: a refused split created nothing"
        );
    }

    // Start the children: no initialize(); they elect a leader from the parent's membership.
    let router = Arc::new(Router::default());
    let mut children: BTreeMap<u64, Replica> = BTreeMap::new();
    for &id in &c.ids {
        let r = start_child(&c, id, &router).await;
        router.add(id, r.raft.clone());
        children.insert(id, r);
    }
    let split_at = children[&1].sm.last_applied().expect("stands at the split");
    for r in children.values() {
        assert_eq!(r.sm.last_applied(), Some(split_at));
        assert_eq!(r.sm.range(), Some(child.clone()));
    }
    // Elections are quicker when asked for.
    children[&2].raft.trigger().elect().await.expect("elect");
    let leader = tokio::time::timeout(T, async {
        loop {
            for (id, r) in &children {
                let m = r.raft.metrics().borrow().clone();
                if m.state == ServerState::Leader {
                    return *id;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the child elects a leader");
    let raft = &children[&leader].raft;
    let r = raft
        .client_write(put("zebra", "2"))
        .await
        .expect("child write");
    assert!(
        r.log_id.index > split_at.index,
        "the child's log continues the parent's"
    );
    assert!(matches!(r.data, Reply::Write(_)), "{:?}", r.data);
    let r = raft
        .client_write(put("apple", "2"))
        .await
        .expect("child write");
    assert_eq!(r.data, Reply::WrongRange(Some(child.clone())));

    // Restarted, the parent and the child keep their ranges (a Split replayed changes nothing).
    for (_, r) in std::mem::take(&mut children) {
        r.shutdown().await;
    }
    let mut c = c;
    for id in c.ids.clone() {
        c.stop(id).await;
        c.start(id).await;
    }
    c.leader(T).await;
    install_hooks(&c);
    let last = c
        .node(c.leader(T).await)
        .sm
        .last_applied()
        .expect("applied")
        .index;
    for &id in &c.ids {
        c.wait_applied(id, last, T).await;
        assert_eq!(
            c.node(id).sm.range().map(|r| r.end),
            Some(Some(b"m".to_vec()))
        );
        let child = start_child(&c, id, &router).await;
        assert_eq!(
            child.sm.range().map(|r| (r.id, r.start)),
            Some((2, b"m".to_vec()))
        );
        child.shutdown().await;
    }
    assert_eq!(
        c.contents(1)
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        vec![b"apple".to_vec()]
    );
}
