//! The L4+ stage of a connection: inspect the carrier named by the L4 upgrade without
//! consuming a byte, publish what it says into the KV, run the resolver flow and return its
//! verdict. Carrying the verdict out (connect, relay, terminate) is the L4 session's job.

use std::time::Duration;

use bytes::BytesMut;

use tracing::{info, warn};

use super::clienthello::{self, Assembled};
use super::http_head;
use crate::acme::challenges::{Challenges, ACME_TLS_ALPN, HTTP01_PREFIX};
use crate::config::store::ConfigStore;
use crate::conn::{is_plain_app, Conn, Handoff, Socket};
use crate::flow::exec::{self, Decision, ProxyTo, Upstream};
use crate::flow::kv::Kv;
use crate::flow::Env;
use crate::settings::Settings;
use crate::ticks::Wait;

/// What the L4+ stage reads: settings, the resolvers of the current snapshot, the flow
/// environment.
#[derive(Clone, Copy)]
pub struct Stage<'a> {
    pub settings: &'a Settings,
    pub config: &'a ConfigStore,
    pub flow: &'a Env,
    /// ACME answers: a tls-alpn-01 validation is terminated here whatever the resolver does.
    pub acme: &'a Challenges,
    /// The waits for a plaintext request's start and for a ClientHello.
    pub peek_wait: Wait,
    pub hello_wait: Wait,
}

/// Why TLS inspection failed (the `tls.error` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsError {
    NotTls,
    BufferTooSmall,
    Closed,
    Io,
    Timeout,
    Malformed,
}

impl TlsError {
    pub fn code(self) -> &'static str {
        match self {
            TlsError::NotTls => "not_tls",
            TlsError::BufferTooSmall => "buffer_too_small",
            TlsError::Closed => "closed",
            TlsError::Io => "io_error",
            TlsError::Timeout => "timeout",
            TlsError::Malformed => "malformed",
        }
    }
}

/// Peeks until the whole ClientHello is buffered in the socket (it may span several records
/// and segments), bounded by `limit` bytes and `wait`.
async fn peek_client_hello(
    stream: &mut Socket,
    limit: usize,
    wait: Wait,
) -> Result<(Vec<u8>, clienthello::ClientHello), TlsError> {
    wait.within(peek_whole_hello(stream, limit))
        .await
        .unwrap_or(Err(TlsError::Timeout))
}

