//! The S3 object store and the engine's cold tier against a real S3-compatible server
//! (`s3s-fs`) on loopback, with SigV4 authentication: the store's contract, multipart uploads,
//! conditional writes, request counts of cold lookups, a server outage and its end, and
//! refused credentials.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use lsm::object::{ObjectError, ObjectStore, S3Store};
use lsm::{ColdTier, Db, Error, Options};
use testkit::{shared, S3Server, ACCESS_KEY};

fn data(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}

#[test]
fn store_contract() {
    let s = shared().store("contract").unwrap();
    let a = data(10_000, 1);
    s.put("p/a.sst", a.clone()).unwrap();
    assert_eq!(s.get("p/a.sst").unwrap(), a);
    assert_eq!(s.size("p/a.sst").unwrap(), 10_000);
    assert_eq!(s.get_range("p/a.sst", 100..200).unwrap(), a.slice(100..200));
    // A range running past the end stops at the end; one starting past it is an error.
    assert_eq!(
        s.get_range("p/a.sst", 9_990..20_000).unwrap(),
        a.slice(9_990..)
    );
    assert!(matches!(
        s.get_range("p/a.sst", 20_000..20_010),
        Err(ObjectError::InvalidRange { size: 10_000, .. })
    ));
    assert_eq!(s.get_range("p/a.sst", 10_000..10_000).unwrap().len(), 0);
    assert_eq!(
        s.get_suffix("p/a.sst", 300).unwrap(),
        (a.slice(9_700..), 10_000)
    );
    assert_eq!(
        s.get_suffix("p/a.sst", 1 << 20).unwrap(),
        (a.clone(), 10_000)
    );

    // Replacing is whole; create-if-absent refuses an existing object and changes nothing.
    let b = data(5_000, 2);
    s.put("p/a.sst", b.clone()).unwrap();
    assert_eq!(s.get("p/a.sst").unwrap(), b);
    assert!(s.supports_put_if_absent());
    assert!(!s.put_if_absent("p/a.sst", a.clone()).unwrap());
    assert_eq!(s.get("p/a.sst").unwrap(), b);
    assert!(s.put_if_absent("p/b.sst", a.clone()).unwrap());

    assert!(matches!(s.get("p/none"), Err(ObjectError::NotFound(_))));
    assert!(matches!(s.size("p/none"), Err(ObjectError::NotFound(_))));
    assert!(matches!(
        s.get_range("p/none", 0..10),
        Err(ObjectError::NotFound(_))
    ));
    assert!(matches!(
        s.get("../escape"),
        Err(ObjectError::InvalidKey { .. })
    ));

    // Listing pages past S3's 1000 keys per response and comes back sorted.
    for i in 0..1_050 {
        s.put(&format!("many/{i:05}"), Bytes::from(vec![0u8; i % 7]))
            .unwrap();
    }
    let listed = s.list("many/").unwrap();
    assert_eq!(listed.len(), 1_050);
    assert!(listed.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(listed[8].size, 1);
    assert_eq!(s.list("p/").unwrap().len(), 2);

    s.delete("p/a.sst").unwrap();
    s.delete("p/a.sst").unwrap(); // deleting an absent object succeeds
    assert!(matches!(s.get("p/a.sst"), Err(ObjectError::NotFound(_))));
}

#[test]
fn large_objects_go_up_in_parts() {
    let server = shared();
    let mut cfg = server.config("multipart");
    cfg.part_size = 5 << 20;
    cfg.multipart_threshold = 6 << 20;
    let s = S3Store::new(cfg).unwrap();
    s.create_bucket_if_missing().unwrap();
    let big = data((12 << 20) + 12_345, 3);
    s.put("big/1.sst", big.clone()).unwrap();
    assert_eq!(s.size("big/1.sst").unwrap(), big.len() as u64);
    assert_eq!(s.get("big/1.sst").unwrap(), big);
    let mid = (5 << 20) - 10..(5 << 20) + 10; // across a part boundary
    assert_eq!(
        s.get_range("big/1.sst", mid.clone()).unwrap(),
        big.slice(mid.start as usize..mid.end as usize)
    );
    // Conditional completion: the second upload of the same key is refused.
    assert!(!s.put_if_absent("big/1.sst", data(7 << 20, 4)).unwrap());
    assert_eq!(s.get("big/1.sst").unwrap(), big);
    assert!(s.put_if_absent("big/2.sst", data(7 << 20, 4)).unwrap());
    assert_eq!(s.get("big/2.sst").unwrap(), data(7 << 20, 4));
}

#[test]
fn wrong_credentials_are_refused_not_retried() {
    let server = shared();
    server.store("creds").unwrap(); // the bucket exists
    let cfg = server
        .config("creds")
        .with_static_credentials(ACCESS_KEY, "not-the-secret");
    let s = S3Store::new(cfg).unwrap();
    match s.put("x/1", Bytes::from_static(b"x")) {
        Err(e @ ObjectError::Rejected { .. }) => assert!(!e.is_retryable(), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn unreachable_server_is_unavailable() {
    // A port nothing listens on: connection refused, a retryable failure.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = lsm::object::S3Config::new("b")
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_static_credentials("a", "b");
    let s = S3Store::new(cfg).unwrap();
    let e = s.get("k/1").unwrap_err();
    assert!(e.is_retryable(), "{e}");
}

const N: u32 = 10_000;

fn key(i: u32) -> String {
    format!("link:{i:08}")
}

fn value(i: u32) -> Vec<u8> {
    format!("https://example.com/{i}/{}", "p".repeat((i % 50) as usize)).into_bytes()
}

fn open(dir: &std::path::Path, store: Arc<S3Store>, prefix: &str) -> Db {
    let mut cold = ColdTier::new(store, prefix);
    // Deletion goes through S3 too.
    cold.gc_grace = Some(std::time::Duration::ZERO);
    // Fail fast while the server is down.
    cold.retry.max_attempts = 2;
    cold.retry.base_delay = std::time::Duration::from_millis(10);
    let opts = Options {
        write_buffer_size: 128 << 10,
        target_file_size: 128 << 10,
        block_cache_bytes: 32 << 10,
        cold_tier: Some(cold),
        ..Options::default()
    };
    Db::open(dir, opts).expect("open")
}

fn fill(db: &Db) {
    common::write_in_batches(db, 0..N, 250, |b, i| b.put(key(i), value(i))).expect("write");
    db.compact_range::<&[u8], _>(..).expect("compact");
}

#[test]
fn engine_cold_tier_on_s3() {
    let server = shared();
    let store = Arc::new(server.store("engine").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), store.clone(), "db1");
    fill(&db);
    assert_eq!(db.stats().levels[0].files, 0);
    db.close().unwrap();
    let objects = store.list("db1/").unwrap();
    assert!(!objects.is_empty());
    assert!(objects.iter().all(|o| o.key.starts_with("db1/sst/")));

    let db = open(dir.path(), store.clone(), "db1");
    assert_eq!(db.stats().cold_gets, 0, "opening fetched table data");
    // Lost local metadata is fetched again with a tail GET per table.
    db.close().unwrap();
    let mut metas = 0;
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "meta") {
            std::fs::remove_file(p).unwrap();
            metas += 1;
        }
    }
    assert!(metas > 0);
    let db = open(dir.path(), store.clone(), "db1");
    assert_eq!(
        db.get(key(4_242)).unwrap().as_deref(),
        Some(&value(4_242)[..])
    );
    assert_eq!(db.iter().count(), N as usize); // opens every table
    db.close().unwrap();
    let db = open(dir.path(), store.clone(), "db1");
    assert_eq!(db.stats().cold_gets, 0, "metadata was not saved again");
    let mut gets = 0;
    for i in (0..N).step_by(37) {
        let before = db.stats().cold_gets;
        assert_eq!(db.get(key(i)).unwrap().as_deref(), Some(&value(i)[..]));
        let g = db.stats().cold_gets - before;
        assert!(g <= 1, "lookup {i} made {g} GETs");
        gets += g;
    }
    assert!(gets > 50, "lookups did not reach S3 ({gets} GETs)");
    let before = db.stats().cold_gets;
    for i in 0..2_000 {
        assert_eq!(db.get(format!("absent:{i}")).unwrap(), None);
    }
    assert!(
        db.stats().cold_gets - before <= 60,
        "absent keys went to S3"
    );
    let all: Vec<_> = db.iter().map(|r| r.unwrap()).collect();
    assert_eq!(all.len(), N as usize);
    assert!(all.iter().all(|(k, v)| {
        let i: u32 = std::str::from_utf8(&k[5..]).unwrap().parse().unwrap();
        v[..] == value(i)[..]
    }));

    // Deleting everything and compacting leaves nothing, in the engine or the bucket.
    common::write_in_batches(&db, 0..N, 500, |b, i| b.delete(key(i))).unwrap();
    db.compact_range::<&[u8], _>(..).unwrap();
    assert_eq!(db.iter().count(), 0);
    assert_eq!(db.stats().total_sst_bytes(), 0);
    // With no grace period, the compaction deleted every object before it returned.
    assert_eq!(store.list("db1/").unwrap(), vec![]);
    db.close().unwrap();
}

/// The server goes away mid-life: local and cached data keep serving, cold misses are
/// `Unavailable` (never wrong or missing data), writes go on into L0; when it comes back at the
/// same address, everything is readable and compaction catches up.
#[test]
fn outage_then_recovery() {
    let objects = tempfile::tempdir().unwrap();
    let mut server = S3Server::serve(objects.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = server.addr();
    let store = Arc::new(server.store("outage").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), store.clone(), "db");
    fill(&db);
    // Warm one key's block into the cache.
    assert_eq!(db.get(key(7)).unwrap().as_deref(), Some(&value(7)[..]));

    server.stop();
    assert_eq!(db.get(key(7)).unwrap().as_deref(), Some(&value(7)[..]));
    let mut unavailable = 0;
    for i in (0..N).step_by(97) {
        match db.get(key(i)) {
            Ok(Some(v)) => assert_eq!(v[..], value(i)[..]),
            Ok(None) => panic!("key {i} reported absent during the outage"),
            Err(Error::Unavailable(_)) => unavailable += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(unavailable > 50, "{unavailable} lookups failed");
    // Writes keep landing (memtable, WAL, L0) while compaction cannot upload.
    for i in 0..2_000u32 {
        db.put(format!("new:{i:06}"), value(i)).unwrap();
    }
    db.flush().unwrap();
    assert_eq!(
        db.get("new:000042").unwrap().as_deref(),
        Some(&value(42)[..])
    );

    let _server = S3Server::serve(objects.path(), addr).unwrap();
    for i in (0..N).step_by(97) {
        assert_eq!(db.get(key(i)).unwrap().as_deref(), Some(&value(i)[..]));
    }
    db.compact_range::<&[u8], _>(..).unwrap();
    assert_eq!(db.stats().levels[0].files, 0);
    assert_eq!(db.iter().count(), N as usize + 2_000);
    db.close().unwrap();
}
