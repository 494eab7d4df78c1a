//! The node with its tables in S3 (a real S3-compatible server on loopback: s3s-fs), and its
//! options from a TOML file.

mod common;

use common::{request, start};
use testkit::{S3Server, ACCESS_KEY, SECRET_KEY};

/// Files under `dir`, recursively.
fn files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        files(&p)
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn tables_go_to_the_s3_bucket_and_survive_a_kill() {
    let s3 = S3Server::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // Options from a file, credentials from the environment of the test (the file may not
    // need to hold secrets).
    let config = tmp.path().join("strata.toml");
    std::fs::write(
        &config,
        format!(
            "s3_bucket = \"tables\"\ns3-endpoint = \"{}\"\ns3_region = \"us-east-1\"\n\
             s3_create_bucket = true\nobject_prefix = \"g1\"\nmemtable_mb = 1\n",
            s3.endpoint()
        ),
    )
    .unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--s3-access-key-id",
        ACCESS_KEY,
        "--s3-secret-access-key",
        SECRET_KEY,
    ];
    let data = tmp.path().join("data");
    let mut n = start(&data, &args);
    let value = vec![b'v'; 2000];
    let acked = common::put_items(n.addr, 1500, &value);
    // Seals of 1 MiB memtables were uploaded: the bucket holds tables, the data directory none.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while files(&s3.root().join("tables")) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no object in the bucket"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !data.join("objects").exists(),
        "a local object store was used"
    );

    n.child.kill().unwrap();
    n.child.wait().unwrap();
    drop(n);
    let n = start(&data, &args);
    for (i, version) in &acked {
        let r = request(n.addr, "GET", &format!("/kv/item-{i}"), &[], b"");
        assert_eq!((r.status, r.version()), (200, *version), "item-{i}");
        assert_eq!(r.body, value);
    }
}

#[test]
fn a_config_file_with_an_unknown_option_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisten_port = 8080\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown option \"listen_port\""), "{err}");
}
