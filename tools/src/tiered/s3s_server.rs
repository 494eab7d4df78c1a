//! An S3-compatible server (s3s-fs) served in-process on loopback, so that `--store s3s`
//! measures the real S3 client path (HTTP, SigV4 signing and checking, XML) without a network
//! or an account.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use lsm::object::{S3Config, S3Store};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

/// Credentials of the in-process server; they protect nothing but make the client sign.
const ACCESS_KEY: &str = "strata-bench-access";
const SECRET_KEY: &str = "strata-bench-secret-key";

/// A running server; stopped when dropped.
pub struct S3sServer {
    addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl S3sServer {
    /// Serves the objects under `root` on 127.0.0.1 at a free port.
    pub fn start(root: &Path) -> Result<S3sServer> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3s-bench")
            .enable_all()
            .build()
            .context("starting the s3s server's runtime")?;
        // s3s-fs's error type is not a std error, so anyhow takes its description.
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| anyhow::anyhow!("serving {} with s3s-fs: {e:?}", root.display()))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("binding the s3s server to 127.0.0.1")?;
        listener
            .set_nonblocking(true)
            .context("making the s3s listener non-blocking")?;
        let addr = listener.local_addr().context("the s3s server's address")?;
        let listener = {
            // `from_std` needs the runtime's reactor.
            let _enter = rt.enter();
            tokio::net::TcpListener::from_std(listener).context("registering the s3s listener")?
        };
        rt.spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // Without TCP_NODELAY every small GET response waits ~40 ms for the client's
                // delayed ACK, which would swamp the latencies measured.
                let _ = socket.set_nodelay(true);
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        Ok(S3sServer { addr, rt: Some(rt) })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client of `bucket` on this server, the bucket created.
    pub fn store(&self, bucket: &str) -> Result<S3Store> {
        let cfg = S3Config::new(bucket)
            .with_endpoint(self.endpoint())
            .with_region("us-east-1")
            .with_static_credentials(ACCESS_KEY, SECRET_KEY);
        let store = S3Store::new(cfg).context("configuring the S3 client")?;
        store
            .create_bucket_if_missing()
            .with_context(|| format!("creating bucket {bucket} on {}", self.endpoint()))?;
        Ok(store)
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}
