//! UDP listeners: datagrams are grouped into sessions by client address. The listener flow
//! runs once per session (or per datagram with `per_datagram: true`); the session's upstream
//! socket and reply path live exactly as long as the session (one idle timeout for both
//! directions, so late replies are never lost).
//!
//! A listener flow that upgrades to `quic` hands the session to QUIC inspection: datagrams
//! are held (within the pending limits) until the ClientHello is complete, then the `quic`
//! resolver decides. Forwarded QUIC sessions are registered in the `quic` actor's tables by
//! connection ID, so a client that moves to a new address keeps its route.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::net::UdpSocket;
use tracing::{debug, error, info, warn};
use vane_actors::catch::CatchUnwind;

use super::session::{self, Conn};
use crate::config::{Entry, Listener, ListenerDoc, ListenerKey};
use crate::flow::exec::{self, Decision};
use crate::flow::kv::Kv;
use crate::l4p::quic::inspect::{Inspector, Limits};
use crate::l4p::quic::packet;
use crate::runtime::Runtime;

/// Datagrams queued per session while its flow decides.
const MAX_PENDING: usize = 64;
/// Upstreams one `per_datagram` session may send to at once.
const MAX_TARGETS: usize = 16;

enum State {
    /// The flow (or QUIC inspection) is deciding; datagrams wait here.
    Deciding {
        queue: Vec<Vec<u8>>,
        bytes: usize,
    },
    Forward(Arc<UdpSocket>),
    /// Terminated here: datagrams go to the port's HTTP/3 endpoint.
    Terminate(tokio::sync::mpsc::Sender<(SocketAddr, bytes::Bytes)>),
    Dropping,
}

/// One client's UDP session.
pub struct Session {
    /// The listener it belongs to (connection IDs are looked up per listener).
    listener: ListenerKey,
    state: Mutex<State>,
    born: Instant,
    last_ms: AtomicU64,
    /// Where replies go; a migrating QUIC client moves it.
    client: Mutex<SocketAddr>,
    /// Every address this session is known under in the listener's map.
    addrs: Mutex<Vec<SocketAddr>>,
    wake: tokio::sync::Notify,
}

