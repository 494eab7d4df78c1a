//! `Db::get_without_io` answers from memory only: memtables, the filters of open tables and the
//! block cache; anything else (a block not cached, a table not open) is left to `get`.

use lsm::{Db, Options};

#[test]
fn answers_from_memory_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        block_cache_bytes: 8 << 20,
        ..Options::default()
    };
    let db = Db::open(dir.path(), opts.clone()).expect("open");
    for i in 0..2_000u32 {
        db.put(format!("k{i:05}"), format!("v{i}")).expect("put");
    }
    // In the memtable.
    let hit = db
        .get_without_io("k00007")
        .expect("in memory")
        .expect("read");
    assert_eq!(hit.as_deref(), Some(&b"v7"[..]));
    db.delete("gone").expect("delete");
    assert_eq!(
        db.get_without_io("gone")
            .expect("a tombstone")
            .expect("read"),
        None
    );
    db.flush().expect("flush");
    drop(db);

    // Reopened: the data are in a table, nothing of it cached.
    let db = Db::open(dir.path(), opts).expect("reopen");
    db.put("fresh", "v").expect("put");
    assert_eq!(
        db.get_without_io("fresh")
            .expect("in the memtable")
            .expect("read")
            .as_deref(),
        Some(&b"v"[..])
    );
    assert!(
        db.get_without_io("k00042").is_none(),
        "a block not in the cache needs I/O"
    );
    assert_eq!(db.get("k00042").expect("get").as_deref(), Some(&b"v42"[..]));
    // The table is open and its block cached now.
    let cached = db.get_without_io("k00042").expect("cached").expect("read");
    assert_eq!(cached.as_deref(), Some(&b"v42"[..]));
    // The filter of the open table rules a missing key out (bloom false positives aside: of 50
    // absent keys nearly all are ruled out without I/O).
    let ruled_out = (0..50)
        .filter(|i| matches!(db.get_without_io(format!("absent-{i}")), Some(Ok(None))))
        .count();
    assert!(
        ruled_out >= 40,
        "{ruled_out} of 50 absent keys answered from memory"
    );
    // Whatever answers without I/O agrees with get.
    for i in (0..2_000u32).step_by(97) {
        let k = format!("k{i:05}");
        if let Some(r) = db.get_without_io(&k) {
            assert_eq!(r.expect("read"), db.get(&k).expect("get"));
        }
    }
}
