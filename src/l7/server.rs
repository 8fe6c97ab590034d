//! The HTTP server of one connection (HTTP/1.1 or HTTP/2, told apart by the first bytes) and
//! the handling of one request: its KV, the application flow, then the response or the error
//! the flow engine promises (502 on a flow error, 500 without an application, a closed
//! connection on an explicit abort, never a hang).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, info, warn};

use super::app_metrics::AppMetrics;
use super::body::{self, Body};
use super::reply::{Headers, Reply};
use super::L7;
use crate::conn::{Conn, Handoff};
use crate::flow::exec::{self, Decision};
use crate::flow::kv::{Derived, Frozen, Kv};

/// What every request of one connection shares.
pub struct Ctx {
    rt: Arc<L7>,
    /// The connection's KV from L4/L4+ (without `plugin.*`), under each request's (which
    /// reads it through the context: one allocation per connection fewer).
    kv: Frozen,
    pub peer: std::net::SocketAddr,
    /// The listener the connection came in on (for logs).
    pub key: crate::config::ListenerKey,
    tls: bool,
    /// The application's metric handles (shared by its connections on a thread) and name.
    metrics: Arc<AppMetrics>,
    /// Chaos: the next request panics.
    panic_armed: std::sync::atomic::AtomicBool,
    /// The times bytes moved on the connection, for its idle watchdog.
    moves: AtomicU64,
    /// The HTTP/1.1 fast path waits for a request: draining may close it now.
    waiting: AtomicBool,
    /// The HTTP/1.1 fast path found the request body's framing broken: the request is
    /// answered, logged and counted 400, whatever its flow made of the body's error.
    body_malformed: AtomicBool,
}

impl Ctx {
    /// The context of one connection: `app` with the connection's KV (without `plugin.*`).
    pub fn new(rt: Arc<L7>, app: &str, mut kv: Kv, conn: &Conn, tls: bool) -> Self {
        kv.remove_where(|k| k.starts_with("plugin."));
        let metrics = AppMetrics::of(app);
        Self {
            rt,
            metrics,
            panic_armed: AtomicBool::new(false),
            moves: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            body_malformed: AtomicBool::new(false),
            // Read by every request from here on, written no more.
            kv: kv.freeze(),
            peer: conn.peer,
            key: conn.key,
            tls,
        }
    }

    /// The layer the connection is served by.
    pub fn rt(&self) -> &Arc<L7> {
        &self.rt
    }

    /// The application's name (shared with every request's KV).
    fn app(&self) -> &Arc<str> {
        &self.metrics.name
    }

    /// Whether the connection now waits for a request (on the HTTP/1.1 fast path). Set
    /// before that path reads the drain flag, and read by the watchdog after draining starts:
    /// one of the two sees the other.
    pub fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::SeqCst);
    }

    /// The request body being read broke its framing (see `body_malformed`).
    pub fn mark_body_malformed(&self) {
        self.body_malformed.store(true, Ordering::Relaxed);
    }
}

/// The connection's keys, under each request's.
impl Derived for Ctx {
    fn get(&self, key: &str) -> Option<&str> {
        self.kv.get(key)
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        self.kv.iter()
    }

    fn bytes_bound(&self) -> usize {
        self.kv.bytes_bound()
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("listener", &self.key)
            .field("peer", &self.peer)
            .field("kv", &self.kv)
            .finish_non_exhaustive()
    }
}

impl super::idle::Watched for Ctx {
    fn moves(&self) -> &AtomicU64 {
        &self.moves
    }

    fn may_close(&self) -> bool {
        self.rt.draining.is_on() && self.waiting.load(Ordering::SeqCst)
    }
}

/// An IP address as a header field value (`X-Forwarded-For`), for each request: kept in the
/// context it took 80 bytes of every idle connection (the value and its text). Each thread
/// keeps the last one it made, which the next request of the same client (its connection's
/// next, or another of its connections) shares; any other is made from a stack buffer, for
/// one small allocation (about 480 instructions a request).
fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((at, v)) if *at == ip => v.clone(),
        _ => {
            let mut buf = [0u8; crate::conn::IP_TEXT_MAX];
            // An address's text is digits, dots, colons and hex letters: always valid.
            let v = HeaderValue::from_bytes(crate::conn::ip_bytes(ip, &mut buf))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            *last = Some((ip, v.clone()));
            v
        }
    })
}

