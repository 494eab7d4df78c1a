//! API edges: the directory lock (same process and another process), the key and value size
//! limits (rejected with the right error, nothing stored) and the empty key / empty value.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use lsm::{Db, Error, Options, WriteBatch, MAX_KEY_LEN, MAX_VALUE_LEN};

/// Child of `lock_held_across_processes`: reports whether it could open the directory.
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var("STRATA_LOCK_CHILD_DIR") else {
        return;
    };
    match Db::open(&dir, Options::default()) {
        Ok(_) => println!("result: opened"),
        Err(Error::Locked { .. }) => println!("result: locked"),
        Err(e) => println!("result: error {e}"),
    }
}

fn open_in_child(dir: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("STRATA_LOCK_CHILD_DIR", dir)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    // libtest may print "test lock_child ... " on the same line first.
    let lines = BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok);
    let line = lines
        .filter_map(|l| l.find("result: ").map(|at| l[at..].to_string()))
        .next();
    line.unwrap_or_else(|| panic!("child printed no result: {out:?}"))
}

#[test]
fn lock_held_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Options::default()).unwrap();
    db.put("k", "v").unwrap();
    match Db::open(dir.path(), Options::default()) {
        Err(Error::Locked { .. }) => {}
        other => panic!("second open in the same process: {:?}", other.map(|_| ())),
    }
    assert_eq!(open_in_child(dir.path()), "result: locked");
    db.close().unwrap();
    assert_eq!(open_in_child(dir.path()), "result: opened");
    let db = Db::open(dir.path(), Options::default()).expect("open after close");
    assert_eq!(db.get("k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn size_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), common::tiny_options(None)).unwrap();
    let big_key = vec![b'k'; MAX_KEY_LEN + 1];
    let key_err = |r: lsm::Result<()>| match r {
        Err(Error::KeyTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_KEY_LEN + 1, MAX_KEY_LEN))
        }
        other => panic!("oversized key: {other:?}"),
    };
    key_err(db.put(&big_key, "v"));
    key_err(db.put_with_ttl(&big_key, "v", std::time::Duration::from_secs(60)));
    key_err(db.delete(&big_key));
    let big_value = vec![0u8; MAX_VALUE_LEN + 1];
    match db.put("k", &big_value) {
        Err(Error::ValueTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_VALUE_LEN + 1, MAX_VALUE_LEN))
        }
        other => panic!("oversized value: {other:?}"),
    }
    drop(big_value);
    // A batch with one bad op is rejected whole.
    let mut b = WriteBatch::new();
    b.put("fine", "v");
    b.put(&big_key, "v");
    key_err(db.write(b));
    // The largest allowed key works, from the memtable and from an SST, and across a reopen.
    let max_key = vec![b'm'; MAX_KEY_LEN];
    db.put(&max_key, "max").unwrap();
    assert_eq!(db.get(&max_key).unwrap().as_deref(), Some(&b"max"[..]));
    db.flush().unwrap();
    assert_eq!(db.get(&max_key).unwrap().as_deref(), Some(&b"max"[..]));
    db.close().unwrap();
    let db = Db::open(dir.path(), common::tiny_options(None)).unwrap();
    let keys: BTreeSet<_> = common::collect(db.iter())
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([max_key]),
        "only the valid key may be stored"
    );
}

#[test]
fn empty_key_and_empty_value() {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), common::tiny_options(None)).unwrap();
    db.put("", "empty-key").unwrap();
    db.put("a", "").unwrap();
    assert_eq!(db.get("").unwrap().as_deref(), Some(&b"empty-key"[..]));
    assert_eq!(
        db.get("a").unwrap().as_deref(),
        Some(&b""[..]),
        "empty value is not absence"
    );
    for pass in 0..3 {
        let all = common::collect(db.iter()).unwrap();
        assert_eq!(
            all,
            vec![
                (b"".to_vec(), b"empty-key".to_vec()),
                (b"a".to_vec(), vec![])
            ],
            "pass {pass}"
        );
        let incl = common::collect(db.range::<&[u8], _>((Included(&b""[..]), Unbounded))).unwrap();
        assert_eq!(incl.len(), 2, "pass {pass}");
        let excl = common::collect(db.range::<&[u8], _>((Excluded(&b""[..]), Unbounded))).unwrap();
        assert_eq!(excl, vec![(b"a".to_vec(), vec![])], "pass {pass}");
        assert_eq!(common::collect(db.prefix("")).unwrap(), all, "pass {pass}");
        db.flush().unwrap();
    }
    db.delete("").unwrap();
    assert_eq!(db.get("").unwrap(), None);
    db.compact_range::<&[u8], _>(..).unwrap();
    assert_eq!(
        db.get("").unwrap(),
        None,
        "tombstone of the empty key lost in compaction"
    );
    db.put("", "again").unwrap();
    db.close().unwrap();
    let db = Db::open(dir.path(), common::tiny_options(None)).unwrap();
    assert_eq!(db.get("").unwrap().as_deref(), Some(&b"again"[..]));
}
