//! Network partitions between processes on loopback, without root: one TCP proxy in front of
//! each node, which knows the calling node by its source address and can black-hole the traffic
//! of chosen pairs.
//!
//! Node `i` is started with its outgoing connections bound to [`Links::source_ip`]`(i)` (a
//! distinct address of 127.0.0.0/8) and advertises its proxy's address ([`Links::proxy_addr`])
//! to the others, so every byte between two nodes crosses the destination's proxy, which sees
//! from the source address who sends it. A cut pair's bytes are held, not refused: the sender
//! sees a peer that stopped answering (as with a partition or a paused process, unlike a killed
//! one, whose connections are refused at once); on heal they flow again, late, as TCP delivers
//! data retransmitted across a healed partition. Connections from other addresses (the test's
//! clients) are never cut.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How often a held or idle pump looks at the cuts and the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// The proxies of a group of nodes `1..=n` and the pairs currently cut.
pub struct Links {
    proxies: Vec<SocketAddr>,
    /// Where each node really listens (set once it started).
    upstream: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    /// Unordered pairs of node ids that cannot talk.
    cut: Arc<Mutex<HashSet<(u64, u64)>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Links {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

impl Links {
    /// Starts one proxy per node `1..=n`, on free loopback ports.
    pub fn start(n: u64) -> std::io::Result<Links> {
        let upstream = Arc::new(Mutex::new(vec![None; n as usize]));
        let cut = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut proxies = Vec::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            listener.set_nonblocking(true)?;
            proxies.push(listener.local_addr()?);
            let (upstream, cut, stop) = (upstream.clone(), cut.clone(), stop.clone());
            thread::spawn(move || accept_loop(id, listener, upstream, cut, stop));
        }
        Ok(Links {
            proxies,
            upstream,
            cut,
            stop,
        })
    }

    /// The address node `id`'s peers reach it at (to advertise and to name in memberships).
    pub fn proxy_addr(&self, id: u64) -> SocketAddr {
        self.proxies[(id - 1) as usize]
    }

    /// The address node `id` binds its outgoing connections to.
    pub fn source_ip(id: u64) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + id as u8))
    }

    /// Node `id` listens at `addr` (again, after a restart).
    pub fn set_upstream(&self, id: u64, addr: SocketAddr) {
        self.upstream.lock().unwrap_or_else(|p| p.into_inner())[(id - 1) as usize] = Some(addr);
    }

    /// Cuts node `id` off from every other node.
    pub fn isolate(&self, id: u64) {
        let n = self.proxies.len() as u64;
        let mut cut = self.cut.lock().unwrap_or_else(|p| p.into_inner());
        for other in (1..=n).filter(|o| *o != id) {
            cut.insert(pair(id, other));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// The node id a source address belongs to, if it is one of [`Links::source_ip`]'s.
fn node_of(ip: IpAddr) -> Option<u64> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            (a == 127 && b == 0 && c == 0 && d > 10).then(|| u64::from(d - 10))
        }
        IpAddr::V6(_) => None,
    }
}

fn accept_loop(
    dst: u64,
    listener: TcpListener,
    upstream: Arc<Mutex<Vec<Option<SocketAddr>>>>,
    cut: Arc<Mutex<HashSet<(u64, u64)>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let (conn, from) = match listener.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(POLL);
                continue;
            }
            Err(_) => continue,
        };
        let src = node_of(from.ip());
        let blocked = {
            let cut = cut.clone();
            move || {
                src.is_some_and(|s| {
                    cut.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(&pair(s, dst))
                })
            }
        };
        let to = upstream.lock().unwrap_or_else(|p| p.into_inner())[(dst - 1) as usize];
        let stop = stop.clone();
        thread::spawn(move || {
            // A connection made across a cut waits for the heal, as a SYN would be retried.
            while blocked() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                thread::sleep(POLL);
            }
            let Some(to) = to else { return };
            let Ok(server) = TcpStream::connect(to) else {
                return;
            };
            let _ = conn.set_nonblocking(false);
            let _ = server.set_nodelay(true);
            let _ = conn.set_nodelay(true);
            let (Ok(c2), Ok(s2)) = (conn.try_clone(), server.try_clone()) else {
                return;
            };
            let b2 = blocked.clone();
            let st2 = stop.clone();
            thread::spawn(move || pump(c2, s2, b2, st2));
            pump(server, conn, blocked, stop);
        });
    }
}

/// Copies `from` to `to` until either closes, holding the bytes while the link is cut.
fn pump(mut from: TcpStream, mut to: TcpStream, blocked: impl Fn() -> bool, stop: Arc<AtomicBool>) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        while blocked() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            thread::sleep(POLL);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// One TCP proxy in front of a single server (an object store, say) that can hold every byte
/// in both directions: the server then seems to hang, as a stalled S3 endpoint does, without
/// refusing anything.
pub struct Gate {
    addr: SocketAddr,
    held: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Gate {
    /// Starts the proxy to `upstream` on a free loopback port.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Gate> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let held = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (held.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let conn = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(POLL);
                        continue;
                    }
                    Err(_) => continue,
                };
                let (h, s) = (h.clone(), s.clone());
                thread::spawn(move || {
                    let Ok(server) = TcpStream::connect(upstream) else {
                        return;
                    };
                    let _ = conn.set_nonblocking(false);
                    let (Ok(c2), Ok(s2)) = (conn.try_clone(), server.try_clone()) else {
                        return;
                    };
                    let (h2, st2) = (h.clone(), s.clone());
                    thread::spawn(move || pump(c2, s2, move || h2.load(Ordering::SeqCst), st2));
                    pump(server, conn, move || h.load(Ordering::SeqCst), s);
                });
            }
        });
        Ok(Gate { addr, held, stop })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds (`true`) or lets through (`false`) every byte from now on.
    pub fn hold(&self, held: bool) {
        self.held.store(held, Ordering::SeqCst);
    }
}
