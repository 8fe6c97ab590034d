//! Plain `http://` upstreams over HTTP/1.1: connections kept per data-plane thread, used
//! directly through hyper's connection-level client.
//!
//! The generic pooled client (hyper-util's legacy `Client`) costs a proxied request a pool
//! checkout keyed by a hashed scheme and authority, a boxed and repeatedly moved future, and a
//! `select` with the connection's readiness: about a sixth of the instructions of a small
//! proxied request (bench/l7_instructions.sh). Here a thread keeps, per host and port, the
//! senders of its idle connections; a request takes the newest one that is ready, or opens
//! one, and gives it back once the response head is in (it is ready again when the body has
//! been read). TLS upstreams and h2c keep using the generic client: ALPN may pick HTTP/2.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};

use super::body::Body;
use super::client::Connector;
use crate::runtime::Runtime;
use crate::upstream::error::{Kind as ErrorKind, UpstreamError};

/// How often a thread's pool drops connections idle past `UPSTREAM_POOL_IDLE_TIMEOUT`.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Hosts one thread keeps idle connections for (a flow may take the authority from a header,
/// so the set of hosts is not the config's to bound).
const MAX_HOSTS: usize = 1024;

struct Idle {
    send: SendRequest<Body>,
    since: Instant,
}

struct Pool {
    connector: Connector,
    hosts: HashMap<(String, u16), Vec<Idle>, foldhash::fast::RandomState>,
    swept: Instant,
}

thread_local! {
    static POOL: RefCell<Option<Pool>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's pool, made on first use.
fn with_pool<R>(rt: &Arc<Runtime>, f: impl FnOnce(&mut Pool) -> R) -> Result<R, UpstreamError> {
    POOL.with(|cell| {
        let mut slot = cell.borrow_mut();
        let pool = match slot.as_mut() {
            Some(p) => p,
            None => slot.insert(Pool {
                connector: Connector::new(rt.clone(), false, true)
                    .map_err(|e| UpstreamError::new(ErrorKind::Internal, e))?,
                hosts: HashMap::default(),
                swept: Instant::now(),
            }),
        };
        Ok(f(pool))
    })
}

/// A ready idle connection to `key` of this thread, dropping the dead and those idle past
/// `UPSTREAM_POOL_IDLE_TIMEOUT`.
fn checkout(
    rt: &Arc<Runtime>,
    key: &(String, u16),
) -> Result<Option<SendRequest<Body>>, UpstreamError> {
    let idle_max = rt.settings.upstream_pool_idle;
    with_pool(rt, |pool| {
        let now = Instant::now();
        let alive = |i: &Idle| !i.send.is_closed() && now.duration_since(i.since) < idle_max;
        if now.duration_since(pool.swept) >= SWEEP_EVERY {
            pool.swept = now;
            pool.hosts.retain(|_, idle| {
                idle.retain(alive);
                !idle.is_empty()
            });
        }
        let idle = pool.hosts.get_mut(key)?;
        // Newest first: the most recently used connection is the likeliest to be alive.
        while let Some(pos) = idle
            .iter()
            .rposition(|i| i.send.is_ready() || i.send.is_closed())
        {
            let i = idle.swap_remove(pos);
            if alive(&i) {
                return Some(i.send);
            }
        }
        None
    })
}

/// Keeps `send` for the next request to `key`, unless this thread already keeps enough
/// (`UPSTREAM_POOL_MAX_IDLE` per host, [`MAX_HOSTS`] hosts).
fn checkin(rt: &Arc<Runtime>, key: (String, u16), send: SendRequest<Body>) {
    let max = rt.settings.upstream_pool_max_idle;
    let _ = with_pool(rt, |pool| {
        if pool.hosts.len() >= MAX_HOSTS && !pool.hosts.contains_key(&key) {
            return;
        }
        let idle = pool.hosts.entry(key).or_default();
        if idle.len() < max {
            idle.push(Idle {
                send,
                since: Instant::now(),
            });
        }
    });
}

/// Opens a connection for `req`'s host and starts its connection task.
async fn open(rt: &Arc<Runtime>, target: &hyper::Uri) -> Result<SendRequest<Body>, UpstreamError> {
    let connector = with_pool(rt, |p| p.connector.clone())?;
    let stream = connector
        .open(target)
        .await
        .map_err(|e| UpstreamError::chain(ErrorKind::of_chain(&e, ErrorKind::Connect), &e))?;
    let (send, conn) = http1::Builder::new()
        .handshake(stream)
        .await
        .map_err(|e| UpstreamError::chain(ErrorKind::Protocol, &e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream HTTP/1.1 connection: {e}");
        }
    });
    Ok(send)
}

/// What an HTTP/1.1 origin server expects: `Host` from the URL when the request has none, and
/// the target in origin form (`/path?query`).
fn origin_form(mut req: Request<Body>) -> Request<Body> {
    if !req.headers().contains_key(hyper::header::HOST) {
        if let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| hyper::header::HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(hyper::header::HOST, v);
        }
    }
    // The path is shared with the URL, not parsed again.
    let mut parts = hyper::http::uri::Parts::default();
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
    );
    let path = hyper::Uri::from_parts(parts).unwrap_or_else(|_| hyper::Uri::from_static("/"));
    *req.uri_mut() = path;
    req
}

/// Sends `req` (an `http://` URL) over a pooled HTTP/1.1 connection of this thread. A request
/// that a reused connection closed before it was sent goes once more, on a new connection.
pub async fn send(
    rt: &Arc<Runtime>,
    req: Request<Body>,
) -> Result<Response<Incoming>, UpstreamError> {
    let target = req.uri().clone();
    let key = (
        target.host().unwrap_or_default().to_string(),
        target.port_u16().unwrap_or(80),
    );
    let (mut send, mut reused) = match checkout(rt, &key)? {
        Some(s) => (s, true),
        None => (open(rt, &target).await?, false),
    };
    let mut req = origin_form(req);
    let resp = loop {
        match send.try_send_request(req).await {
            Ok(resp) => break resp,
            Err(mut e) => match e.take_message() {
                Some(back) if reused => {
                    reused = false;
                    req = back;
                    send = open(rt, &target).await?;
                }
                _ => return Err(UpstreamError::chain(ErrorKind::Protocol, e.error())),
            },
        }
    };
    checkin(rt, key, send);
    Ok(resp)
}
