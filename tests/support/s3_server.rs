#![allow(dead_code)] // each suite uses a different part
//! A real S3-compatible server (`s3s-fs`) served in-process on loopback, for the suites that test
//! the engine against S3: SigV4 authentication on, objects as files in a temporary directory.
//!
//! `TCP_NODELAY` is set on accepted sockets: without it every small GET response waits ~40 ms
//! for the client's delayed ACK, which would make the suites slow and the latency figures lies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use lsm::object::{S3Config, S3Store};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

pub const ACCESS_KEY: &str = "strata-test-access";
pub const SECRET_KEY: &str = "strata-test-secret-key";

/// A running server; stopped (connections and listener closed) when dropped.
pub struct S3Server {
    addr: SocketAddr,
    root: PathBuf,
    rt: Option<tokio::runtime::Runtime>,
    _dir: Option<tempfile::TempDir>,
}

impl S3Server {
    /// Starts a server on `127.0.0.1:0` over a fresh temporary directory.
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self::serve(dir.path(), "127.0.0.1:0".parse().unwrap());
        s._dir = Some(dir);
        s
    }

    /// Serves `root` at `addr` (an address a stopped server used, to model an outage that ends).
    pub fn serve(root: &Path, addr: SocketAddr) -> S3Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3s-test")
            .enable_all()
            .build()
            .expect("runtime");
        let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let listener = {
            // Rebinding the port of a server that just stopped can briefly fail.
            let mut tries = 0;
            loop {
                match std::net::TcpListener::bind(addr) {
                    Ok(l) => break l,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        eprintln!("rebinding {addr}: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    Err(e) => panic!("bind {addr}: {e}"),
                }
            }
        };
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            addr,
            root: root.to_path_buf(),
            rt: Some(rt),
            _dir: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Client configuration for `bucket` on this server, with short deadlines so fault tests
    /// do not wait long on a stopped server.
    pub fn config(&self, bucket: &str) -> S3Config {
        let mut c = S3Config::new(bucket)
            .with_endpoint(self.endpoint())
            .with_region("us-east-1")
            .with_static_credentials(ACCESS_KEY, SECRET_KEY);
        c.request_timeout = std::time::Duration::from_secs(5);
        c.connect_timeout = std::time::Duration::from_secs(1);
        c
    }

    /// A store on `bucket`, creating the bucket.
    pub fn store(&self, bucket: &str) -> S3Store {
        let s = S3Store::new(self.config(bucket)).expect("S3 store");
        s.create_bucket_if_missing().expect("create bucket");
        s
    }

    /// Stops serving: the listener and every open connection close.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(2));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One server shared by every test of a suite.
pub fn shared() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(S3Server::start)
}
