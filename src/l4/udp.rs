//! UDP listeners: datagrams are grouped into sessions by client address. The listener flow
//! runs once per session; the session's upstream socket and reply path live exactly as long
//! as the session (one idle timeout for both directions, so late replies are never lost).

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
use crate::runtime::Runtime;

/// Datagrams queued per session while its flow decides.
const MAX_PENDING: usize = 64;

enum State {
    Deciding(Vec<Vec<u8>>),
    Forward(Arc<UdpSocket>),
    Dropping,
}

struct Session {
    state: Mutex<State>,
    born: Instant,
    last_ms: AtomicU64,
}

impl Session {
    fn touch(&self) {
        self.last_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

type Sessions = Arc<DashMap<SocketAddr, Arc<Session>>>;

/// Receives until aborted. Sessions end by themselves after `UDP_SESSION_TIMEOUT_SECS` idle.
pub async fn recv_loop(rt: Arc<Runtime>, key: ListenerKey, socket: Arc<UdpSocket>) {
    let label = key.to_string();
    let sessions: Sessions = Arc::new(DashMap::new());
    let total = metrics::counter!("vane_connections_total", "listener" => label.clone(), "protocol" => "udp");
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
            s.touch();
            let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
            match &mut *st {
                State::Deciding(q) if q.len() < MAX_PENDING => q.push(data.to_vec()),
                State::Forward(up) => {
                    let _ = up.try_send(data);
                }
                _ => {}
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
        total.increment(1);
        let sess = Arc::new(Session {
            state: Mutex::new(State::Deciding(vec![data.to_vec()])),
            born: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        sessions.insert(peer, sess.clone());
        let local = socket.local_addr().unwrap_or(peer);
        let conn = Conn { key, peer, local };
        let (rt2, socket2, sessions2, label2) =
            (rt.clone(), socket.clone(), sessions.clone(), label.clone());
        tokio::spawn(async move {
            let r = CatchUnwind::new(run_session(rt2, entry, socket2, conn, sess)).await;
            sessions2.remove(&peer);
            drop(slot);
            if let Err(msg) = r {
                metrics::counter!("vane_session_panics_total", "listener" => label2.clone())
                    .increment(1);
                error!(listener = %label2, "UDP session panicked and was closed: {msg}");
            }
        });
    }
}

async fn decide(
    rt: &Runtime,
    entry: &Entry<Listener>,
    conn: &Conn,
    first: &[u8],
) -> Option<SocketAddr> {
    let label = conn.key.to_string();
    let work = async {
        match &entry.doc.mode {
            ListenerDoc::Flow(flow) => {
                let mut kv = session::base_kv(conn);
                let peek = &first[..first.len().min(rt.settings.udp_detect_limit)];
                kv.set("req.peek_buffer_hex", hex::encode(peek));
                match exec::run(flow, &mut kv, rt).await {
                    Ok(Decision::Proxy(to)) => {
                        super::connect::address(rt, &to.upstream, &label).await
                    }
                    Ok(Decision::Abort) => None,
                    Ok(Decision::Upgrade { protocol, .. }) => {
                        info!(listener = %label, "UDP upgrade to `{protocol}` is not available in this build; session dropped");
                        None
                    }
                    Err(e) => {
                        warn!(listener = %label, peer = %conn.peer, "flow error: {e}");
                        None
                    }
                }
            }
            ListenerDoc::Legacy(rules) => match session::legacy(rt, rules, conn, first).await {
                session::LegacyPick::Target(t) => Some(t.addr),
                session::LegacyPick::Resolver(name) => {
                    info!(listener = %label, "UDP resolver `{name}`: QUIC inspection is not available in this build; session dropped");
                    None
                }
                session::LegacyPick::None => None,
            },
        }
    };
    tokio::time::timeout(rt.settings.flow_timeout, work).await.unwrap_or_else(|_| {
        warn!(listener = %label, "Flow execution timed out after {}s", rt.settings.flow_timeout.as_secs());
        None
    })
}

async fn run_session(
    rt: Arc<Runtime>,
    entry: Arc<Entry<Listener>>,
    listener: Arc<UdpSocket>,
    conn: Conn,
    sess: Arc<Session>,
) {
    let first = match &*sess.state.lock().unwrap_or_else(|e| e.into_inner()) {
        State::Deciding(q) => q.first().cloned().unwrap_or_default(),
        _ => Vec::new(),
    };
    let target = decide(&rt, &entry, &conn, &first).await;
    drop(entry);
    let idle = rt.settings.udp_session_timeout;
    let upstream = match target {
        Some(t) => match open_upstream(t).await {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                warn!(listener = %conn.key, "UDP upstream {t}: {e}");
                rt.health.mark_down(t, &e.to_string());
                None
            }
        },
        None => None,
    };
    let queued = {
        let mut st = sess.state.lock().unwrap_or_else(|e| e.into_inner());
        let next = match &upstream {
            Some(u) => State::Forward(u.clone()),
            None => State::Dropping,
        };
        match std::mem::replace(&mut *st, next) {
            State::Deciding(q) => q,
            _ => Vec::new(),
        }
    };
    let Some(up) = upstream else {
        wait_idle(&sess, idle).await;
        return;
    };
    for d in &queued {
        let _ = up.send(d).await;
    }
    let mut buf = vec![0u8; 65_535];
    loop {
        let last = sess.last_ms.load(Ordering::Relaxed);
        let deadline = sess.born + Duration::from_millis(last) + idle;
        tokio::select! {
            r = up.recv(&mut buf) => match r {
                Ok(n) => {
                    sess.touch();
                    let _ = listener.send_to(&buf[..n], conn.peer).await;
                }
                Err(e) => {
                    debug!(listener = %conn.key, "UDP upstream recv: {e}");
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
