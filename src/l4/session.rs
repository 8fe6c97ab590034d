//! The life of one TCP connection at L4: peek, run the listener flow (or legacy rules) under
//! the flow timeout, then relay under the idle timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::relay;
use super::L4;
use crate::config::legacy::{Destination, Rules};
use crate::config::{Entry, Listener, ListenerDoc};
use crate::conn::{base_kv, listener_kv, Conn, Handoff, Socket};
use crate::flow::exec::{self, Decision};
use crate::flow::kv::Kv;
use crate::l4p::route::{self, Routed};
use crate::upstream::health::ActiveGuard;
use crate::upstream::Target;

/// What a session leaves to run after it: the serving of a connection handed to HTTP. The
/// session's state, sized for a relay and an L4 flow, is dropped before it runs (in the same
/// task), so it is freed while the connection lives on (an idle HTTP/1.1 connection held both,
/// 1.8 KiB).
pub type Rest = Option<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// Serves one accepted TCP connection: to the end when relayed or closed, up to the hand-off
/// (returned) when terminated at L7.
pub async fn tcp(
    rt: Arc<L4>,
    entry: Arc<Entry<Listener>>,
    mut stream: Socket,
    mut conn: Conn,
    panic_armed: bool,
) -> Rest {
    // On Linux the listener's TCP_NODELAY is inherited (see listener::bind_tcp).
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    if let Some(ap) = entry
        .doc
        .accept_proxy
        .as_ref()
        .filter(|ap| ap.trusts(conn.peer.ip()))
    {
        match Box::pin(accept_proxy_header(&rt, &mut stream, ap.required)).await {
            Ok(Some((src, dst))) => {
                conn.peer = src;
                conn.local = dst;
            }
            Ok(None) => {}
            Err(why) => {
                debug!(listener = %conn.key, peer = %conn.peer, "PROXY header refused: {why}");
                metrics::counter!("vane_proxy_protocol_rejected_total", "listener" => conn.key.to_string()).increment(1);
                return None;
            }
        }
    }
    let decided = crate::boxed::pin_in_place(|| decide_tcp(&rt, &entry, &mut stream, &conn)).await;
    drop(entry);
    let (upstream, _active) = match decided {
        Some(Decided::Relay(up, active)) => (up, active),
        Some(Decided::Http(handoff)) => {
            let mut handoff = *handoff;
            handoff.panic_first_request = panic_armed;
            return Some(rt.http.clone().serve(stream, conn, handoff));
        }
        None => {
            close_gently(&mut stream).await;
            return None;
        }
    };
    if panic_armed {
        panic!("chaos: session panic requested on {}", conn.key);
    }
    // The relay polls the socket's readiness itself.
    let stream = match stream.into_tokio() {
        Ok(s) => s,
        Err(e) => {
            warn!(listener = %conn.key, peer = %conn.peer, "relay not started: {e}");
            return None;
        }
    };
    let r = relay::relay(stream, upstream, rt.settings.stream_idle_timeout).await;
    debug!(listener = %conn.key, peer = %conn.peer, up = r.to_upstream, down = r.to_client, idle = r.idle_timeout, "relay ended");
    None
}

/// Reads (and consumes) the PROXY header a trusted balancer sends first; the addresses it
/// carries replace the balancer's. `Ok(None)`: no header, and none was required, or `LOCAL`.
async fn accept_proxy_header(
    rt: &L4,
    stream: &mut Socket,
    required: bool,
) -> Result<Option<(SocketAddr, SocketAddr)>, &'static str> {
    let header = read_proxy_header(stream, required);
    rt.peek_wait
        .within(header)
        .await
        .unwrap_or(Err("timed out waiting for the header"))
}

/// [`accept_proxy_header`] without its deadline.
async fn read_proxy_header(
    stream: &mut Socket,
    required: bool,
) -> Result<Option<(SocketAddr, SocketAddr)>, &'static str> {
    use crate::l4p::proxy_protocol::{parse, Parsed};
    let mut buf = [0u8; 600];
    let mut last = 0;
    loop {
        let n = match stream.peek(&mut buf).await {
            Err(_) | Ok(0) => return Err("closed"),
            Ok(n) => n,
        };
        match parse(&buf[..n]) {
            Parsed::NeedMore => {
                if n == last {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                last = n;
            }
            Parsed::Header { src, dst, len, .. } => {
                let mut sink = vec![0u8; len];
                tokio::io::AsyncReadExt::read_exact(stream, &mut sink)
                    .await
                    .map_err(|_| "closed")?;
                return Ok(src.zip(dst));
            }
            Parsed::Absent if required => return Err("no PROXY header"),
            Parsed::Absent => return Ok(None),
            Parsed::Invalid(why) => return Err(why),
        }
    }
}

/// Orderly close: FIN first, then discard what the client already sent so the kernel does
/// not answer with a reset.
async fn close_gently(stream: &mut Socket) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut buf) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// Reads the first bytes without consuming them. A silent client gets an empty peek after
/// `TCP_PEEK_TIMEOUT_MS`, so server-speaks-first protocols can still be routed.
async fn peek(rt: &L4, stream: &mut Socket) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; rt.settings.tcp_detect_limit];
    let peeked = stream.peek(&mut buf);
    match rt.peek_wait.within(peeked).await {
        Ok(Ok(0)) | Ok(Err(_)) => None,
        Ok(Ok(n)) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => Some(Vec::new()),
    }
}

/// What the listener flow decided for a TCP connection.
enum Verdict {
    Target(Target),
    Upgrade(String, Kv),
    Close,
}

