//! Sample members: tiny web servers farmgate starts itself for the demo farm of the default
//! config, so a first run shows balancing without any real server. Each answers with a page
//! naming itself, linking to the Host it was asked for (the internal site name, as a real
//! intranet application would), and a health page at `/status.htm`.
//!
//! These are for demos and tests only; they are started from the config's `[[sample_servers]]`
//! section, never implied by a farm.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::SampleServerConfig;

/// Binds the sample server and serves it until the returned task is aborted.
pub async fn start(config: &SampleServerConfig) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(config.bind).await?;
    let addr = listener.local_addr()?;
    let name: Arc<str> = Arc::from(config.name.as_str());
    let served = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (name, served) = (Arc::clone(&name), Arc::clone(&served));
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                    std::future::ready(Ok::<_, Infallible>(page(&name, n, &req)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

fn page(name: &str, n: u64, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    };
    let (status, content_type, body) = match req.uri().path() {
        "/status.htm" | "/health" => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "OK\n".to_string(),
        ),
        path => {
            let host = html_escape(header("host"));
            let body = format!(
                "<!doctype html>\n<html><head><title>Hello from {name}</title></head>\n<body>\n\
                 <h1>Hello from {name}</h1>\n\
                 <p>This is sample member <b>{name}</b>, request {n} it served.</p>\n\
                 <p>You asked for <code>{path}</code>; the proxy asked for host <code>{host}</code>\n\
                 on behalf of <code>{xff}</code>.</p>\n\
                 <p><a href=\"http://{host}/next.htm\">An absolute link the member wrote with its internal name</a> (link translation points it at the public name)</p>\n\
                 </body></html>\n",
                name = html_escape(name),
                path = html_escape(path),
                xff = html_escape(header("x-forwarded-for")),
            );
            (StatusCode::OK, "text/html; charset=utf-8", body)
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = header::HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-served-by", v);
    }
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