/// The request was aborted by the flow: the connection closes (HTTP/1) or the stream is reset
/// (HTTP/2) instead of an answer.
#[derive(Debug, thiserror::Error)]
#[error("aborted by the application flow")]
pub struct Aborted;

/// The context every request of a connection shares, from what L4 handed over.
pub fn context(rt: &Arc<L7>, conn: &Conn, h: Handoff) -> Arc<Ctx> {
    let ctx = Ctx::new(rt.clone(), &h.app, h.kv, conn, h.tls);
    ctx.panic_armed
        .store(h.panic_first_request, std::sync::atomic::Ordering::SeqCst);
    Arc::new(ctx)
}

/// Serves requests on `io` until either side closes it or it is idle for
/// `HTTP_IDLE_TIMEOUT_SECS`: HTTP/1.x on the fast path ([`super::h1`]), HTTP/2 (ALPN `h2` or
/// prior knowledge) on vane's server ([`super::h2`]), and what the fast path hands over
/// (upgrades, `CONNECT`, `Expect`) in hyper, which serves either protocol when
/// `HTTP1_SERVER`/`HTTP2_SERVER` say `hyper`. `ctx` comes from [`context`]:
/// the hand-off is not an argument, so a waiting connection's state does not carry its size.
///
/// Not an async function: its arguments would stay in every waiting connection's state
/// beside what they became (the stream inside its counter). What the state needs besides
/// (the runtime, the listener and peer for logs, the drain signal) is read through `ctx`.
/// `read`: the connection's first bytes, already read by the L4+ stage.
pub fn serve<IO>(
    io: IO,
    ctx: Arc<Ctx>,
    h2: bool,
    mut read: BytesMut,
) -> impl std::future::Future<Output = ()>
where
    IO: AsyncRead + AsyncWrite + super::h1::Readiness + Unpin + Send + 'static,
{
    let mut io = super::idle::Tracked::new(io, ctx.clone());
    let mut idle = super::idle::watch(
        ctx.clone(),
        ctx.rt.http_idle_ticks(),
        ctx.rt.settings.http_idle_timeout,
    );
    async move {
        let pre = if h2 || ctx.rt.settings.http1_on_hyper {
            read.freeze()
        } else {
            tokio::select! {
                ended = super::h1::serve(&ctx, &mut io, &mut read) => match ended {
                    super::h1::Ended::Closed => {
                        crate::spare::give(read);
                        return;
                    }
                    super::h1::Ended::Handover(pre) => pre,
                },
                quiet = &mut idle => {
                    closed_quiet(quiet, ctx.key, ctx.peer);
                    return;
                }
            }
        };
        // Boxed, the stream moved in: only the connections that go on this way carry the
        // state of the server that takes them (hyper's is large).
        let rest: Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> =
            if !ctx.rt.settings.http2_on_hyper
                && (h2 || super::h1::head::is_h2_preface(&pre) == Some(true))
            {
                crate::boxed::pin_in_place(|| serve_h2(ctx, io, pre, Pin::new(&mut idle)))
            } else {
                let io = super::h1::rewind::Rewind::new(pre, io);
                crate::boxed::pin_in_place(|| serve_hyper(ctx, io, Pin::new(&mut idle)))
            };
        rest.await;
    }
}