impl Session {
    fn touch(&self) {
        self.last_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn client(&self) -> SocketAddr {
        *self.client.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves the deciding state for `next` and returns what was queued, in one step, so no
    /// datagram arriving meanwhile is left behind in the old queue.
    fn switch(&self, rt: &Runtime, next: State) -> Vec<Vec<u8>> {
        match std::mem::replace(&mut *self.state(), next) {
            State::Deciding { queue, bytes } => {
                rt.release_pending(bytes);
                queue
            }
            _ => Vec::new(),
        }
    }

    /// Takes the queued datagrams, giving their bytes back to the global pending budget.
    fn drain(&self, rt: &Runtime) -> Vec<Vec<u8>> {
        let mut st = self.state();
        if let State::Deciding { queue, bytes } = &mut *st {
            rt.release_pending(*bytes);
            *bytes = 0;
            return std::mem::take(queue);
        }
        Vec::new()
    }
}

/// A UDP listener's sessions by client address.
pub type Sessions = Arc<DashMap<SocketAddr, Arc<Session>>>;

/// The socket and sessions of a UDP listener. They are kept in the runtime across restarts of
/// the listener actor, so a restart neither loses datagrams queued in the socket nor forgets
/// the sessions (and QUIC connections) in flight; only removing the listener drops them.
pub async fn endpoint(
    rt: &Runtime,
    key: ListenerKey,
    addr: SocketAddr,
) -> std::io::Result<(Arc<UdpSocket>, Sessions)> {
    if let Some(e) = rt.udp_endpoints.get(&key) {
        return Ok(e.value().clone());
    }
    let sock = Arc::new(UdpSocket::bind(addr).await?);
    let e = (sock, Sessions::default());
    rt.udp_endpoints.insert(key, e.clone());
    Ok(e)
}

/// Hands a datagram to its session.
fn deliver(rt: &Runtime, s: &Session, data: &[u8]) {
    s.touch();
    let mut st = s.state();
    match &mut *st {
        State::Deciding { queue, bytes } => {
            let fits =
                queue.len() < MAX_PENDING && *bytes + data.len() <= rt.settings.quic_session_buffer;
            if fits && rt.reserve_pending(data.len()) {
                queue.push(data.to_vec());
                *bytes += data.len();
                s.wake.notify_one();
            } else {
                metrics::counter!("vane_udp_dropped_total", "reason" => "pending_full")
                    .increment(1);
            }
        }
        State::Forward(up) => {
            let _ = up.try_send(data);
        }
        State::Terminate(tx) => {
            if tx
                .try_send((s.client(), bytes::Bytes::copy_from_slice(data)))
                .is_err()
            {
                metrics::counter!("vane_udp_dropped_total", "reason" => "h3_queue_full")
                    .increment(1);
            }
        }
        State::Dropping => {}
    }
}

/// The session of this listener a QUIC packet from an unknown address belongs to, by
/// connection ID (the fixed bit may be greased, so any first byte is tried).
fn quic_lookup(rt: &Runtime, key: ListenerKey, data: &[u8]) -> Option<Arc<Session>> {
    let first = *data.first()?;
    let tables = rt.quic.load();
    if tables.by_cid.is_empty() {
        return None;
    }
    if first & 0x80 != 0 {
        let len = *data.get(5)? as usize;
        let dcid = data.get(6..6 + len)?;
        return tables
            .by_cid
            .get(dcid)
            .and_then(|w| w.upgrade())
            .filter(|s| s.listener == key);
    }
    rt.quic_cid_lens().into_iter().find_map(|len| {
        packet::short_dcid(data, len)
            .and_then(|c| tables.by_cid.get(c))
            .and_then(|w| w.upgrade())
            .filter(|s| s.listener == key)
    })
}

/// Receives until aborted. Sessions end by themselves after `UDP_SESSION_TIMEOUT_SECS` idle.
pub async fn recv_loop(
    rt: Arc<Runtime>,
    key: ListenerKey,
    socket: Arc<UdpSocket>,
    sessions: Sessions,
) {
    let label = key.to_string();
    let total = metrics::counter!("vane_connections_total", "listener" => label.clone(), "protocol" => "udp");
    let active = metrics::gauge!("vane_connections_active", "listener" => label.clone(), "protocol" => "udp");
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here on some systems; they must not stop the listener.
                debug!(listener = %label, "recv failed: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let data = &buf[..n];
        if let Some(s) = sessions.get(&peer).map(|s| s.clone()) {
            deliver(&rt, &s, data);
            continue;
        }
        if let Some(s) = quic_lookup(&rt, key, data) {
            // A known QUIC connection from a new address: the client migrated.
            debug!(listener = %label, "QUIC client moved to {peer}");
            *s.client.lock().unwrap_or_else(|e| e.into_inner()) = peer;
            s.addrs.lock().unwrap_or_else(|e| e.into_inner()).push(peer);
            sessions.insert(peer, s.clone());
            metrics::counter!("vane_quic_migrations_total").increment(1);
            deliver(&rt, &s, data);
            continue;
        }
        if let Some(inbox) = crate::l7::h3::route_moved(&rt, key, data) {
            // A terminated HTTP/3 connection from a new address: quinn follows it.
            metrics::counter!("vane_h3_rerouted_datagrams_total").increment(1);
            if inbox
                .try_send((peer, bytes::Bytes::copy_from_slice(data)))
                .is_err()
            {
                metrics::counter!("vane_udp_dropped_total", "reason" => "h3_queue_full")
                    .increment(1);
            }
            continue;
        }
        if sessions.len() >= rt.settings.udp_max_sessions {
            metrics::counter!("vane_connections_rejected_total", "reason" => "udp_session_table_full").increment(1);
            continue;
        }
        let Ok(slot) = rt.limits.acquire(peer.ip()) else {
            continue;
        };
        let Some(entry) = rt.config.load().listeners.get(&key).cloned() else {
            continue;
        };
        if !rt.reserve_pending(n) {
            metrics::counter!("vane_udp_dropped_total", "reason" => "pending_full").increment(1);
            continue;
        }
        total.increment(1);
        active.increment(1.0);
        let active = active.clone();
        let sess = Arc::new(Session {
            listener: key,
            state: Mutex::new(State::Deciding {
                queue: vec![data.to_vec()],
                bytes: n,
            }),
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
            client: Mutex::new(peer),
            addrs: Mutex::new(vec![peer]),
            wake: tokio::sync::Notify::new(),
        });
        sessions.insert(peer, sess.clone());
        let local = socket.local_addr().unwrap_or(peer);
        let conn = Conn { key, peer, local };
        let (rt2, socket2, sessions2, label2) =
            (rt.clone(), socket.clone(), sessions.clone(), label.clone());
        tokio::spawn(async move {
            let span = crate::ops::logging::connection_span(&label2, conn.peer);
            let session = run_session(rt2.clone(), entry, socket2, conn, sess.clone());
            let r = CatchUnwind::new(tracing::Instrument::instrument(session, span)).await;
            let _ = sess.drain(&rt2);
            for a in sess.addrs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                sessions2.remove_if(a, |_, v| Arc::ptr_eq(v, &sess));
            }
            drop(slot);
            active.decrement(1.0);
            if let Err(msg) = r {
                metrics::counter!("vane_session_panics_total", "listener" => label2.clone())
                    .increment(1);
                error!(listener = %label2, "UDP session panicked and was closed: {msg}");
            }
        });
    }
}

/// What the listener flow decided for a UDP session.
enum Verdict {
    Target(SocketAddr),
    Quic(Kv),
    /// Drop datagrams until the session goes idle (an explicit abort).
    Drop,
    /// End the session now (nothing worth remembering, e.g. garbage).
    End,
}

async fn decide(rt: &Runtime, entry: &Entry<Listener>, conn: &Conn, first: &[u8]) -> Verdict {
    let label = conn.key.to_string();
    let work = async {
        match &entry.doc.mode {
            ListenerDoc::Flow(flow) => {
                let mut kv = session::base_kv(conn);
                let peek = &first[..first.len().min(rt.settings.udp_detect_limit)];
                kv.set("req.peek_buffer_hex", hex::encode(peek));
                match exec::run(flow, &mut kv, rt).await {
                    Ok(Decision::Proxy(to)) => {
                        super::connect::address(rt, &to.upstream, &label, false)
                            .await
                            .map_or(Verdict::End, Verdict::Target)
                    }
                    Ok(Decision::Abort) => Verdict::Drop,
                    Ok(Decision::Respond { .. }) => Verdict::End,
                    Ok(Decision::Upgrade { protocol, .. }) if protocol == "quic" => {
                        Verdict::Quic(kv)
                    }
                    Ok(Decision::Upgrade { protocol, .. }) => {
                        info!(listener = %label, "UDP upgrade to `{protocol}` is not supported; session dropped");
                        Verdict::Drop
                    }
                    Err(e) => {
                        warn!(listener = %label, peer = %conn.peer, "flow error: {e}");
                        Verdict::End
                    }
                }
            }
            ListenerDoc::Legacy(rules) => match session::legacy(rt, rules, conn, first).await {
                session::LegacyPick::Target(t) => Verdict::Target(t.addr),
                session::LegacyPick::Resolver(name) if name == "quic" => {
                    Verdict::Quic(session::base_kv(conn))
                }
                session::LegacyPick::Resolver(name) => {
                    info!(listener = %label, "UDP resolver `{name}` is not supported; session dropped");
                    Verdict::Drop
                }
                session::LegacyPick::None => Verdict::End,
            },
        }
    };
    tokio::time::timeout(rt.settings.flow_timeout, work).await.unwrap_or_else(|_| {
        warn!(listener = %label, "Flow execution timed out after {}s", rt.settings.flow_timeout.as_secs());
        Verdict::End
    })
}

/// Holds the session's datagrams until their ClientHello is complete, then asks the `quic`
/// resolver. Returns the target and every datagram held so far (to be forwarded).
async fn inspect_quic(
    rt: &Runtime,
    sess: &Session,
    kv: Kv,
    conn: &Conn,
) -> Option<(crate::l4p::route::QuicRouted, Vec<Vec<u8>>, Vec<u8>)> {
    let limits = Limits {
        max_datagrams: rt.settings.quic_max_pending_packets,
        max_bytes: rt.settings.quic_session_buffer,
    };
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut inspector: Option<Inspector> = None;
    let deadline = tokio::time::Instant::now() + rt.settings.quic_pending_timeout;
    loop {
        let batch = sess.drain(rt);
        for d in batch {
            let insp = match &mut inspector {
                Some(i) => i,
                None => match Inspector::new(&d, limits) {
                    Ok(i) => inspector.insert(i),
                    Err(e) => {
                        metrics::counter!("vane_l4p_parse_failures_total", "protocol" => "quic", "error" => "not_initial").increment(1);
                        debug!(listener = %conn.key, "QUIC inspection: {e} (first bytes {})", hex::encode(&d[..d.len().min(21)]));
                        return None;
                    }
                },
            };
            let r = insp.push(&d);
            held.push(d);
            match r {
                Ok(Some(found)) => {
                    debug!(listener = %conn.key, "QUIC ClientHello complete after {} datagrams", held.len());
                    held.extend(sess.drain(rt));
                    let dcid = found.dcid.clone();
                    let target = crate::l4p::route::route_quic(rt, kv, found, conn).await?;
                    return Some((target, held, dcid));
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("vane_l4p_parse_failures_total", "protocol" => "quic", "error" => "malformed").increment(1);
                    debug!(listener = %conn.key, "QUIC inspection: {e}");
                    return None;
                }
            }
        }
        if tokio::time::timeout_at(deadline, sess.wake.notified())
            .await
            .is_err()
        {
            metrics::counter!("vane_l4p_parse_failures_total", "protocol" => "quic", "error" => "timeout").increment(1);
            return None;
        }
    }
}

async fn run_session(
    rt: Arc<Runtime>,
    entry: Arc<Entry<Listener>>,
    listener: Arc<UdpSocket>,
    conn: Conn,
    sess: Arc<Session>,
) {
    if entry.doc.per_datagram {
        return per_datagram(rt, entry, listener, conn, sess).await;
    }
    let first = match &*sess.state() {
        State::Deciding { queue, .. } => queue.first().cloned().unwrap_or_default(),
        _ => Vec::new(),
    };
    let verdict = decide(&rt, &entry, &conn, &first).await;
    drop(entry);
    drop(first);
    let (target, mut held, quic_dcid) = match verdict {
        Verdict::Target(t) => (t, Vec::new(), None),
        Verdict::Quic(kv) => match inspect_quic(&rt, &sess, kv, &conn).await {
            Some((crate::l4p::route::QuicRouted::Forward(t), held, dcid)) => (t, held, Some(dcid)),
            Some((crate::l4p::route::QuicRouted::Terminate(kv), held, _)) => {
                terminate_h3(&rt, &listener, &conn, &sess, kv, held).await;
                return;
            }
            None => return,
        },
        Verdict::End => return,
        Verdict::Drop => {
            let _ = sess.drain(&rt);
            *sess.state() = State::Dropping;
            wait_idle(&sess, rt.settings.udp_session_timeout).await;
            return;
        }
    };
    let up = match open_upstream(target).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(listener = %conn.key, "UDP upstream {target}: {e}");
            return;
        }
    };
    held.extend(sess.switch(&rt, State::Forward(up.clone())));
    for d in &held {
        let _ = up.send(d).await;
    }
    drop(held);
    if let Some(dcid) = &quic_dcid {
        let tables = rt.quic.load();
        tables.by_cid.insert(dcid.clone(), Arc::downgrade(&sess));
        tables.by_client.insert(conn.peer, Arc::downgrade(&sess));
        rt.note_cid_len(dcid.len());
        metrics::gauge!("vane_quic_sessions").set(tables.by_cid.len() as f64);
    }
    relay_replies(&rt, &sess, &up, &listener, quic_dcid.is_some()).await;
}

