//! `strata-bench http` against a real `strata` process on loopback: every phase runs and counts
//! only the answers it expects, and failed requests (a wrong token) fail the run instead of
//! passing for a measurement.
//!
//! The node's binary comes from the same target directory: `cargo test --workspace` builds it
//! for the node's own suites.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use testkit::process::{start_node, NodeProcess};

const BENCH: &str = env!("CARGO_BIN_EXE_strata-bench");

fn strata_bin() -> PathBuf {
    let p = Path::new(BENCH).with_file_name("strata");
    assert!(
        p.exists(),
        "{} is missing: build the node first (`cargo test --workspace` or `cargo build -p node`)",
        p.display()
    );
    p
}

fn start(dir: &Path) -> NodeProcess {
    let mut args: Vec<&OsStr> = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--memtable-mb",
        "1",
        "--token",
        "bench-token",
        "--link-rate-per-minute",
        "0",
        "--data-dir",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    args.push(dir.as_os_str());
    start_node(&strata_bin(), args).unwrap_or_else(|e| panic!("{e}"))
}

/// The JSON report a run wrote.
fn report(json: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

fn bench(node: &NodeProcess, token: &str, phases: &str, json: &Path) -> Output {
    let target = format!("http://{}", node.addr);
    Command::new(BENCH)
        .args(["http", "--target", &target, "--token", token])
        .args([
            "--phases",
            phases,
            "--connections",
            "1,3",
            "--seconds",
            "0.3",
        ])
        .args(["--warmup", "2", "--keys", "50", "--links", "20"])
        .arg("--json")
        .arg(json)
        .output()
        .expect("run strata-bench")
}

#[test]
fn every_phase_runs_against_a_node_and_counts_what_it_expects() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(&tmp.path().join("data"));
    let json = tmp.path().join("http.json");
    let out = bench(&node, "bench-token", "put,get,ping,redirect,create", &json);
    assert!(
        out.status.success(),
        "strata-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = report(&json);
    let rows = report["results"].as_array().expect("results");
    let got: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["phase"].as_str().unwrap().to_string(),
                r["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = ["put", "get", "ping", "redirect", "create"]
        .iter()
        .flat_map(|p| [(p.to_string(), 1), (p.to_string(), 3)])
        .collect();
    assert_eq!(got, want);
    for r in rows {
        assert_eq!(r["errors"], 0, "{r}");
        assert!(r["ops"].as_u64().unwrap() > 0, "{r}");
        assert!(r["ops_per_sec"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["latency"].is_object(), "{r}");
    }
    // The token is not written to the report.
    assert!(!report.to_string().contains("bench-token"));
}

#[test]
fn failed_requests_fail_the_run_and_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(&tmp.path().join("data"));
    let json = tmp.path().join("http.json");
    let out = bench(&node, "wrong-token", "ping,put", &json);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a run of refused puts passed");
    assert!(stderr.contains("401"), "{stderr}");
    // The phases still ran and were written: pings need no token, every put was refused.
    for r in report(&json)["results"].as_array().unwrap() {
        let errors = r["errors"].as_u64().unwrap();
        match r["phase"].as_str().unwrap() {
            "ping" => assert_eq!(errors, 0, "{r}"),
            _ => assert!(errors > 0 && r["ops"] == 0, "{r}"),
        }
    }
}
