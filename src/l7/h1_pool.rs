//! Plain `http://` upstreams over HTTP/1.1: vane's own client ([`super::h1::client`]) on
//! connections kept in one pool per thread.
//!
//! The pool keeps, per upstream authority (as the URL writes it), its idle connections; a
//! request takes the newest one the upstream has not closed, or opens one. One pool per
//! thread, without a lock: an HTTP connection and the requests it carries stay on the
//! data-plane thread that accepted it, and an upstream connection's socket is registered with
//! the reactor of the thread that opened it. A single pool for the process (as before) handed
//! connections opened on one thread to requests on the other: the socket's readiness then
//! came from the first thread's event loop, a cross-thread wake-up each time and a wait on
//! that loop when it was busy (a long tail of latency under load), and the pool's lock was
//! taken twice per request by both threads. (On the shared runtime, which serves HTTP/3, a
//! task may move between worker threads while a body streams; its connection then joins the
//! pool of the thread it ends on, all of them on that runtime's one reactor.) The connection travels with the response
//! body, carrying its key, and comes back when the body has been read to its end (a body
//! dropped early closes it); a request allocates nothing for this. hyper's client, used here
//! before, cost a proxied request a spawned connection task, a dispatch channel between the
//! request and that task, and a header map rebuilt on each side: about a third of the
//! instructions of a small proxied request. TLS upstreams and h2c keep hyper's pooled client
//! (one per thread too): ALPN may pick HTTP/2.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use hyper::{Method, StatusCode, Uri};

use super::body::Body;
use super::forward::Outbound;
use super::h1::client::{self, Conn, ExchangeError};
use super::reply::Headers;
use crate::runtime::Runtime;
use crate::ticks::Ticks;
use crate::upstream::error::{Kind as ErrorKind, UpstreamError};

/// How often the pool drops connections idle past `UPSTREAM_POOL_IDLE_TIMEOUT` or
/// closed by their upstream.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// The period of the clock the pool reads its time from: idle timeouts are whole seconds.
const CLOCK: Duration = Duration::from_millis(250);
/// Idle connections a host may have between sweeps, as a multiple of `UPSTREAM_POOL_MAX_IDLE`;
/// each sweep closes the oldest beyond the setting. Requests in flight swing from one moment
/// to the next: closing a connection the moment it came back over the setting, to open
/// another a millisecond later, cost more than the whole request (a third of the throughput
/// at 50 wrk clients against the default of 32).
const BURST: usize = 2;
/// Hosts the pool keeps idle connections for (a flow may take the authority from a header,
/// so the set of hosts is not the config's to bound).
const MAX_HOSTS: usize = 1024;

/// The upstream's authority as its URL gives it (`host:port`, or `host` for port 80).
type Key = Arc<str>;

struct Idle {
    conn: Conn,
    since: Duration,
}

#[derive(Default)]
struct Pool {
    hosts: HashMap<Key, Vec<Idle>, foldhash::fast::RandomState>,
    swept: Option<Duration>,
    /// `UPSTREAM_POOL_MAX_IDLE`, noted by each request (settings may change on reload).
    max_idle: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::default();
}

/// The pool's time: a shared clock's count, one load where a clock read per checkout and
/// checkin cost a `clock_gettime` each. Behind by at most a quarter second, so a connection
/// may be kept that much past the idle timeout (whole seconds); a connection its upstream
/// closed is noticed all the same ([`Conn::is_fresh`]).
fn now() -> Duration {
    static CLOCK_TICKS: OnceLock<&'static Ticks> = OnceLock::new();
    CLOCK_TICKS.get_or_init(|| Ticks::every(CLOCK)).elapsed()
}

fn checkout(key: &str, idle_max: Duration, max_idle: usize) -> Option<Conn> {
    POOL.with_borrow_mut(|p| p.checkout(key, now(), idle_max, max_idle))
}

fn checkin(conn: Conn) {
    POOL.with_borrow_mut(|p| p.checkin(conn, now()));
}

