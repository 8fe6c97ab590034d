//! One client's UDP session: its state machine (deciding, forwarding, terminated, dropping),
//! the listener flow that decides it, and the reply path from its upstream socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use super::quic::{self, paths::QuicConn, paths::QuicLink};
use crate::config::{Entry, Listener, ListenerDoc, ListenerKey};
use crate::conn::{base_kv, listener_kv, Conn, Inbox};
use crate::flow::exec::{self, Decision};
use crate::flow::kv::Kv;
use crate::l4::buffers::DATAGRAM;
use crate::l4::session::{legacy, LegacyPick};
use crate::l4::L4;
use crate::l4p::route::QuicRouted;

/// Datagrams queued per session while its flow decides.
const MAX_PENDING: usize = 64;
/// Upstreams one `per_datagram` session may send to at once.
const MAX_TARGETS: usize = 16;

pub(super) enum State {
    /// The flow (or QUIC inspection) is deciding; datagrams wait here.
    Deciding {
        queue: Vec<Vec<u8>>,
        bytes: usize,
    },
    Forward(Arc<UdpSocket>),
    /// Terminated here: datagrams go to the port's HTTP/3 endpoint.
    Terminate(Inbox),
    Dropping,
}

/// One client's UDP session.
pub struct Session {
    /// The listener it belongs to (connection IDs are looked up per listener).
    pub(super) listener: ListenerKey,
    state: Mutex<State>,
    born: Instant,
    last_ms: AtomicU64,
    /// Where replies go: the one client address of this session (a QUIC client seen from a
    /// new address gets a session, a path, of its own).
    pub(super) client: SocketAddr,
    pub(super) wake: tokio::sync::Notify,
    /// Forwarded QUIC: the connection this session is a path of.
    pub(super) quic: OnceLock<QuicLink>,
    /// Another QUIC connection used this address before this session took it over in the
    /// listener's map: datagrams from it are routed by connection ID first.
    pub(super) shared: std::sync::atomic::AtomicBool,
}

