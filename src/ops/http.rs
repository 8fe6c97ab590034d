//! A minimal HTTP/1.1 server for the operator endpoints (management API, metrics).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub type Resp = Response<Full<Bytes>>;

/// A parsed request: method, path, query, headers and a bounded body.
pub struct Req {
    pub method: hyper::Method,
    pub path: String,
    pub query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Bodies of operator requests are small (the largest is a config archive); anything larger is
/// refused.
const MAX_BODY: usize = super::archive::MAX_ARCHIVE;

pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

pub fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    respond(status, "application/json", v.to_string())
}

/// Something that accepts byte-stream connections (TCP or Unix listeners).
pub trait Acceptor: Send + 'static {
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept_io(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Acceptor for TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept_io(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

#[cfg(unix)]
impl Acceptor for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_io(&self) -> std::io::Result<Self::Io> {
        self.accept().await.map(|(s, _)| s)
    }
}

/// Serves `handler` on `listener` until the task is aborted.
pub async fn serve<L, H, F>(listener: L, handler: Arc<H>)
where
    L: Acceptor,
    H: Fn(Req) -> F + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    loop {
        let Ok(stream) = listener.accept_io().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(serve_conn(stream, handler.clone()));
    }
}

async fn serve_conn<S, H, F>(stream: S, h: Arc<H>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Req) -> F + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let h = h.clone();
        async move { Ok::<_, Infallible>(dispatch(req, h).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

async fn dispatch<H, F>(req: Request<Incoming>, h: Arc<H>) -> Resp
where
    H: Fn(Req) -> F,
    F: Future<Output = Resp>,
{
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                "request body too large",
            )
        }
    };
    h(Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers: parts.headers,
        body,
    })
    .await
}

/// `t` as RFC 3339 UTC, to the second (`2026-12-02T11:45:00Z`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