impl Pool {
    /// A fresh idle connection to `key`, dropping the dead and those idle past `idle_max`.
    /// Looked up by the borrowed authority: no key is built per request.
    fn checkout(
        &mut self,
        key: &str,
        now: Duration,
        idle_max: Duration,
        max_idle: usize,
    ) -> Option<Conn> {
        self.max_idle = max_idle;
        let alive = |i: &Idle| now.saturating_sub(i.since) < idle_max && i.conn.is_fresh();
        if self
            .swept
            .is_none_or(|t| now.saturating_sub(t) >= SWEEP_EVERY)
        {
            self.swept = Some(now);
            let keep = self.max_idle;
            self.hosts.retain(|_, idle| {
                idle.retain(alive);
                // The oldest first: under a steady load the bottom of the stack is the surplus.
                let surplus = idle.len().saturating_sub(keep);
                idle.drain(..surplus);
                !idle.is_empty()
            });
        }
        let idle = self.hosts.get_mut(key)?;
        // Newest first: the most recently used connection is the likeliest to be alive.
        while let Some(i) = idle.pop() {
            if alive(&i) {
                return Some(i.conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request to its key, unless the pool already keeps
    /// [`BURST`] times `UPSTREAM_POOL_MAX_IDLE` for it or [`MAX_HOSTS`] hosts.
    fn checkin(&mut self, conn: Conn, now: Duration) {
        let max = self.max_idle.saturating_mul(BURST);
        if self.hosts.len() >= MAX_HOSTS && !self.hosts.contains_key(&*conn.key) {
            return;
        }
        let idle = self.hosts.entry(conn.key.clone()).or_default();
        if idle.len() < max {
            idle.push(Idle { conn, since: now });
        }
    }
}

async fn open(rt: &Runtime, uri: &Uri, key: &str) -> Result<Conn, UpstreamError> {
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // Boxed: a name lookup and connect are rare next to reuse, and inline their state would
    // make every request's larger.
    Box::pin(super::client::connect_tcp(
        rt,
        host,
        uri.port_u16().unwrap_or(80),
    ))
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
) -> Result<(StatusCode, Headers, Body), UpstreamError> {
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
    use tokio::net::{TcpListener, TcpStream};

    /// `n` connections to one listener, with their accepted ends (kept open).
    async fn conns(n: usize) -> (Key, Vec<Conn>, Vec<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let key: Key = Arc::from(addr.to_string());
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let stream = TcpStream::connect(addr).await.expect("connect");
            theirs.push(listener.accept().await.expect("accept").0);
            ours.push(Conn::new(stream, key.clone()));
        }
        (key, ours, theirs)
    }

    /// A connection comes back to the pool of the thread whose request used it, and only
    /// that thread's requests take it: its socket answers to that thread's reactor.
    #[test]
    fn each_thread_reuses_only_the_connections_it_brought_back() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
        };
        let idle = Duration::from_secs(60);
        let a = runtime();
        let (key, mut ours, _theirs) = a.block_on(conns(1));
        let conn = ours.pop().expect("one");
        a.block_on(async {
            assert!(checkout(&key, idle, 2).is_none(), "nothing kept yet");
            checkin(conn);
        });
        let elsewhere = std::thread::scope(|s| {
            s.spawn(|| runtime().block_on(async { checkout(&key, idle, 2).is_some() }))
                .join()
                .expect("thread")
        });
        assert!(!elsewhere, "another thread's pool does not have it");
        assert!(
            a.block_on(async { checkout(&key, idle, 2) }).is_some(),
            "this thread's does"
        );
    }

    /// Connections go back under the key they opened with, at most [`BURST`] times the
    /// setting per key, and come out by the borrowed authority.
    #[tokio::test]
    async fn connections_are_kept_by_key_up_to_the_burst_cap() {
        let (key, ours, _theirs) = conns(5).await;
        let (now, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        let mut pool = Pool::default();
        assert!(
            pool.checkout(&key, now, idle, 2).is_none(),
            "nothing kept yet"
        );
        for conn in ours {
            pool.checkin(conn, now);
        }
        assert!(
            pool.checkout("127.0.0.1:1", now, idle, 2).is_none(),
            "another key"
        );
        for n in 0..4 {
            assert!(
                pool.checkout(&key, now, idle, 2).is_some(),
                "connection {n}"
            );
        }
        assert!(
            pool.checkout(&key, now, idle, 2).is_none(),
            "the fifth was over twice the setting"
        );
    }

    /// A sweep closes the surplus over the setting, the longest idle first, and drops
    /// connections idle past the timeout.
    #[tokio::test]
    async fn a_sweep_keeps_the_setting_newest_first_and_drops_the_expired() {
        let (key, ours, _theirs) = conns(4).await;
        let t0 = Duration::from_secs(5);
        let idle = Duration::from_secs(60);
        let mut pool = Pool::default();
        pool.checkout(&key, t0, idle, 2);
        let mut fds = Vec::new();
        for (i, conn) in ours.into_iter().enumerate() {
            fds.push(conn.stream.local_addr().expect("addr"));
            pool.checkin(conn, t0 + Duration::from_millis(i as u64));
        }
        let later = t0 + SWEEP_EVERY;
        let a = pool.checkout(&key, later, idle, 2).expect("kept");
        let b = pool.checkout(&key, later, idle, 2).expect("kept");
        assert!(pool.checkout(&key, later, idle, 2).is_none(), "two kept");
        let kept = [&a, &b].map(|c| c.stream.local_addr().expect("addr"));
        assert_eq!(kept, [fds[3], fds[2]], "the newest two, newest first");
        for conn in [a, b] {
            pool.checkin(conn, later);
        }
        let expired = later + idle + SWEEP_EVERY;
        assert!(pool.checkout(&key, expired, idle, 2).is_none());
        assert!(pool.hosts.is_empty(), "an expired host is forgotten");
    }
}