impl Session {
    /// A session whose first datagram (`first`, already charged to the pending budget) is
    /// waiting for the flow.
    pub(super) fn new(listener: ListenerKey, peer: SocketAddr, first: Vec<u8>) -> Self {
        let bytes = first.len();
        Self {
            listener,
            state: Mutex::new(State::Deciding {
                queue: vec![first],
                bytes,
            }),
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
            client: peer,
            wake: tokio::sync::Notify::new(),
            quic: OnceLock::new(),
            shared: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether `data` opens a QUIC connection other than the one this forwarded session
    /// carries: an Initial to a connection ID it does not own (a client that reused its
    /// address and port). It must be decided afresh, not fed to the old connection's upstream.
    pub(super) fn starts_new_quic(&self, data: &[u8]) -> bool {
        let Some(link) = self.quic.get() else {
            return false;
        };
        crate::l4p::quic::packet::initial_dcid(data).is_some_and(|dcid| !link.conn.owns(dcid))
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves the deciding state for `next` and returns what was queued, in one step, so no
    /// datagram arriving meanwhile is left behind in the old queue.
    pub(super) fn switch(&self, rt: &L4, next: State) -> Vec<Vec<u8>> {
        match std::mem::replace(&mut *self.state(), next) {
            State::Deciding { queue, bytes } => {
                rt.udp.release_pending(bytes);
                queue
            }
            _ => Vec::new(),
        }
    }

    /// Takes the queued datagrams and the bytes they are charged with, which stay charged to
    /// the global pending budget until the caller releases them (QUIC inspection holds them).
    pub(super) fn take_queued(&self) -> (Vec<Vec<u8>>, usize) {
        let mut st = self.state();
        if let State::Deciding { queue, bytes } = &mut *st {
            return (std::mem::take(queue), std::mem::take(bytes));
        }
        (Vec::new(), 0)
    }

    /// Takes the queued datagrams, giving their bytes back to the global pending budget.
    pub(super) fn drain(&self, rt: &L4) -> Vec<Vec<u8>> {
        let mut st = self.state();
        if let State::Deciding { queue, bytes } = &mut *st {
            rt.udp.release_pending(*bytes);
            *bytes = 0;
            return std::mem::take(queue);
        }
        Vec::new()
    }

    /// Waits until the session has been idle (both directions) for `idle`.
    pub(super) async fn wait_idle(&self, idle: Duration) {
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            tokio::time::sleep_until((self.born + Duration::from_millis(last) + idle).into()).await;
            if self.last_ms.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }
}

/// Hands a datagram to its session; false when its upstream refused it (an ICMP error from
/// an earlier datagram surfaces on this send): the target is marked, and the caller may give
/// the datagram to a new session.
pub(super) fn deliver(rt: &L4, s: &Session, data: &[u8]) -> bool {
    s.touch();
    if let Some(q) = s.quic.get() {
        q.client_sent(data.len());
    }
    let mut st = s.state();
    match &mut *st {
        State::Deciding { queue, bytes } => {
            let fits =
                queue.len() < MAX_PENDING && *bytes + data.len() <= rt.settings.quic_session_buffer;
            if fits && rt.udp.reserve_pending(data.len()) {
                queue.push(data.to_vec());
                *bytes += data.len();
                s.wake.notify_one();
            } else {
                metrics::counter!("vane_udp_dropped_total", "reason" => "pending_full")
                    .increment(1);
            }
        }
        State::Forward(up) => {
            if let Err(e) = up.try_send(data) {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    if let Ok(t) = up.peer_addr() {
                        rt.upstreams.health.mark_udp_down(t, &e);
                    }
                    return false;
                }
            }
        }
        State::Terminate(tx) => {
            if tx
                .try_send((s.client, bytes::Bytes::copy_from_slice(data)))
                .is_err()
            {
                metrics::counter!("vane_udp_dropped_total", "reason" => "h3_queue_full")
                    .increment(1);
            }
        }
        State::Dropping => {}
    }
    true
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

async fn decide(rt: &L4, entry: &Entry<Listener>, conn: &Conn, first: &[u8]) -> Verdict {
    let label = conn.key.to_string();
    match &entry.doc.mode {
        ListenerDoc::Flow(flow) => {
            let peek = &first[..first.len().min(rt.settings.udp_detect_limit)];
            let mut kv = listener_kv(conn, flow, peek);
            match exec::run(flow, &mut kv, &rt.flow).await {
                Ok(Decision::Proxy(to)) => rt
                    .upstreams
                    .address(&to.upstream, &label, false)
                    .await
                    .map_or(Verdict::End, Verdict::Target),
                Ok(Decision::Abort) => Verdict::Drop,
                Ok(Decision::Respond { .. }) => Verdict::End,
                Ok(Decision::Upgrade { protocol, .. }) if protocol == "quic" => Verdict::Quic(kv),
                Ok(Decision::Upgrade { protocol, .. }) => {
                    info!(listener = %label, "UDP upgrade to `{protocol}` is not supported; session dropped");
                    Verdict::Drop
                }
                Err(e) => {
                    warn!(listener = %label, peer = %conn.peer, "{e}");
                    Verdict::End
                }
            }
        }
        ListenerDoc::Legacy(rules) => match legacy(rt, rules, conn, first).await {
            LegacyPick::Target(t) => Verdict::Target(t.addr),
            LegacyPick::Resolver(name) if name == "quic" => Verdict::Quic(base_kv(conn)),
            LegacyPick::Resolver(name) => {
                info!(listener = %label, "UDP resolver `{name}` is not supported; session dropped");
                Verdict::Drop
            }
            LegacyPick::None => Verdict::End,
        },
    }
}

/// Runs a new session to its end: decide, then forward (or hand to HTTP/3) until idle.
pub(super) async fn run(
    rt: Arc<L4>,
    entry: Arc<Entry<Listener>>,
    listener: Arc<UdpSocket>,
    conn: Conn,
    sess: Arc<Session>,
) {
    if entry.doc.per_datagram {
        return Box::pin(per_datagram(rt, entry, listener, conn, sess)).await;
    }
    let first = match &*sess.state() {
        State::Deciding { queue, .. } => queue.first().cloned().unwrap_or_default(),
        _ => Vec::new(),
    };
    // The deciding steps are boxed: a future holds room for its largest state for its whole
    // life, and a session spends nearly all of it relaying (a few hundred bytes), not deciding
    // (kilobytes, with a QUIC inspection).
    let verdict = Box::pin(decide(&rt, &entry, &conn, &first)).await;
    drop(entry);
    drop(first);
    let (target, mut held, quic_dcid) = match verdict {
        Verdict::Target(t) => (t, Vec::new(), None),
        Verdict::Quic(kv) => match Box::pin(quic::inspect(&rt, &sess, kv, &conn)).await {
            Some((QuicRouted::Forward(up), held, dcid)) => {
                let label = conn.key.to_string();
                match Box::pin(rt.upstreams.address(&up, &label, false)).await {
                    Some(t) => (t, held, Some(dcid)),
                    None => return,
                }
            }
            Some((QuicRouted::Terminate(kv), held, _)) => {
                Box::pin(quic::terminate(&rt, &listener, &conn, &sess, kv, held)).await;
                return;
            }
            None => return,
        },
        Verdict::End => return,
        Verdict::Drop => {
            let _ = sess.drain(&rt);
            *sess.state() = State::Dropping;
            sess.wait_idle(rt.settings.udp_session_timeout).await;
            return;
        }
    };
    let up = match open_upstream(target).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(listener = %conn.key, "UDP upstream {target}: {e}");
            rt.upstreams.health.mark_udp_down(target, &e);
            return;
        }
    };
    if let Some(dcid) = &quic_dcid {
        let qc = QuicConn::new(conn.key, target, rt.udp.cids.clone());
        qc.attach(&sess, false);
        rt.udp.cids.register(dcid, &qc);
    }
    held.extend(sess.switch(&rt, State::Forward(up.clone())));
    for d in &held {
        let _ = up.send(d).await;
    }
    drop(held);
    relay_replies(&rt, &sess, &up, &listener).await;
}

/// Runs a candidate path of a forwarded QUIC connection (its link is set): the same upstream
/// from a socket of its own, replies back to this path's address.
pub(super) async fn run_path(rt: Arc<L4>, listener: Arc<UdpSocket>, sess: Arc<Session>) {
    let Some(target) = sess.quic.get().map(|q| q.conn.target) else {
        return;
    };
    let up = match open_upstream(target).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            warn!(listener = %sess.listener, "UDP upstream {target}: {e}");
            return;
        }
    };
    for d in sess.switch(&rt, State::Forward(up.clone())) {
        let _ = up.send(&d).await;
    }
    relay_replies(&rt, &sess, &up, &listener).await;
}