/// [`peek_client_hello`] without its deadline.
async fn peek_whole_hello(
    stream: &mut Socket,
    limit: usize,
) -> Result<(Vec<u8>, clienthello::ClientHello), TlsError> {
    let mut buf = vec![0u8; limit];
    let mut last = 0usize;
    loop {
        let n = match stream.peek(&mut buf).await {
            Err(_) => return Err(TlsError::Io),
            Ok(0) => return Err(TlsError::Closed),
            Ok(n) => n,
        };
        match clienthello::assemble(&buf[..n]) {
            Assembled::NotTls => return Err(TlsError::NotTls),
            Assembled::NeedMore(need) if need > limit => return Err(TlsError::BufferTooSmall),
            Assembled::NeedMore(_) => {
                // The peer has sent only part of it; poll again shortly (peek does not consume,
                // so readiness alone would spin).
                if n == last {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                last = n;
            }
            Assembled::Complete {
                message,
                records_len,
            } => {
                let ch = clienthello::parse(&message).map_err(|_| TlsError::Malformed)?;
                buf.truncate(records_len);
                return Ok((buf, ch));
            }
        }
    }
}

/// A CA validating a published tls-alpn-01 challenge: it offers `acme-tls/1` for a name we
/// are answering for (RFC 8737).
fn acme_validation(acme: &Challenges, ch: &clienthello::ClientHello) -> bool {
    ch.alpn.iter().any(|p| p.as_bytes() == ACME_TLS_ALPN)
        && ch
            .sni
            .as_deref()
            .is_some_and(|n| acme.answers_tls_alpn01(n))
}

/// An ACME validation terminated here whatever the resolver would do: L7 answers it before
/// any application runs (`tls`: the validator's `acme-tls/1` handshake is the answer).
fn acme_answer(kv: Kv, tls: bool, read: BytesMut) -> Routed {
    Routed::Http(Handoff {
        app: "httpx".into(),
        kv,
        tls,
        cert: None,
        panic_first_request: false,
        read,
    })
}

/// What a resolver decided for a TCP connection.
pub enum Routed {
    /// Pass the connection through to this upstream, which is sent the bytes already read
    /// first.
    Pass(ProxyTo, BytesMut),
    /// Terminate it here: L7 with this application.
    Http(Handoff),
}

/// Runs the L4+ stage; `None` when the connection is to be closed.
pub async fn route(
    rt: Stage<'_>,
    stream: &mut Socket,
    mut kv: Kv,
    protocol: &str,
    conn: &Conn,
) -> Option<Routed> {
    let (entry, reads_http_head) = {
        let config = rt.config.load();
        (
            config.resolvers.get(protocol).cloned(),
            config.reads_http_head,
        )
    };
    let Some(entry) = entry else {
        info!(listener = %conn.key, "upgrade to `{protocol}`: no resolver `{protocol}` is configured; connection closed");
        metrics::counter!("vane_l4p_inspections_total", "protocol" => crate::labels::CARRIER.admit(protocol).to_string(), "outcome" => "no_resolver").increment(1);
        return None;
    };
    kv.set_static("conn.layer", "l4p");
    kv.set("conn.proto.carrier", protocol);
    let mut read = BytesMut::new();
    let outcome = if protocol == "tls" {
        match peek_client_hello(stream, rt.settings.tls_buffer, rt.hello_wait).await {
            Ok((raw, ch)) => {
                if acme_validation(rt.acme, &ch) {
                    info!(listener = %conn.key, peer = %conn.peer, "ACME tls-alpn-01 validation: answered here");
                    return Some(acme_answer(kv, true, BytesMut::new()));
                }
                for (k, v) in ch.kv() {
                    kv.set(k, v);
                }
                if entry.doc.mentions("tls.clienthello") {
                    kv.set("tls.clienthello", hex::encode(&raw));
                }
                "ok"
            }
            Err(e) => {
                kv.set("tls.error", e.code());
                metrics::counter!("vane_l4p_parse_failures_total", "protocol" => "tls", "error" => e.code()).increment(1);
                if !rt.settings.tls_allow_parse_failure {
                    info!(listener = %conn.key, peer = %conn.peer, "TLS inspection failed ({}); connection closed", e.code());
                    return None;
                }
                kv.set("tls.sni", "unknown");
                e.code()
            }
        }
    } else {
        read = read_start(stream, rt.settings.http_plain_buffer, rt.peek_wait).await;
        // Parsed when a flow may read what it finds, or when it may be an ACME validation.
        let head = if reads_http_head || http_head::target_starts_with(&read, HTTP01_PREFIX) {
            http_head::parse(&read)
        } else {
            http_head::Head::default()
        };
        if head
            .path
            .as_deref()
            .is_some_and(|p| rt.acme.answers_http01(p))
        {
            info!(listener = %conn.key, peer = %conn.peer, "ACME http-01 validation: answered here");
            return Some(acme_answer(kv, false, read));
        }
        for (k, v) in [
            ("http.method", head.method),
            ("http.path", head.path),
            ("http.host", head.host),
        ] {
            if let Some(v) = v {
                kv.set(k, v);
            }
        }
        "ok"
    };
    inspected(protocol, outcome);
    match exec::run(&entry.doc, &mut kv, rt.flow).await {
        Ok(Decision::Proxy(to)) => Some(Routed::Pass(to, read)),
        Ok(Decision::Abort | Decision::Respond { .. }) => None,
        Ok(Decision::Upgrade {
            protocol: app,
            cert,
        }) => {
            let tls = protocol == "tls";
            if (tls && app == "httpx") || (!tls && is_plain_app(&app)) {
                if let Some(id) = &cert {
                    kv.set("tls.termination.cert_sni", id.clone());
                }
                Some(Routed::Http(Handoff {
                    app,
                    kv,
                    tls,
                    cert: cert.filter(|_| tls),
                    panic_first_request: false,
                    read,
                }))
            } else {
                warn!(listener = %conn.key, "resolver `{protocol}` cannot upgrade to `{app}`; connection closed");
                None
            }
        }
        Err(e) => {
            warn!(listener = %conn.key, peer = %conn.peer, "resolver `{protocol}`: {e}");
            None
        }
    }
}

/// Counts `vane_l4p_inspections_total{protocol, outcome}` for an inspected connection. The
/// handles of admitted labels are kept per thread: built from the labels, each connection
/// paid a label-cap lookup, a key and a registry lookup (about 450 instructions). A protocol
/// past the label cap is not kept, so each of its connections still counts as collapsed.
fn inspected(protocol: &str, outcome: &'static str) {
    use std::cell::RefCell;
    /// Enough for every protocol a resolver set names, with each outcome.
    const KEPT: usize = 32;
    thread_local! {
        static KEPT_HANDLES: RefCell<Vec<(Box<str>, &'static str, metrics::Counter)>> =
            const { RefCell::new(Vec::new()) };
    }
    KEPT_HANDLES.with_borrow_mut(|kept| {
        if let Some((.., c)) = kept
            .iter()
            .find(|(p, o, _)| **p == *protocol && *o == outcome)
        {
            return c.increment(1);
        }
        let label = crate::labels::CARRIER.admit(protocol);
        let c = metrics::counter!("vane_l4p_inspections_total", "protocol" => label.to_string(), "outcome" => outcome);
        c.increment(1);
        if label == protocol && kept.len() < KEPT {
            kept.push((protocol.into(), outcome, c));
        }
    })
}

/// What the `quic` resolver decided.
pub enum QuicRouted {
    /// Pass the session through to this upstream.
    Forward(Upstream),
    /// Terminate it here (HTTP/3), with the session's KV.
    Terminate(Kv),
}

/// Runs the `quic` resolver for a short-header packet of a connection this instance never saw
/// (a client that moved, another balancer's connection) whose connection ID names a QUIC-LB
/// server ID: `quic.dcid` and `quic.server_id` are all there is to route by. Only forwarding
/// makes sense for it.
pub async fn route_quic_by_id(
    rt: Stage<'_>,
    mut kv: Kv,
    dcid: &[u8],
    server_id: &[u8],
    conn: &Conn,
) -> Option<Upstream> {
    let label = crate::conn::listener_label(&conn.key);
    let entry = rt.config.load().resolvers.get("quic").cloned()?;
    kv.set_static("conn.layer", "l4p");
    kv.set_static("conn.proto.carrier", "quic");
    kv.set("quic.dcid", hex::encode(dcid));
    kv.set("quic.server_id", hex::encode(server_id));
    metrics::counter!("vane_l4p_inspections_total", "protocol" => "quic", "outcome" => "server_id")
        .increment(1);
    match exec::run(&entry.doc, &mut kv, rt.flow).await {
        Ok(Decision::Proxy(to)) => {
            info!(listener = %label, peer = %conn.peer, "QUIC packet of an unknown connection routed by server id {}", hex::encode(server_id));
            Some(to.upstream)
        }
        Ok(_) => None,
        Err(e) => {
            warn!(listener = %label, peer = %conn.peer, "resolver `quic`: {e}");
            None
        }
    }
}

/// Runs the `quic` resolver for an inspected QUIC connection; `None` drops the session.
pub async fn route_quic(
    rt: Stage<'_>,
    mut kv: Kv,
    found: crate::l4p::quic::inspect::Inspected,
    conn: &Conn,
) -> Option<QuicRouted> {
    let label = crate::conn::listener_label(&conn.key);
    let Some(entry) = rt.config.load().resolvers.get("quic").cloned() else {
        info!(listener = %label, "upgrade to `quic`: no resolver `quic` is configured; session dropped");
        metrics::counter!("vane_l4p_inspections_total", "protocol" => "quic", "outcome" => "no_resolver").increment(1);
        return None;
    };
    kv.set_static("conn.layer", "l4p");
    kv.set_static("conn.proto.carrier", "quic");
    kv.set("quic.dcid", hex::encode(&found.dcid));
    kv.set("quic.scid", hex::encode(&found.scid));
    kv.set("quic.version", format!("0x{:08x}", found.version));
    if !found.token.is_empty() {
        kv.set("quic.token", hex::encode(&found.token));
    }
    if let Some(sni) = &found.hello.sni {
        kv.set("quic.sni", clienthello::normalize_sni(sni));
    }
    if !found.hello.alpn.is_empty() {
        kv.set("quic.alpn", found.hello.alpn.join(","));
    }
    metrics::counter!("vane_l4p_inspections_total", "protocol" => "quic", "outcome" => "ok")
        .increment(1);
    match exec::run(&entry.doc, &mut kv, rt.flow).await {
        Ok(Decision::Proxy(to)) => Some(QuicRouted::Forward(to.upstream)),
        Ok(Decision::Abort | Decision::Respond { .. }) => None,
        Ok(Decision::Upgrade { protocol: app, .. }) if app == "httpx" => {
            kv.set_static("conn.layer", "l7");
            Some(QuicRouted::Terminate(kv))
        }
        Ok(Decision::Upgrade { protocol: app, .. }) => {
            info!(listener = %label, "resolver `quic` cannot upgrade to `{app}`; session dropped");
            None
        }
        Err(e) => {
            warn!(listener = %label, peer = %conn.peer, "resolver `quic`: {e}");
            None
        }
    }
}

/// Reads the start of a plaintext request, at most `limit` bytes, waiting at most `timeout`
/// for its first bytes and not at all for more. What is read goes on with the connection (to
/// the HTTP server, or to the upstream ahead of the relay), so the head is read once: peeking
/// at it cost a system call per connection, and the server read it again after a turn of the
/// event loop. A fresh socket is read without the reactor (`conn::Socket`); once it has
/// waited, the reads leave tokio's readiness true to the socket (a short read clears it, as
/// does the would-block that ends the reads past the first): a stale "readable" would send
/// the server's wait for the next request into a read that ignores the drain signal.
async fn read_start(stream: &mut Socket, limit: usize, wait: Wait) -> BytesMut {
    use bytes::BufMut;
    use tokio::io::AsyncReadExt;
    let first = crate::spare::SIZE.min(limit);
    let mut buf = crate::spare::take();
    let mut room = (&mut buf).limit(first);
    match wait.within(stream.read_buf(&mut room)).await {
        Ok(Ok(n)) if n == first => {}
        _ => return buf,
    }
    // The first read filled up: whatever else has arrived, up to the limit.
    while buf.len() < limit {
        buf.reserve(limit - buf.len());
        let room = limit - buf.len();
        match stream.try_read_into(&mut buf, room) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    /// The waits for a new connection's first bytes run on a shared clock: this runtime has
    /// no timers, so a tokio timeout in them panics. Each wait still ends once its time is up
    /// (not before) and hands over what did arrive.
    #[test]
    fn first_byte_waits_need_no_tokio_timer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let mut client = std::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .expect("connect");
            let (accepted, _) = listener.accept().expect("accept");
            accepted.set_nonblocking(true).expect("nonblocking");
            let mut s = Socket::fresh(accepted);
            let wait = Wait::new(Duration::from_millis(120), 4);

            let started = Instant::now();
            assert!(read_start(&mut s, 1024, wait).await.is_empty());
            assert!(started.elapsed() >= wait.limit(), "{:?}", started.elapsed());

            let started = Instant::now();
            let hello = peek_client_hello(&mut s, 1024, wait).await;
            assert_eq!(hello.err(), Some(TlsError::Timeout));
            assert!(started.elapsed() >= wait.limit(), "{:?}", started.elapsed());

            client.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
            let read = read_start(&mut s, 1024, wait).await;
            assert_eq!(&read[..], b"GET / HTTP/1.1\r\n\r\n");
        });
    }
}
