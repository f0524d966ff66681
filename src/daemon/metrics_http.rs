//! The `/metrics` endpoint: Prometheus text format over HTTP/1.1 (hyper), on the address of
//! `--metrics-addr`. The socket is bound before the daemon forks, so a port in use is one
//! clear startup error; the address actually bound (port 0 picks one) is written to
//! `<cache-dir>/metrics.addr`, where `wombatfs stats` finds it.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use crate::fs::core::FsCore;

/// The file in the cache dir naming the bound address.
pub fn addr_file(cache_dir: &Path) -> PathBuf {
    cache_dir.join("metrics.addr")
}

/// Bind the endpoint's socket (before forking: a port in use fails the mount at once).
pub fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let l = TcpListener::bind(addr).with_context(|| {
        format!("cannot serve metrics on {addr} (--metrics-addr): another process (another mount?) may hold the port; give each mount its own port, 127.0.0.1:0 for any free one, or off")
    })?;
    l.set_nonblocking(true).context("metrics socket")?;
    Ok(l)
}

/// Serve `/metrics` on the runtime until the process ends; records the bound address.
pub fn serve(rt: &tokio::runtime::Runtime, listener: TcpListener, core: Arc<FsCore>) -> Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let file = addr_file(core.cache_dir());
    std::fs::write(&file, format!("{addr}\n")).with_context(|| format!("cannot write {}", file.display()))?;
    let listener = {
        let _enter = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    rt.spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let core = core.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| answer(req, core.clone()));
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
                    tracing::debug!(error = %e, "metrics endpoint: connection ended with an error");
                }
            });
        }
    });
    tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
    Ok(addr)
}

async fn answer(req: Request<hyper::body::Incoming>, core: Arc<FsCore>) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_str(ctype).expect("a valid content type"));
        r
    };
    if req.method() != hyper::Method::GET {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".into()));
    }
    match req.uri().path() {
        "/metrics" => {
            // the gauges read the tree and the index directory: off the async workers
            let text = tokio::task::spawn_blocking(move || crate::metrics::get().render(|m| core.refresh_metrics(m))).await;
            Ok(match text {
                Ok(t) => reply(StatusCode::OK, prometheus_client::encoding::prometheus_text::CONTENT_TYPE, t),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
            })
        }
        "/" => Ok(reply(StatusCode::OK, "text/plain", "wombatfs: metrics at /metrics\n".into())),
        _ => Ok(reply(StatusCode::NOT_FOUND, "text/plain", "not found; metrics are at /metrics\n".into())),
    }
}