/// The rest of a connection in hyper (upgrades, `CONNECT`, `Expect`; HTTP/2 with
/// `HTTP2_SERVER=hyper`).
async fn serve_hyper<IO>(
    ctx: Arc<Ctx>,
    io: IO,
    idle: Pin<&mut impl std::future::Future<Output = super::idle::Quiet>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let rt = ctx.rt.clone();
    let (key, peer) = (ctx.key, ctx.peer);
    // Boxed: hyper spawns each HTTP/2 stream as a task holding this future, and moving the
    // whole request state into every task cost more than one allocation.
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handled = handle(
            ctx.clone(),
            req.map(|b| b.map_err(|e| Box::new(e) as body::BoxError).boxed()),
        );
        crate::boxed::pin_in_place(|| async move { handled.await.map(Reply::into_response) })
    });
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(rt.settings.http_header_timeout)
        .keep_alive(true)
        .max_buf_size(super::h1::MAX_HEAD);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256)
        .enable_connect_protocol()
        .max_header_list_size(64 * 1024);
    let served = b.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);
    let mut idle = idle;
    let mut closing = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    let kind = error_kind(&*e);
                    count_connection_error(kind);
                    debug!(listener = %key, peer = %peer, "HTTP connection ended ({kind}): {e}");
                }
                return;
            }
            quiet = idle.as_mut() => {
                closed_quiet(quiet, key, peer);
                return;
            }
            () = rt.draining.wait(), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The rest of a connection in vane's HTTP/2 server ([`super::h2`]).
async fn serve_h2<IO>(
    ctx: Arc<Ctx>,
    mut io: IO,
    pre: bytes::Bytes,
    mut idle: Pin<&mut impl std::future::Future<Output = super::idle::Quiet>>,
) where
    IO: AsyncRead + AsyncWrite + super::h1::Readiness + Unpin,
{
    let (key, peer) = (ctx.key, ctx.peer);
    let mut conn = super::h2::conn::Connection::new(&ctx, &mut io, pre);
    let mut closing = false;
    loop {
        tokio::select! {
            r = std::future::poll_fn(|cx| conn.poll(cx)) => {
                if let Err(e) = r {
                    let kind = match e {
                        super::h2::conn::ConnError::Io(_) => "io",
                        _ => "malformed",
                    };
                    count_connection_error(kind);
                    debug!(listener = %key, peer = %peer, "HTTP/2 connection ended ({kind}): {e}");
                }
                return;
            }
            quiet = idle.as_mut() => {
                std::future::poll_fn(|cx| {
                    conn.say_goodbye(cx);
                    std::task::Poll::Ready(())
                })
                .await;
                closed_quiet(quiet, key, peer);
                return;
            }
            () = ctx.rt.draining.wait(), if !closing => {
                closing = true;
                conn.go_away();
            }
        }
    }
}

/// Counts `vane_http_connection_errors_total{kind}`: the one place every HTTP server of L7
/// counts a client connection's error.
pub fn count_connection_error(kind: &'static str) {
    metrics::counter!("vane_http_connection_errors_total", "kind" => kind).increment(1);
}

/// Counts and logs a connection its watchdog ended: idle (an error of the connection), or
/// waiting for a request when draining began (a normal close).
fn closed_quiet(
    quiet: super::idle::Quiet,
    key: crate::config::ListenerKey,
    peer: std::net::SocketAddr,
) {
    match quiet {
        super::idle::Quiet::Idle => {
            count_connection_error("idle");
            debug!(listener = %key, peer = %peer, "HTTP connection idle; closed");
        }
        super::idle::Quiet::Closing => {
            debug!(listener = %key, peer = %peer, "HTTP connection closed for shutdown");
        }
    }
}

/// A short name for why a client connection failed, for the metric.
fn error_kind(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let Some(h) = e.downcast_ref::<hyper::Error>() else {
        return "other";
    };
    if h.is_parse_too_large() {
        "too_large"
    } else if h.is_parse() || h.is_parse_status() {
        "malformed"
    } else if h.is_timeout() {
        "timeout"
    } else if h.is_incomplete_message() {
        "incomplete"
    } else if h.is_user() {
        "aborted"
    } else {
        "io"
    }
}

fn plain(status: StatusCode, text: &'static str) -> Reply {
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Reply::new(status, h.into(), body::full(text))
}

