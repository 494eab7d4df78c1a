use std::path::Path;

use super::segment::{segment_path, RECORD_HEADER, SEGMENT_HEADER};
use super::{DiskCache, DiskCacheOptions, TableId};

fn table(n: u64) -> TableId {
    TableId::new(&format!("db/sst/{n:06}.sst"), 0x5eed ^ n)
}

/// Block contents unique to (table, offset), of a length that varies with both.
fn block(n: u64, offset: u64) -> Vec<u8> {
    let len = 100 + ((n * 7919 + offset) % 900) as usize;
    let mut v = format!("table {n} block {offset}:").into_bytes();
    let mut x = ((n << 32) | offset) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

fn get(c: &DiskCache, n: u64, offset: u64) -> Option<Vec<u8>> {
    let len = block(n, offset).len() as u64;
    c.get(&table(n), offset, len).map(|b| b.to_vec())
}

fn put(c: &DiskCache, n: u64, offset: u64) {
    c.insert(&table(n), offset, &block(n, offset));
}

fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcseg"))
        .collect();
    v.sort();
    v
}

fn file_bytes(dir: &Path) -> u64 {
    segment_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).expect("stat").len())
        .sum()
}

/// Position of record `i` (0-based) in a segment holding blocks `(n, offsets[..])` in order.
fn record_pos(n: u64, offsets: &[u64], i: usize) -> u64 {
    let key_len = format!("db/sst/{n:06}.sst").len();
    SEGMENT_HEADER
        + offsets[..i]
            .iter()
            .map(|&o| (RECORD_HEADER + key_len + block(n, o).len()) as u64)
            .sum::<u64>()
}

#[test]
fn insert_then_get_round_trips_and_only_the_same_block_matches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = DiskCache::open(&DiskCacheOptions::new(dir.path(), 8 << 20)).expect("open");
    assert_eq!(get(&c, 1, 0), None);
    for o in [0, 4096, 8192] {
        put(&c, 1, o);
    }
    put(&c, 2, 0);
    for o in [0, 4096, 8192] {
        assert_eq!(get(&c, 1, o), Some(block(1, o)));
    }
    assert_eq!(get(&c, 2, 0), Some(block(2, 0)));
    assert_eq!(get(&c, 2, 4096), None, "another table's offset");
    // Same key, other contents (a recreated database reusing the key): a miss.
    let reused = TableId::new("db/sst/000001.sst", 12345);
    assert_eq!(c.get(&reused, 0, block(1, 0).len() as u64), None);
    // A length other than the block's: a miss, and the entry is dropped.
    assert_eq!(c.get(&table(2), 0, 3), None);
    assert_eq!(get(&c, 2, 0), None);
    // Inserting a block that is there already adds nothing.
    let before = c.usage();
    put(&c, 1, 0);
    assert_eq!(c.usage(), before);
    assert_eq!(c.inserts(), 4);
    assert_eq!(c.hits(), 4);
    assert_eq!(c.usage(), file_bytes(dir.path()));
}

#[test]
fn capacity_bound_is_kept_by_dropping_the_oldest_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (capacity, segment) = (64 << 10, 16 << 10);
    let c = DiskCache::open_with(dir.path(), capacity, segment).expect("open");
    let n = 500;
    for o in 0..n {
        put(&c, 7, o * 4096);
        let on_disk = file_bytes(dir.path());
        // Tighter than capacity + one segment: room is made before each append.
        assert!(
            on_disk <= capacity,
            "{on_disk} bytes on disk after {o} inserts"
        );
        assert_eq!(c.usage(), on_disk);
    }
    assert!(c.evictions() > 0);
    assert!(segment_files(dir.path()).len() <= 5);
    // The newest blocks are there, the oldest are not: FIFO.
    assert_eq!(get(&c, 7, (n - 1) * 4096), Some(block(7, (n - 1) * 4096)));
    assert_eq!(get(&c, 7, 0), None);
    let held = (0..n).filter(|&o| get(&c, 7, o * 4096).is_some()).count() as u64;
    assert_eq!(held, c.inserts() - c.evictions());
    // A block larger than a segment is not cached at all.
    c.insert(&table(8), 0, &vec![1u8; segment as usize]);
    assert_eq!(c.get(&table(8), 0, segment), None);
}

#[test]
fn survives_reopen_and_trims_to_a_smaller_capacity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = DiskCache::open_with(dir.path(), 1 << 20, 32 << 10).expect("open");
    for o in 0..200 {
        put(&c, 3, o * 4096);
    }
    let usage = c.usage();
    drop(c);
    let c = DiskCache::open_with(dir.path(), 1 << 20, 32 << 10).expect("reopen");
    assert_eq!(c.usage(), usage);
    for o in 0..200 {
        assert_eq!(get(&c, 3, o * 4096), Some(block(3, o * 4096)), "block {o}");
    }
    // New inserts go to a new segment, and are there after another reopen too.
    put(&c, 4, 0);
    drop(c);
    let c = DiskCache::open_with(dir.path(), 64 << 10, 32 << 10).expect("reopen smaller");
    assert!(c.usage() <= 64 << 10, "usage {}", c.usage());
    assert_eq!(c.usage(), file_bytes(dir.path()));
    assert_eq!(get(&c, 4, 0), Some(block(4, 0)));
    assert_eq!(get(&c, 3, 0), None);
}