async fn l4_verdict(rt: &L4, entry: &Entry<Listener>, conn: &Conn, peeked: &[u8]) -> Verdict {
    // The listener's label is written out only where a path uses it: most connections
    // take none of these.
    let label = || crate::conn::listener_label(&conn.key);
    match &entry.doc.mode {
        ListenerDoc::Flow(flow) => {
            let mut kv = listener_kv(conn, flow, peeked);
            match exec::run(flow, &mut kv, &rt.flow).await {
                Ok(Decision::Proxy(to)) => rt
                    .upstreams
                    .target(&to, &label())
                    .await
                    .map_or(Verdict::Close, Verdict::Target),
                Ok(Decision::Abort | Decision::Respond { .. }) => Verdict::Close,
                Ok(Decision::Upgrade { protocol, .. }) => Verdict::Upgrade(protocol, kv),
                Err(e) => {
                    warn!(listener = %conn.key, peer = %conn.peer, "{e}");
                    Verdict::Close
                }
            }
        }
        ListenerDoc::Legacy(rules) => match legacy(rt, rules, conn, peeked).await {
            LegacyPick::Target(a) => Verdict::Target(a),
            LegacyPick::Resolver(name) => {
                let mut kv = base_kv(conn);
                kv.set("req.peek_buffer_hex", hex::encode(peeked));
                Verdict::Upgrade(name, kv)
            }
            LegacyPick::None => Verdict::Close,
        },
    }
}

/// What happens to a TCP connection after the L4 and L4+ flows.
enum Decided {
    Relay(TcpStream, ActiveGuard),
    /// Boxed: a relayed connection's session state holds this enum for its whole life, and
    /// the hand-off (name, KV, certificate id) is several times the relay's two handles.
    Http(Box<Handoff>),
}

async fn decide_tcp(
    rt: &L4,
    entry: &Entry<Listener>,
    stream: &mut Socket,
    conn: &Conn,
) -> Option<Decided> {
    // Peek only when something looks at the first bytes: legacy detectors or a template reading
    // `req.peek_buffer_hex`. Otherwise the flow runs at once (server-speaks-first works too).
    let wants_peek = match &entry.doc.mode {
        ListenerDoc::Flow(f) => f.reads_peek,
        ListenerDoc::Legacy(_) => true,
    };
    let peeked = if wants_peek {
        peek(rt, stream).await?
    } else {
        Vec::new()
    };
    let verdict = l4_verdict(rt, entry, conn, &peeked).await;
    drop(peeked);
    let label = || crate::conn::listener_label(&conn.key);
    // What the L4+ stage read of the client, sent to the upstream ahead of the relay.
    let mut read = bytes::BytesMut::new();
    let target = match verdict {
        Verdict::Target(t) => t,
        Verdict::Upgrade(protocol, kv) => {
            match route::route(rt.stage(), stream, kv, &protocol, conn).await? {
                Routed::Pass(to, first) => {
                    read = first;
                    rt.upstreams.target(&to, &label()).await?
                }
                Routed::Http(h) => return Some(Decided::Http(Box::new(h))),
            }
        }
        Verdict::Close => return None,
    };
    let label = label();
    let addr = target.addr;
    let mut s = rt
        .upstreams
        .connect(addr)
        .await
        .map_err(|e| warn!(listener = %label, "connect to {addr} failed: {e}"))
        .ok()?;
    if let Some(v) = target.header {
        let header = crate::l4p::proxy_protocol::encode(v, conn.peer, conn.local);
        s.write_all(&header)
            .await
            .map_err(|e| warn!(listener = %label, "PROXY header to {addr} failed: {e}"))
            .ok()?;
    }
    if !read.is_empty() {
        s.write_all(&read)
            .await
            .map_err(|e| warn!(listener = %label, "sending the first bytes to {addr} failed: {e}"))
            .ok()?;
    }
    Some(Decided::Relay(s, rt.upstreams.health.track(addr)))
}

/// What a legacy rule list picked.
pub enum LegacyPick {
    Target(Target),
    /// `destination.type: resolver`: hand the connection to that resolver (0.9.2 dropped it).
    Resolver(String),
    None,
}

/// Legacy rules: the first rule (by priority) whose detector matches picks the target.
pub async fn legacy(rt: &L4, rules: &Rules, conn: &Conn, peeked: &[u8]) -> LegacyPick {
    let Some(rule) = rules.rules.iter().find(|r| r.detect.matches(peeked)) else {
        debug!(listener = %conn.key, "no legacy rule matched");
        return LegacyPick::None;
    };
    match &rule.destination {
        Destination::Resolver(name) => LegacyPick::Resolver(name.clone()),
        Destination::Forward(f) => {
            let key = f.hash_key.as_ref().map(|t| {
                let kv = base_kv(conn);
                t.render(
                    &|k: &str| kv.get(k).map(|v| std::borrow::Cow::Owned(v.to_string())),
                    1024,
                )
            });
            let rule_id = format!("{}:{}", conn.key, rule.name);
            match rt
                .upstreams
                .choose(
                    &rule_id,
                    f.strategy,
                    &f.targets,
                    &f.fallbacks,
                    key.as_deref(),
                    conn.key.proto == crate::config::Proto::Tcp,
                )
                .await
            {
                Some(addr) => LegacyPick::Target(Target {
                    addr,
                    header: f.proxy_protocol,
                }),
                None => LegacyPick::None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Session<F> = fn(Arc<L4>, Arc<Entry<Listener>>, Socket, Conn, bool) -> F;

    fn state_size<F>(_: Session<F>) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every relayed connection carries this state for its whole life: what only a connection
    /// handed to HTTP needs (the hand-off) is boxed. 824 bytes before it was.
    #[test]
    fn a_tcp_session_state_stays_small() {
        let size = state_size(tcp);
        eprintln!("l4 tcp session state: {size} bytes");
        assert!(size <= 768, "{size} bytes");
    }
}