/// Runs one request through the application flow (any HTTP version) and accounts for it.
/// What the request's future keeps is worked out before it starts ([`prepare`]), and the
/// future is [`Handled`], not an async function: an async function keeps its arguments for
/// its whole life (and binds them again inside), and awaiting a future it holds keeps a
/// second copy; the request (240 bytes) and the prepared exchange (700) sat in this future
/// two and three times while the flow ran, and every request's state is moved into a box of
/// its own.
pub fn handle(
    ctx: Arc<Ctx>,
    req: Request<Body>,
) -> Handled<impl std::future::Future<Output = Result<Reply, Aborted>> + Send> {
    let started = Instant::now();
    let panic = ctx
        .panic_armed
        .swap(false, std::sync::atomic::Ordering::SeqCst);
    let line = ctx
        .rt
        .settings
        .access_log
        .then(|| (req.method().clone(), req.uri().clone(), req.version()));
    let span = crate::spans::request_span(ctx.app(), req.method().as_str(), req.uri().path());
    let (running, answered) = match prepare(&ctx, req) {
        Ok(mut p) => {
            let ctx = ctx.clone();
            // A block that owns the prepared parts and lends them: an async function's
            // arguments are kept twice in its state.
            let run = async move { respond(&ctx, &mut p).await };
            (Some(tracing::Instrument::instrument(run, span)), None)
        }
        Err(answer) => (None, Some(*answer)),
    };
    Handled {
        running,
        answered,
        ctx,
        started,
        line,
        panic,
    }
}

pin_project_lite::pin_project! {
    /// A request being handled: its application's run (or the answer given without one),
    /// then its accounting.
    pub struct Handled<F> {
        #[pin]
        running: Option<F>,
        answered: Option<Reply>,
        ctx: Arc<Ctx>,
        started: Instant,
        line: Option<(hyper::Method, hyper::Uri, hyper::Version)>,
        // Chaos: this request panics.
        panic: bool,
    }
}

impl<F> std::future::Future for Handled<F>
where
    F: std::future::Future<Output = Result<Reply, Aborted>>,
{
    type Output = Result<Reply, Aborted>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let mut this = self.project();
        if std::mem::take(this.panic) {
            panic!("chaos: request panic requested");
        }
        let outcome = match this.running.as_mut().as_pin_mut() {
            Some(run) => {
                let outcome = std::task::ready!(run.poll(cx));
                this.running.set(None);
                outcome
            }
            None => match this.answered.take() {
                Some(answer) => Ok(answer),
                None => panic!("a handled request polled after it finished"),
            },
        };
        account(this.ctx, &outcome, *this.started, this.line.take());
        std::task::Poll::Ready(outcome)
    }
}

/// Counts a finished request and writes its access log line.
fn account(
    ctx: &Ctx,
    outcome: &Result<Reply, Aborted>,
    started: Instant,
    line: Option<(hyper::Method, hyper::Uri, hyper::Version)>,
) {
    // Read, not reset: the connection closes after a malformed body. A load, where a swap
    // would lock the bus for every request.
    let code = if ctx.body_malformed.load(Ordering::Relaxed) {
        400
    } else {
        outcome.as_ref().map_or(0, |r| r.status.as_u16())
    };
    let secs = started.elapsed().as_secs_f64();
    ctx.metrics.count(code);
    ctx.metrics.record(secs);
    if let Some((method, uri, version)) = line {
        let status = if code == 0 {
            "aborted".to_string()
        } else {
            code.to_string()
        };
        let bytes = outcome
            .as_ref()
            .ok()
            .and_then(|r| r.body.size_hint().exact())
            .map_or("-".to_string(), |n| n.to_string());
        info!(
            target: "vane::access",
            client = %ctx.peer,
            app = %ctx.app(),
            method = %method,
            uri = %uri,
            status = %status,
            "{} \"{method} {uri} {}\" {status} {bytes} {:.1}ms",
            ctx.peer,
            super::request_keys::version_text(version),
            secs * 1000.0
        );
    }
}

/// A request ready for its application's flow.
struct Prepared {
    app: Arc<crate::config::Entry<crate::flow::step::Flow>>,
    kv: crate::flow::kv::Kv,
    x: super::exchange::HttpExchange,
}

