//! Plain `http://` upstreams over HTTP/1.1: vane's own client ([`super::h1::client`]) on
//! connections kept per data-plane thread.
//!
//! A thread keeps, per upstream authority (as the URL writes it), its idle connections; a
//! request takes the newest one the upstream has not closed, or opens one. The connection
//! travels with the response body, carrying its key, and comes back when the body has been
//! read to its end (a body dropped early closes it); a request allocates nothing for this.
//! hyper's client, used here before, cost a proxied request a spawned connection task, a
//! dispatch channel between the request and that task, and a header map rebuilt on each side:
//! about a third of the instructions of a small proxied request. TLS upstreams and h2c keep
//! hyper's pooled client: ALPN may pick HTTP/2.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderMap;
use hyper::{Method, StatusCode, Uri};

use super::body::Body;
use super::forward::Outbound;
use super::h1::client::{self, Conn, ExchangeError};
use crate::runtime::Runtime;
use crate::upstream::error::{Kind as ErrorKind, UpstreamError};

/// How often a thread's pool drops connections idle past `UPSTREAM_POOL_IDLE_TIMEOUT` or
/// closed by their upstream.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Hosts one thread keeps idle connections for (a flow may take the authority from a header,
/// so the set of hosts is not the config's to bound).
const MAX_HOSTS: usize = 1024;

/// The upstream's authority as its URL gives it (`host:port`, or `host` for port 80).
type Key = Arc<str>;

struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    hosts: HashMap<Key, Vec<Idle>, foldhash::fast::RandomState>,
    swept: Option<Instant>,
    /// `UPSTREAM_POOL_MAX_IDLE`, noted by each request (settings may change on reload).
    max_idle: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A fresh idle connection to `key` of this thread, dropping the dead and those idle past
/// `idle_max`. Looked up by the borrowed authority: no key is built per request.
fn checkout(key: &str, idle_max: Duration, max_idle: usize) -> Option<Conn> {
    POOL.with(|cell| {
        let mut pool = cell.borrow_mut();
        pool.max_idle = max_idle;
        let now = Instant::now();
        let alive = |i: &Idle| now.duration_since(i.since) < idle_max && i.conn.is_fresh();
        if pool
            .swept
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            pool.swept = Some(now);
            pool.hosts.retain(|_, idle| {
                idle.retain(alive);
                !idle.is_empty()
            });
        }
        let idle = pool.hosts.get_mut(key)?;
        // Newest first: the most recently used connection is the likeliest to be alive.
        while let Some(i) = idle.pop() {
            if alive(&i) {
                return Some(i.conn);
            }
        }
        None
    })
}

/// Keeps `conn` for the next request to its key, unless this thread already keeps
/// `UPSTREAM_POOL_MAX_IDLE` for it or [`MAX_HOSTS`] hosts.
fn checkin(conn: Conn) {
    POOL.with(|cell| {
        let mut pool = cell.borrow_mut();
        let max = pool.max_idle;
        if pool.hosts.len() >= MAX_HOSTS && !pool.hosts.contains_key(&*conn.key) {
            return;
        }
        let idle = pool.hosts.entry(conn.key.clone()).or_default();
        if idle.len() < max {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    });
}

async fn open(rt: &Runtime, uri: &Uri, key: &str) -> Result<Conn, UpstreamError> {
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    super::client::connect_tcp(rt, host, uri.port_u16().unwrap_or(80))
        .await
        .map(|stream| Conn::new(stream, Arc::from(key)))
        .map_err(|e| UpstreamError::chain(ErrorKind::of_chain(&e, ErrorKind::Connect), &e))
}

fn failed(e: &ExchangeError) -> UpstreamError {
    UpstreamError::chain(ErrorKind::Protocol, e)
}

/// Sends `out` (an `http://` URL) with `body` over a pooled connection of this thread. A
/// request without a body that a reused connection failed before any answer goes once more,
/// on a new one (the upstream closed it while it sat idle).
pub async fn send(
    rt: &Arc<Runtime>,
    out: &Outbound<'_>,
    body: Body,
) -> Result<(StatusCode, HeaderMap, Body), UpstreamError> {
    let uri = &out.uri;
    let key = uri.authority().map_or("", |a| a.as_str());
    let head_request = out.method == Method::HEAD;
    let (head, framing) = client::request_head(out, &body);
    // Only a request without a body may go twice; its head is lent, not copied.
    let (out, bare) = match framing {
        Some(f) => (client::Outgoing::WithBody(head, body, f), None),
        None => (client::Outgoing::Bare(&head), Some(&head)),
    };
    let settings = &rt.settings;
    let (conn, reused) = match checkout(
        key,
        settings.upstream_pool_idle,
        settings.upstream_pool_max_idle,
    ) {
        Some(c) => (c, true),
        None => (open(rt, uri, key).await?, false),
    };
    let answer = match client::exchange(conn, out, head_request, checkin).await {
        Err(e) if reused && e.stale() => match bare {
            Some(head) => {
                let conn = open(rt, uri, key).await?;
                let again = client::Outgoing::Bare(head);
                client::exchange(conn, again, head_request, checkin).await
            }
            None => Err(e),
        },
        other => other,
    };
    answer
        .map(|a| (a.status, a.headers, a.body))
        .map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections go back under the key they opened with, at most `max_idle` per key, and
    /// come out by the borrowed authority.
    #[tokio::test]
    async fn connections_are_kept_by_key_up_to_the_cap() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut held = Vec::new();
        let key: Key = Arc::from(addr.to_string());
        let idle = Duration::from_secs(60);
        assert!(checkout(&key, idle, 2).is_none(), "nothing kept yet");
        for _ in 0..3 {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            held.push(listener.accept().await.expect("accept"));
            checkin(Conn::new(stream, key.clone()));
        }
        assert!(checkout("127.0.0.1:1", idle, 2).is_none(), "another key");
        assert!(checkout(&key, idle, 2).is_some());
        assert!(checkout(&key, idle, 2).is_some());
        assert!(
            checkout(&key, idle, 2).is_none(),
            "the third was over the cap"
        );
    }
}
