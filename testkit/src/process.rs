//! A `strata` node as a real process, for the suites that test the binaries from outside.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running `strata serve`; killed and reaped when dropped.
pub struct NodeProcess {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bin` (the `strata` binary) with `args` and waits for its first line,
/// `strata: listening on http://ADDR`. Otherwise (say, its address was still taken) the process
/// is killed and the error says what it printed.
pub fn start_node<S: AsRef<OsStr>>(
    bin: &Path,
    args: impl IntoIterator<Item = S>,
) -> Result<NodeProcess, String> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
    let mut line = String::new();
    let read = match child.stdout.take() {
        Some(out) => BufReader::new(out).read_line(&mut line).ok(),
        None => None,
    };
    let addr = read.and_then(|_| {
        line.trim()
            .strip_prefix("strata: listening on http://")?
            .parse()
            .ok()
    });
    match addr {
        Some(addr) => Ok(NodeProcess { child, addr }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("unexpected first line {line:?}"))
        }
    }
}
