//! A WAL fsync that fails (EIO) is never retried as if nothing happened: after it the kernel may
//! have dropped the dirty pages, so a later sync could succeed over a hole and acknowledge
//! writes that a crash then loses. The database refuses every write until it is reopened, and
//! recovery then has every write acknowledged before the failure.
//!
//! The injection is process-wide (`lsm::fail_next_wal_syncs`), hence a test binary of its own.

use lsm::{Db, Options, WriteBatch, WriteOptions};

fn put(db: &Db, i: u32, sync: bool) -> lsm::Result<()> {
    let mut b = WriteBatch::new();
    b.put(format!("key{i:04}"), format!("value{i}"));
    db.write_with(b, &WriteOptions { sync })
}

#[test]
fn a_failed_wal_sync_stops_writes_until_reopen_and_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let db = Db::open(tmp.path(), Options::default()).unwrap();
    for i in 0..20 {
        put(&db, i, i % 2 == 0).unwrap();
    }
    put(&db, 20, true).unwrap();
    lsm::fail_next_wal_syncs(1);
    let e = put(&db, 21, true).expect_err("the sync failed");
    assert!(e.to_string().contains("injected"), "{e}");
    // The next sync would succeed, but the write must be refused anyway, synced or not.
    assert!(
        put(&db, 22, true).is_err(),
        "a write was accepted after a failed sync"
    );
    assert!(
        put(&db, 23, false).is_err(),
        "a write was accepted after a failed sync"
    );
    drop(db);

    let db = Db::open(tmp.path(), Options::default()).unwrap();
    for i in 0..=20 {
        let v = db.get(format!("key{i:04}")).unwrap();
        assert_eq!(
            v.as_deref(),
            Some(format!("value{i}").as_bytes()),
            "acknowledged key{i:04} lost"
        );
    }
    for i in 22..=23 {
        assert_eq!(db.get(format!("key{i:04}")).unwrap(), None, "key{i:04}");
    }
    // Writable again after the reopen.
    put(&db, 24, true).unwrap();
}