/// `per_datagram: true`: every datagram runs the flow and goes where its own run decides, as
/// in Vane 0.9.2. The session keeps one upstream socket per target, each with its reply path;
/// all of them end when the session has been idle for `UDP_SESSION_TIMEOUT_SECS`.
async fn per_datagram(
    rt: Arc<Runtime>,
    entry: Arc<Entry<Listener>>,
    listener: Arc<UdpSocket>,
    conn: Conn,
    sess: Arc<Session>,
) {
    let idle = rt.settings.udp_session_timeout;
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // Dropped with the session, which aborts the reply paths.
    let mut replies = tokio::task::JoinSet::new();
    loop {
        for d in sess.drain(&rt) {
            let target = match decide(&rt, &entry, &conn, &d).await {
                Verdict::Target(t) => t,
                Verdict::Drop | Verdict::End | Verdict::Quic(_) => {
                    metrics::counter!("vane_udp_dropped_total", "reason" => "flow").increment(1);
                    continue;
                }
            };
            let up = match upstreams.get(&target) {
                Some(up) => up.clone(),
                None if upstreams.len() >= MAX_TARGETS => {
                    metrics::counter!("vane_udp_dropped_total", "reason" => "session_targets_full")
                        .increment(1);
                    continue;
                }
                None => match open_upstream(target).await {
                    Ok(s) => {
                        let up = Arc::new(s);
                        upstreams.insert(target, up.clone());
                        let (rt, sess, from, listener) =
                            (rt.clone(), sess.clone(), up.clone(), listener.clone());
                        replies.spawn(async move {
                            relay_replies(&rt, &sess, &from, &listener, false).await;
                        });
                        up
                    }
                    Err(e) => {
                        warn!(listener = %conn.key, "UDP upstream {target}: {e}");
                        continue;
                    }
                },
            };
            let _ = up.send(&d).await;
        }
        let last = sess.last_ms.load(Ordering::Relaxed);
        let deadline = sess.born + Duration::from_millis(last) + idle;
        let woken = tokio::time::timeout_at(deadline.into(), sess.wake.notified()).await;
        if woken.is_err() && sess.last_ms.load(Ordering::Relaxed) == last {
            return;
        }
    }
}

