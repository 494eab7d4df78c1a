//! Cold tables are named by object keys unique across every database sharing a store (not by a
//! per-database counter), and the manifest records each key: what lets a later split have two
//! ranges name one object, and what keeps a second database on the same prefix, or a second
//! incarnation of this one, from ever overwriting an object.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use lsm::object::{LocalDirStore, ObjectStore};
use lsm::{ColdTier, Db, Options};

fn open(dir: &std::path::Path, store: &Arc<LocalDirStore>, prefix: &str) -> Db {
    let opts = Options {
        write_buffer_size: 32 << 10,
        target_file_size: 32 << 10,
        cold_tier: Some(ColdTier::new(store.clone(), prefix)),
        ..Options::default()
    };
    Db::open(dir, opts).expect("open")
}

/// 3,000 keys with values that do not compress (about 200 KB): a full compaction makes several
/// cold tables of `target_file_size`, however the compression does.
fn fill(db: &Db, gen: u32) {
    common::write_in_batches(db, 0..3_000u32, 100, |b, i| {
        let noise: String = (0..4u64)
            .map(|j| {
                let x = (u64::from(gen) << 40 | u64::from(i) << 8 | j)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                format!("{:016x}", x ^ (x >> 29))
            })
            .collect();
        b.put(format!("k{i:06}"), format!("v{gen}-{i}-{noise}"))
    })
    .expect("write");
    db.compact_range::<&[u8], _>(..).expect("compact");
}

/// The object keys of `db`'s cold tables, checked to be of the form
/// `<prefix>/sst/<number>-<16 hex digits>.sst` with the table's own number.
fn object_keys(db: &Db, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for t in db.tables() {
        let Some(key) = t.object else {
            assert_eq!(t.level, 0, "a table below L0 with no object: {t:?}");
            continue;
        };
        let name = key
            .strip_prefix(&format!("{prefix}/sst/"))
            .and_then(|n| n.strip_suffix(".sst"))
            .unwrap_or_else(|| panic!("object key {key} not under {prefix}/sst/"));
        let (number, nonce) = name.split_once('-').expect("a nonce in the name");
        assert_eq!(number.parse::<u64>().ok(), Some(t.number), "{key}");
        assert!(
            nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        keys.push(key);
    }
    keys
}

#[test]
fn cold_tables_name_unique_objects_that_the_manifest_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let objdir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::open(objdir.path()).unwrap());
    let db = open(dir.path(), &store, "names");
    fill(&db, 1);
    fill(&db, 2);
    let keys = object_keys(&db, "names");
    assert!(keys.len() >= 2, "too few cold tables to judge: {keys:?}");
    assert_eq!(keys.iter().collect::<HashSet<_>>().len(), keys.len());
    let listed: HashSet<String> = store
        .list("names/sst/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    for k in &keys {
        assert!(listed.contains(k), "{k} is not in the store");
    }
    db.close().unwrap();

    // The keys carry 64 random bits no number can be turned back into: a reopened database
    // that finds every table again has read them from its manifest.
    let db = open(dir.path(), &store, "names");
    assert_eq!(object_keys(&db, "names"), keys);
    for i in (0..3_000u32).step_by(97) {
        let v = db.get(format!("k{i:06}")).unwrap().expect("a value");
        assert!(v.starts_with(format!("v2-{i}-").as_bytes()));
    }
    db.close().unwrap();
}

/// Two databases opened at once on one prefix (a misconfiguration, but also what two
/// incarnations of a range could meet) number their tables alike, yet never name one object:
/// nothing either uploads replaces the other's table.
#[test]
fn databases_numbering_alike_never_share_a_key() {
    let objdir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::open(objdir.path()).unwrap());
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Both list the prefix empty at open, so both number from the start.
    let a = open(a_dir.path(), &store, "same");
    let b = open(b_dir.path(), &store, "same");
    fill(&a, 1);
    fill(&b, 2);
    let (a_keys, b_keys) = (object_keys(&a, "same"), object_keys(&b, "same"));
    let number = |k: &String| k[..k.len() - 21].to_string();
    let a_numbers: HashSet<String> = a_keys.iter().map(number).collect();
    assert!(
        b_keys.iter().any(|k| a_numbers.contains(&number(k))),
        "the two databases were meant to reuse numbers: {a_keys:?} {b_keys:?}"
    );
    for k in &b_keys {
        assert!(!a_keys.contains(k), "{k} named by both");
    }
    b.close().unwrap();
    a.close().unwrap();
    // a's tables hold a's values (a fresh open: no cached block can answer for the store).
    let a = open(a_dir.path(), &store, "same");
    for i in (0..3_000u32).step_by(131) {
        let v = a.get(format!("k{i:06}")).unwrap().expect("a value");
        assert!(v.starts_with(format!("v1-{i}-").as_bytes()));
    }
    a.close().unwrap();
}
