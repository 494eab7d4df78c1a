//! The in-process s3s-fs server.
//!
//! `TCP_NODELAY` is set on accepted sockets: without it every small GET response waits ~40 ms
//! for the client's delayed ACK, which would make suites slow and latency figures lies.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use lsm::object::{ObjectError, S3Config, S3Store};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Access key the server accepts; it protects nothing but makes clients sign.
pub const ACCESS_KEY: &str = "strata-test-access";
/// Secret key the server accepts.
pub const SECRET_KEY: &str = "strata-test-secret-key";

/// A running server; stopped (listener and connections closed) when dropped.
pub struct S3Server {
    addr: SocketAddr,
    root: PathBuf,
    rt: Option<tokio::runtime::Runtime>,
    _dir: Option<tempfile::TempDir>,
}

impl S3Server {
    /// Starts a server on `127.0.0.1:0` over a fresh temporary directory.
    pub fn start() -> io::Result<S3Server> {
        let dir = tempfile::tempdir()?;
        let mut s = Self::serve(dir.path(), SocketAddr::from(([127, 0, 0, 1], 0)))?;
        s._dir = Some(dir);
        Ok(s)
    }

    /// Serves the objects under `root` at `addr`; given the address of a server that just
    /// stopped, it models an outage that ends.
    pub fn serve(root: &Path, addr: SocketAddr) -> io::Result<S3Server> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3s-loopback")
            .enable_all()
            .build()?;
        // s3s-fs's error type is not a std error: keep its description.
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| io::Error::other(format!("s3s-fs over {}: {e:?}", root.display())))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            // `from_std` needs the runtime's reactor.
            let _enter = rt.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        rt.spawn(async move {
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
        Ok(S3Server {
            addr,
            root: root.to_path_buf(),
            rt: Some(rt),
            _dir: None,
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `http://<addr>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Client configuration for `bucket` on this server, with short deadlines so that fault
    /// tests do not wait long on a stopped server.
    pub fn config(&self, bucket: &str) -> S3Config {
        let mut c = S3Config::new(bucket)
            .with_endpoint(self.endpoint())
            .with_region("us-east-1")
            .with_static_credentials(ACCESS_KEY, SECRET_KEY);
        c.request_timeout = Duration::from_secs(5);
        c.connect_timeout = Duration::from_secs(1);
        c
    }

    /// A client of `bucket` on this server, the bucket created.
    pub fn store(&self, bucket: &str) -> Result<S3Store, ObjectError> {
        let s = S3Store::new(self.config(bucket))?;
        s.create_bucket_if_missing()?;
        Ok(s)
    }

    /// Stops serving: the listener and every open connection close.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Binds `addr`, retrying for a few seconds: rebinding the port of a server that just stopped
/// can briefly fail.
fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let mut tries = 0;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(_) if tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One server shared by every test of a suite (the process's lifetime).
///
/// # Panics
/// When the server cannot start: only tests call this.
pub fn shared() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(|| S3Server::start().expect("starting the loopback S3 server"))
}
