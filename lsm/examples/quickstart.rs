//! Opens a database, writes and reads a few keys, scans forward and backward, takes a snapshot,
//! and prints the engine's statistics.
//!
//! Run with `cargo run -p lsm --example quickstart [DIR]`.

use std::time::Duration;

use lsm::{Db, Options, WriteBatch, WriteOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("lsm-quickstart-{}", std::process::id())),
    };
    let db = Db::open(&dir, Options::default())?;

    db.put("user:1", "ada")?;
    db.put("user:2", "grace")?;
    db.put_with_ttl("session:abc", "token", Duration::from_secs(60))?;

    // A batch applies atomically; `sync` waits for the disk.
    let mut batch = WriteBatch::new();
    batch.put("user:3", "barbara");
    batch.delete("user:1");
    db.write_with(batch, &WriteOptions { sync: true })?;

    let snap = db.snapshot();
    db.put("user:2", "grace hopper")?;

    println!("user:2 now = {:?}", db.get("user:2")?);
    println!("user:2 in snapshot = {:?}", snap.get("user:2")?);

    println!("users, forward:");
    for item in db.prefix("user:") {
        let (k, v) = item?;
        println!(
            "  {} = {}",
            String::from_utf8_lossy(&k),
            String::from_utf8_lossy(&v)
        );
    }
    println!("users, reverse:");
    for item in db.prefix("user:").rev() {
        let (k, _) = item?;
        println!("  {}", String::from_utf8_lossy(&k));
    }
    drop(snap);

    db.flush()?;
    db.compact_range::<&[u8], _>(..)?;
    let s = db.stats();
    for (i, l) in s.levels.iter().enumerate().filter(|(_, l)| l.files > 0) {
        println!("L{i}: {} files, {} bytes", l.files, l.bytes);
    }
    println!("write amplification {:.2}", s.write_amplification);
    db.close()?;
    println!("database in {}", dir.display());
    Ok(())
}
