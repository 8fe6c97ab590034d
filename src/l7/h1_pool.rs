//! Plain `http://` upstreams over HTTP/1.1: vane's own client ([`super::h1::client`]) on
//! connections kept per data-plane thread.
//!
//! A thread keeps, per host and port, its idle connections; a request takes the newest one
//! the upstream has not closed, or opens one. The connection travels with the response body
//! and comes back when the body has been read to its end (a body dropped early closes it).
//! hyper's client, used here before, cost a proxied request a spawned connection task, a
//! dispatch channel between the request and that task, and a header map rebuilt on each side:
//! about a third of the instructions of a small proxied request. TLS upstreams and h2c keep
//! hyper's pooled client: ALPN may pick HTTP/2.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};

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

type Key = (String, u16);

struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    hosts: HashMap<Key, Vec<Idle>, foldhash::fast::RandomState>,
    swept: Option<Instant>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A fresh idle connection to `key` of this thread, dropping the dead and those idle past
/// `idle_max`.
fn checkout(key: &Key, idle_max: Duration) -> Option<Conn> {
    POOL.with(|cell| {
        let mut pool = cell.borrow_mut();
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

/// Keeps `conn` for the next request to `key`, unless this thread already keeps `max` for it
/// or [`MAX_HOSTS`] hosts.
fn checkin(key: Key, conn: Conn, max: usize) {
    POOL.with(|cell| {
        let mut pool = cell.borrow_mut();
        if pool.hosts.len() >= MAX_HOSTS && !pool.hosts.contains_key(&key) {
            return;
        }
        let idle = pool.hosts.entry(key).or_default();
        if idle.len() < max {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    });
}

async fn open(rt: &Runtime, key: &Key) -> Result<Conn, UpstreamError> {
    let host = key.0.trim_start_matches('[').trim_end_matches(']');
    super::client::connect_tcp(rt, host, key.1)
        .await
        .map(Conn::new)
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
    let key: Key = (
        out.uri.host().unwrap_or_default().to_string(),
        out.uri.port_u16().unwrap_or(80),
    );
    let head_request = out.method == Method::HEAD;
    let (head, framing) = client::request_head(out, &body);
    // Only a request without a body may go twice; its head is lent, not copied.
    let (out, bare) = match framing {
        Some(f) => (client::Outgoing::WithBody(head, body, f), None),
        None => (client::Outgoing::Bare(&head), Some(&head)),
    };
    let max = rt.settings.upstream_pool_max_idle;
    let home = |key: Key| -> client::Home { Box::new(move |c| checkin(key, c, max)) };
    let (conn, reused) = match checkout(&key, rt.settings.upstream_pool_idle) {
        Some(c) => (c, true),
        None => (open(rt, &key).await?, false),
    };
    let answer = match client::exchange(conn, out, head_request, home(key.clone())).await {
        Err(e) if reused && e.stale() => match bare {
            Some(head) => {
                let conn = open(rt, &key).await?;
                let again = client::Outgoing::Bare(head);
                client::exchange(conn, again, head_request, home(key)).await
            }
            None => Err(e),
        },
        other => other,
    };
    answer
        .map(|a| (a.status, a.headers, a.body))
        .map_err(|e| failed(&e))
}