/// `per_datagram: true`: every datagram runs the flow and goes where its own run decides, as
/// in Vane 0.9.2. The session keeps one upstream socket per target, each with its reply path;
/// all of them end when the session has been idle for `UDP_SESSION_TIMEOUT_SECS`.
async fn per_datagram(
    rt: Arc<L4>,
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
                            relay_replies(&rt, &sess, &from, &listener).await;
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

/// Sends the upstream's replies to the session's client address until the session has been
/// idle (both directions) for `UDP_SESSION_TIMEOUT_SECS`. For forwarded QUIC, the server's
/// chosen connection IDs are learned from its long-header replies, and a candidate path gets
/// no more than its amplification budget. A receive buffer is borrowed only while replies
/// are waiting in the socket, so a quiet session holds none.
async fn relay_replies(rt: &L4, sess: &Arc<Session>, up: &UdpSocket, listener: &UdpSocket) {
    let idle = rt.settings.udp_session_timeout;
    loop {
        let last = sess.last_ms.load(Ordering::Relaxed);
        let deadline = sess.born + Duration::from_millis(last) + idle;
        tokio::select! {
            r = up.readable() => {
                if let Err(e) = r {
                    debug!("UDP upstream: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let mut buf = DATAGRAM.take();
                loop {
                    match up.try_recv(&mut buf) {
                        Ok(n) => {
                            sess.touch();
                            if let Some(q) = sess.quic.get() {
                                rt.udp.cids.learn_server_cids(&q.conn, &buf[..n]);
                                if !q.may_reply(n) {
                                    continue;
                                }
                            }
                            let _ = listener.send_to(&buf[..n], sess.client).await;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP errors (a closed upstream port) surface here: the target is
                            // avoided for a while and this session is replaced on its next
                            // datagram.
                            debug!("UDP upstream recv: {e}");
                            if let Ok(target) = up.peer_addr() {
                                rt.upstreams.health.mark_udp_down(target, &e);
                            }
                            break;
                        }
                    }
                }
                DATAGRAM.give(buf);
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                if sess.last_ms.load(Ordering::Relaxed) == last {
                    break;
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A live UDP session is this struct, its map entry and its task: keep the struct small
    /// (the whole cost per session is measured by chaos/quic.rs and bench/udp.sh).
    #[test]
    fn session_state_stays_small() {
        let size = std::mem::size_of::<Session>();
        assert!(size <= 192, "a UDP session is {size} bytes");
        let state = std::mem::size_of::<State>();
        assert!(state <= 32, "a session state is {state} bytes");
    }
}