/// Everything about a request that needs no waiting: the ACME http-01 answer, the
/// application, its KV and the exchange; `Err` with the answer when there is nothing to run.
fn prepare(ctx: &Arc<Ctx>, mut req: Request<Body>) -> Result<Prepared, Box<Reply>> {
    let rt = &ctx.rt;
    // ACME http-01: answered on every plaintext path before any application runs (the CA
    // must not depend on what the flow would do with the request).
    if !ctx.tls && req.method() == hyper::Method::GET {
        if let Some(answer) = rt.acme.challenges.http01(req.uri().path()) {
            let mut h = HeaderMap::new();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            return Err(Box::new(Reply::new(
                StatusCode::OK,
                h.into(),
                body::full(answer),
            )));
        }
    }
    let Some(app) = rt.config.load().applications.get(&**ctx.app()).cloned() else {
        warn!(app = %ctx.app(), "no application `{}` is configured", ctx.app());
        return Err(Box::new(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Configuration Error",
        )));
    };
    let kv = super::request_keys::request_kv(ctx.clone() as Arc<dyn Derived>, ctx.app(), &req);
    // WebSocket: an HTTP/1.x upgrade, or an HTTP/2 extended CONNECT (RFC 8441).
    let ws_h2 = req.method() == hyper::Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
    let ws_client = if ws_h2
        && req
            .extensions()
            .get::<super::h2::tunnel::Tunnel>()
            .is_some()
    {
        // vane's HTTP/2 server: the stream itself is the tunnel.
        let from_client = std::mem::replace(req.body_mut(), body::empty());
        Some(super::websocket::ClientSide::Stream(from_client))
    } else {
        (ws_h2 || super::upstream::wants_websocket(req.headers()))
            .then(|| super::websocket::ClientSide::Upgrade(hyper::upgrade::on(&mut req)))
    };
    let (parts, incoming) = req.into_parts();
    let mut x = super::exchange::HttpExchange::new(
        rt.clone(),
        (ctx.peer, ip_value(ctx.peer.ip())),
        ctx.tls,
        parts,
        incoming,
    );
    x.ws_client = ws_client;
    x.ws_h2 = ws_h2;
    Ok(Prepared { app, kv, x })
}

/// Runs the application's flow on a prepared request and turns its decision into a reply.
async fn respond(ctx: &Ctx, p: &mut Prepared) -> Result<Reply, Aborted> {
    let (app, kv, x) = (&p.app, &mut p.kv, &mut p.x);
    let rt = &ctx.rt;
    let decision = match exec::run_with(&app.doc, kv, &rt.flow, Some(&mut *x)).await {
        Ok(d) => d,
        Err(e) => {
            warn!(app = %ctx.app(), peer = %ctx.peer, "application flow: {e}");
            return Ok(plain(StatusCode::BAD_GATEWAY, "Bad Gateway (Flow Error)"));
        }
    };
    match decision {
        Decision::Respond {
            status,
            headers,
            body,
        } => {
            if let (Some(client), Some(upstream)) = (x.ws_client.take(), x.ws_upstream.take()) {
                let upstream_resp = x.resp.take().map(|(s, h, b)| (s, h.into_map(), b));
                return Ok(Reply::from(super::websocket::complete(
                    x.ws_h2,
                    rt,
                    client,
                    upstream,
                    upstream_resp,
                )));
            }
            let inherited = x
                .resp
                .take()
                .map_or_else(|| (Headers::default(), body::empty()), |(_, h, b)| (h, b));
            super::response::build(
                kv,
                status.as_ref(),
                headers.as_ref(),
                body.as_ref(),
                inherited,
            )
            .or_else(|e| {
                warn!(app = %ctx.app(), "response terminator: {e}");
                Ok(plain(StatusCode::BAD_GATEWAY, "Bad Gateway (Flow Error)"))
            })
        }
        Decision::Abort => Err(Aborted),
        Decision::Proxy(_) | Decision::Upgrade { .. } => Ok(plain(
            StatusCode::BAD_GATEWAY,
            "Bad Gateway (No Response Signal)",
        )),
    }
}

#[cfg(test)]
mod tests {
    /// The value kept for the last client is handed out only to that client.
    #[test]
    fn each_request_gets_its_own_client_s_address() {
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("10.1.2.3".parse().expect("ip"), "::1".parse().expect("ip"));
        for ip in [a, a, b, b, a, b] {
            assert_eq!(super::ip_value(ip), ip.to_string().as_str());
        }
    }
}