/// Hands a QUIC session to the port's HTTP/3 endpoint: the held datagrams first, then every
/// datagram until the session is idle (the endpoint's keep-alives keep it busy).
async fn terminate_h3(
    rt: &Arc<Runtime>,
    listener: &Arc<UdpSocket>,
    conn: &Conn,
    sess: &Arc<Session>,
    kv: Kv,
    held: Vec<Vec<u8>>,
) {
    let udp_sessions = match rt.udp_endpoints.get(&conn.key) {
        Some(e) => e.value().1.clone(),
        None => return,
    };
    let (tx, sessions) = match crate::l7::h3::port(rt, conn.key, listener, udp_sessions) {
        Ok(p) => p,
        Err(e) => {
            warn!(listener = %conn.key, "HTTP/3 endpoint unavailable: {e}");
            return;
        }
    };
    sessions.insert(conn.peer, kv);
    let mut held = held;
    held.extend(sess.switch(rt, State::Terminate(tx.clone())));
    for d in held {
        let _ = tx.try_send((conn.peer, bytes::Bytes::from(d)));
    }
    wait_idle(sess, rt.settings.udp_session_timeout).await;
    sessions.remove(&conn.peer);
}

/// Sends the upstream's replies to the session's current client address until the session
/// has been idle (both directions) for `UDP_SESSION_TIMEOUT_SECS`. For QUIC, the server's
/// chosen connection IDs are learned from its long-header replies.
async fn relay_replies(
    rt: &Runtime,
    sess: &Arc<Session>,
    up: &UdpSocket,
    listener: &UdpSocket,
    quic: bool,
) {
    let idle = rt.settings.udp_session_timeout;
    let mut buf = vec![0u8; 65_535];
    loop {
        let last = sess.last_ms.load(Ordering::Relaxed);
        let deadline = sess.born + Duration::from_millis(last) + idle;
        tokio::select! {
            r = up.recv(&mut buf) => match r {
                Ok(n) => {
                    sess.touch();
                    if quic {
                        learn_server_cids(rt, sess, &buf[..n]);
                    }
                    let _ = listener.send_to(&buf[..n], sess.client()).await;
                }
                Err(e) => {
                    debug!("UDP upstream recv: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                if sess.last_ms.load(Ordering::Relaxed) == last {
                    break;
                }
            }
        }
    }
}

/// Registers the source connection IDs of the server's long-header packets: the client
/// will address the server with them, possibly from a new address.
pub(crate) fn learn_server_cids(rt: &Runtime, sess: &Arc<Session>, mut d: &[u8]) {
    if d.first().is_some_and(|b| b & 0x80 != 0) {
        if let Err(e) = packet::parse_long(d) {
            debug!(
                "QUIC server reply not parsed: {e} (first bytes {})",
                hex::encode(&d[..d.len().min(24)])
            );
        }
    }
    while let Ok(h) = packet::parse_long(d) {
        if !h.scid.is_empty() {
            let tables = rt.quic.load();
            if tables.by_cid.get(h.scid.as_slice()).is_none() {
                debug!("QUIC server connection ID {} learned", hex::encode(&h.scid));
                tables.by_cid.insert(h.scid.clone(), Arc::downgrade(sess));
                rt.note_cid_len(h.scid.len());
            }
        }
        d = &d[h.end.min(d.len())..];
    }
}

async fn wait_idle(sess: &Session, idle: Duration) {
    loop {
        let last = sess.last_ms.load(Ordering::Relaxed);
        tokio::time::sleep_until((sess.born + Duration::from_millis(last) + idle).into()).await;
        if sess.last_ms.load(Ordering::Relaxed) == last {
            return;
        }
    }
}

async fn open_upstream(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(target).await?;
    Ok(s)
}
