//! The pooled upstream HTTP clients of `internal.driver.upstream`: one that verifies TLS
//! against the system's roots and one for `skip_verify`, each keeping idle connections per
//! host. `https` upstreams choose HTTP/2 or HTTP/1.1 by ALPN; plain ones speak HTTP/1.1. Host
//! names resolve through Vane's resolver.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::body::Body;
use crate::runtime::Runtime;

pub type Upstreams = Client<Connector, Body>;

/// A connection to an upstream, plain or TLS.
pub enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(_) => Connected::new(),
            Stream::Tls(s) => {
                if s.inner().get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens upstream connections: Vane's DNS, the connect timeout, TCP_NODELAY, then TLS with
/// ALPN `h2`, `http/1.1` for `https`.
#[derive(Clone)]
pub struct Connector {
    rt: Arc<Runtime>,
    tls: tokio_rustls::TlsConnector,
}

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.open(&uri).await })
    }
}

impl Connector {
    /// A connector; `h1_only` offers only `http/1.1` by ALPN (WebSocket upgrades).
    pub fn new(rt: Arc<Runtime>, skip_verify: bool, h1_only: bool) -> Result<Self, rustls::Error> {
        let mut cfg = tls_config(skip_verify)?;
        if h1_only {
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        Ok(Self {
            rt,
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        })
    }

    /// Opens a connection to the host of `uri`.
    pub async fn open(&self, uri: &Uri) -> io::Result<Stream> {
        let host = uri
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL without a host"))?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = connect_tcp(&self.rt, host, port).await?;
        if !https {
            return Ok(Stream::Plain(TokioIo::new(tcp)));
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = tokio::time::timeout(
            self.rt.settings.connect_timeout,
            self.tls.connect(name, tcp),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        Ok(Stream::Tls(Box::new(TokioIo::new(tls))))
    }
}

/// A TCP connection to `host:port` through Vane's resolver, trying each address in turn.
pub async fn connect_tcp(rt: &Runtime, host: &str, port: u16) -> io::Result<TcpStream> {
    let ips = rt.upstreams.dns.lookup(host).await;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("`{host}` did not resolve"));
    for ip in ips {
        match rt.upstreams.connect((ip, port).into()).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The TLS client configuration (verifying against the system roots, or `skip_verify`), ALPN
/// `h2`, `http/1.1`. Built once per process: reading the system trust store takes a while,
/// and every data-plane thread, WebSocket connector and HTTP/3 connection needs it.
pub fn tls_config(skip_verify: bool) -> Result<rustls::ClientConfig, rustls::Error> {
    static BUILT: [std::sync::OnceLock<rustls::ClientConfig>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let slot = &BUILT[usize::from(skip_verify)];
    if let Some(c) = slot.get() {
        return Ok(c.clone());
    }
    let c = build_tls_config(skip_verify)?;
    Ok(slot.get_or_init(|| c).clone())
}

fn build_tls_config(skip_verify: bool) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut cfg = crate::certs::client::config(skip_verify, &[])?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Which pooled client a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1 on `http`, ALPN on `https` with verified certificates.
    Verified,
    /// The same, accepting any certificate (`skip_verify`).
    SkipVerify,
    /// HTTP/2 with prior knowledge (`version: h2c`; ours, 0.9.2 had no h2c).
    H2c,
}

/// Builds one pooled client (`UPSTREAM_*` settings).
pub fn build(rt: Arc<Runtime>, kind: Kind) -> Result<Upstreams, rustls::Error> {
    let s = rt.settings;
    let connector = Connector::new(rt, kind == Kind::SkipVerify, false)?;
    Ok(Client::builder(TokioExecutor::new())
        .http2_only(kind == Kind::H2c)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(s.upstream_pool_idle)
        .pool_max_idle_per_host(s.upstream_pool_max_idle)
        .http2_keep_alive_interval(s.upstream_keepalive)
        .http2_keep_alive_timeout(Duration::from_secs(20))
        .http2_initial_stream_window_size(s.upstream_h2_stream_window)
        .http2_initial_connection_window_size(s.upstream_h2_conn_window)
        .build(connector))
}

thread_local! {
    /// This thread's pooled clients (verifying, `skip_verify`). Each data-plane shard keeps
    /// its own, so a request and the upstream connection serving it stay on one thread (a
    /// shared pool made every request hop threads twice).
    static CLIENTS: std::cell::RefCell<[Option<Upstreams>; 3]> = const { std::cell::RefCell::new([None, None, None]) };
}

/// The pooled client of the current thread, built on first use.
pub fn for_this_thread(rt: &Arc<Runtime>, kind: Kind) -> Result<Upstreams, rustls::Error> {
    let i = kind as usize;
    if let Some(c) = CLIENTS.with(|c| c.borrow()[i].clone()) {
        return Ok(c);
    }
    let c = build(rt.clone(), kind)?;
    CLIENTS.with(|cell| cell.borrow_mut()[i] = Some(c.clone()));
    Ok(c)
}