#[test]
fn a_flipped_byte_is_a_miss_never_wrong_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let offsets = [0, 4096, 8192, 12288];
    let c = DiskCache::open(&DiskCacheOptions::new(dir.path(), 8 << 20)).expect("open");
    for o in offsets {
        put(&c, 5, o);
    }
    let seg = segment_files(dir.path()).pop().expect("a segment");
    let key_len = "db/sst/000005.sst".len() as u64;
    // Damage the data of record 1 while the cache is open: a miss, counted, and the entry gone.
    let at = record_pos(5, &offsets, 1) + RECORD_HEADER as u64 + key_len + 10;
    common_flip(&seg, at);
    assert_eq!(get(&c, 5, 4096), None);
    assert_eq!(c.errors(), 1);
    assert_eq!(get(&c, 5, 0), Some(block(5, 0)));
    // Re-inserting it works: the new record goes after the damaged one.
    put(&c, 5, 4096);
    assert_eq!(get(&c, 5, 4096), Some(block(5, 4096)));
    drop(c);
    // After a reopen the damaged data is found again only when read: the re-inserted copy wins.
    let c = DiskCache::open(&DiskCacheOptions::new(dir.path(), 8 << 20)).expect("reopen");
    for o in offsets {
        assert_eq!(get(&c, 5, o), Some(block(5, o)), "block {o}");
    }
    drop(c);
    // Damage the header of record 2: the scan stops there, so records 2 and 3 are gone.
    let at = record_pos(5, &offsets, 2) + 26;
    common_flip(&seg, at);
    let c = DiskCache::open(&DiskCacheOptions::new(dir.path(), 8 << 20)).expect("reopen");
    assert_eq!(get(&c, 5, 0), Some(block(5, 0)));
    assert_eq!(get(&c, 5, 8192), None);
    assert_eq!(get(&c, 5, 12288), None);
    assert_eq!(c.errors(), 0, "dropped at open, not found damaged on read");
}

#[test]
fn a_torn_tail_is_cut_and_the_rest_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let offsets = [0, 4096, 8192, 12288, 16384];
    let c = DiskCache::open(&DiskCacheOptions::new(dir.path(), 8 << 20)).expect("open");
    for o in offsets {
        put(&c, 6, o);
    }
    drop(c);
    let seg = segment_files(dir.path()).pop().expect("a segment");
    let len = std::fs::metadata(&seg).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(len - 50).expect("truncate");
    drop(f);
    let c = DiskCache::open(&DiskCacheOptions::new(dir.path(), 8 << 20)).expect("reopen");
    for &o in &offsets[..4] {
        assert_eq!(get(&c, 6, o), Some(block(6, o)));
    }
    assert_eq!(get(&c, 6, 16384), None);
    assert_eq!(
        std::fs::metadata(&seg).expect("stat").len(),
        record_pos(6, &offsets, 4),
        "the torn record is cut off"
    );
    assert_eq!(c.usage(), file_bytes(dir.path()));
    // A segment cut inside its header holds nothing and is removed.
    drop(c);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(5).expect("truncate");
    drop(f);
    let c = DiskCache::open(&DiskCacheOptions::new(dir.path(), 8 << 20)).expect("reopen");
    assert_eq!(c.usage(), 0);
    assert!(!seg.exists());
}

#[test]
fn one_open_cache_per_directory_and_unknown_files_are_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), b"mine").expect("write");
    std::fs::write(segment_path(dir.path(), 99), b"not a segment").expect("write");
    let o = DiskCacheOptions::new(dir.path(), 8 << 20);
    let c = DiskCache::open(&o).expect("open");
    match DiskCache::open(&o) {
        Err(crate::Error::InvalidArgument(m)) => assert!(m.contains("in use"), "{m}"),
        other => panic!("a second open of the directory: {other:?}"),
    }
    put(&c, 1, 0);
    // Closing releases the directory even while the cache object lives on (tables of a closed
    // database may hold it), and turns it off.
    c.close();
    let c2 = DiskCache::open(&o).expect("open after close");
    assert_eq!(get(&c2, 1, 0), Some(block(1, 0)));
    assert_eq!(get(&c, 1, 0), None);
    put(&c, 2, 0);
    assert_eq!(get(&c2, 2, 0), None, "a closed cache wrote");
    drop((c, c2));
    assert_eq!(
        std::fs::read(dir.path().join("notes.txt")).expect("kept"),
        b"mine"
    );
    assert!(!segment_path(dir.path(), 99).exists());
    let c = DiskCache::open(&o).expect("open after the first closed");
    assert_eq!(get(&c, 1, 0), Some(block(1, 0)));
    assert!(
        segment_files(dir.path())
            .iter()
            .all(|p| p > &segment_path(dir.path(), 99)),
        "numbers are never reused"
    );
}

#[test]
fn concurrent_inserts_and_gets_never_see_wrong_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small enough that segments are evicted while readers are in them.
    let c = DiskCache::open_with(dir.path(), 256 << 10, 32 << 10).expect("open");
    let threads = 6u64;
    let per = 600u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            let c = &c;
            s.spawn(move || {
                for i in 0..per {
                    put(c, t, i * 4096);
                    // Tables 0..threads, offsets others are inserting now or did earlier.
                    let (n, o) = ((t + i) % threads, (i / 2) * 4096);
                    if let Some(b) = get(c, n, o) {
                        assert_eq!(b, block(n, o), "table {n} block {o}");
                    }
                    if let Some(b) = get(c, t, i * 4096) {
                        assert_eq!(b, block(t, i * 4096));
                    }
                }
            });
        }
    });
    assert_eq!(c.inserts(), threads * per);
    assert!(c.evictions() > 0);
    assert!(c.hits() > threads * per / 2, "{} hits", c.hits());
    assert_eq!(c.errors(), 0);
    assert_eq!(c.usage(), file_bytes(dir.path()));
    assert!(c.usage() <= 256 << 10);
}

fn common_flip(path: &Path, at: u64) {
    let mut d = std::fs::read(path).expect("read");
    d[at as usize] ^= 0x40;
    std::fs::write(path, d).expect("write");
}
