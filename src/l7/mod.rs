//! L7: HTTP/1.1 and HTTP/2 terminated on a connection the L4+ layer handed over (plaintext,
//! or TLS terminated here with the certificate store), each request running the application
//! flow of its protocol.

pub mod app_metrics;
pub mod body;
pub mod buffer;
pub mod cgi;
pub mod client;
pub mod exchange;
pub mod forward;
pub mod h1;
pub mod h1_pool;
pub mod h2;
pub mod h3;
pub mod h3_client;
pub mod idle;
pub mod inputs;
pub mod quic_send;
pub mod reply;
pub mod request_keys;
pub mod response;
pub mod server;
pub mod static_files;
pub mod target;
pub mod tls;
pub mod upstream;
pub mod websocket;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use dashmap::DashMap;
use tokio::net::UdpSocket;
use tracing::debug;

use crate::config::ListenerKey;
use crate::conn::{Conn, Handoff, HttpCarrier, Inbox, QuicCarrier, QuicPort, Socket};
use crate::runtime::Runtime;

/// The L7 layer of a running gateway: the shared runtime plus what this layer owns. It
/// dereferences to the [`Runtime`] (`l7.settings`, `l7.config`, ...).
pub struct L7 {
    pub rt: Arc<Runtime>,
    /// TLS termination's configurations (built on first use; they read the current
    /// certificates at every handshake), session cache and ticket keys.
    tls: tls::Termination,
    /// Connectors for WebSocket upgrades (HTTP/1.1 only by ALPN): verifying, `skip_verify`.
    ws_connectors: [OnceLock<client::Connector>; 2],
    /// HTTP/3 endpoints by UDP listener (QUIC terminated on that port).
    h3_ports: DashMap<ListenerKey, h3::H3Port>,
}

impl std::ops::Deref for L7 {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.rt
    }
}

impl L7 {
    pub fn new(rt: Arc<Runtime>) -> Arc<Self> {
        if let Some(id) = &rt.settings.quic_lb_server_id {
            h3::use_server_id(id, rt.settings.quic_lb_config_id);
        }
        Arc::new(Self {
            rt,
            tls: tls::Termination::default(),
            ws_connectors: [OnceLock::new(), OnceLock::new()],
            h3_ports: DashMap::new(),
        })
    }
}

impl HttpCarrier for L7 {
    fn serve(
        self: Arc<Self>,
        stream: Socket,
        conn: Conn,
        handoff: Handoff,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        serve(self, stream, conn, handoff)
    }
}

impl QuicCarrier for L7 {
    fn open(
        self: Arc<Self>,
        key: ListenerKey,
        socket: &Arc<UdpSocket>,
    ) -> Result<QuicPort, crate::conn::carrier::OpenError> {
        h3::port(&self, key, socket)
    }

    fn moved(&self, key: ListenerKey, datagram: &[u8]) -> Option<Inbox> {
        h3::route_moved(self, key, datagram)
    }

    fn retain(&self, keep: &dyn Fn(&ListenerKey) -> bool) {
        self.h3_ports.retain(|k, _| keep(k));
    }
}

/// Serves HTTP on `stream` until the client or the server closes it. Plaintext connections
/// wait in [`server::serve`]'s state alone: neither the hand-off nor the TLS state is in it.
pub fn serve(
    rt: Arc<L7>,
    stream: Socket,
    conn: Conn,
    mut h: Handoff,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    h.kv.set_static("conn.layer", "l7");
    if h.tls {
        return crate::boxed::pin_in_place(|| {
            handshake_then(|| terminate_tls(rt, stream, conn, h))
        });
    }
    let read = std::mem::take(&mut h.read);
    let ctx = server::context(&rt, &conn, h);
    crate::boxed::pin_in_place(|| server::serve(stream, ctx, false, read))
}

pin_project_lite::pin_project! {
    /// A TLS connection: its handshake, then its serving. Awaited in one async function, the
    /// handshake's state (the stream mid-handshake, the hand-off, the finished stream the
    /// serving took over) stayed beside the serving's for the connection's life: 4.7 KiB,
    /// against the 1.5 KiB the serving needs. The handshake is boxed: in the same room as the
    /// serving, its 1.9 KiB would set the size of every connection's state after it ended.
    #[project = TlsProj]
    enum Tls<H, S> {
        Handshake { handshake: Pin<Box<H>> },
        Serving { #[pin] serving: S },
    }
}

/// [`Tls`] from its handshake, which yields the serving (or nothing: the connection is over).
fn handshake_then<H, S>(handshake: impl FnOnce() -> H) -> Tls<H, S>
where
    H: Future<Output = Option<S>>,
    S: Future<Output = ()>,
{
    Tls::Handshake {
        handshake: crate::boxed::pin_in_place(handshake),
    }
}

impl<H, S> Future for Tls<H, S>
where
    H: Future<Output = Option<S>>,
    S: Future<Output = ()>,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        loop {
            match self.as_mut().project() {
                TlsProj::Handshake { handshake } => {
                    match std::task::ready!(handshake.as_mut().poll(cx)) {
                        Some(serving) => self.set(Tls::Serving { serving }),
                        None => return std::task::Poll::Ready(()),
                    }
                }
                TlsProj::Serving { serving } => return serving.poll(cx),
            }
        }
    }
}

/// Terminates TLS on `stream`; the serving of HTTP on it, unless the connection is over.
async fn terminate_tls(
    rt: Arc<L7>,
    stream: Socket,
    conn: Conn,
    mut h: Handoff,
) -> Option<impl Future<Output = ()>> {
    let acceptor = match tls::acceptor(&rt, h.cert.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(listener = %conn.key, "TLS termination unavailable: {e}");
            return None;
        }
    };
    let accepted = rt
        .handshake_ticks
        .within(rt.settings.http_header_timeout, acceptor.accept(stream))
        .await;
    match accepted {
        Ok(Ok(tls)) => {
            let (_, session) = tls.get_ref();
            if let Some(name) = session.server_name() {
                h.kv.set("tls.termination.sni", name.to_string());
            }
            if session.alpn_protocol() == Some(crate::acme::challenges::ACME_TLS_ALPN) {
                // An ACME validator: the handshake was the answer (RFC 8737 section 3).
                debug!(listener = %conn.key, peer = %conn.peer, "ACME tls-alpn-01 validation answered");
                return None;
            }
            let h2 = session.alpn_protocol() == Some(b"h2");
            let ctx = server::context(&rt, &conn, h);
            Some(server::serve(tls, ctx, h2, BytesMut::new()))
        }
        Ok(Err(e)) => {
            metrics::counter!("vane_tls_handshake_failures_total").increment(1);
            debug!(listener = %conn.key, peer = %conn.peer, "TLS termination failed: {e}");
            None
        }
        Err(_) => {
            metrics::counter!("vane_tls_handshake_failures_total").increment(1);
            debug!(listener = %conn.key, peer = %conn.peer, "TLS termination timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_size<F>(_: fn(Socket, Arc<server::Ctx>, bool, BytesMut) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn tls_state_size<H, S>(_: fn(Arc<L7>, Socket, Conn, Handoff) -> H) -> usize
    where
        H: Future<Output = Option<S>>,
        S: Future<Output = ()>,
    {
        std::mem::size_of::<Tls<H, S>>()
    }

    /// A TLS connection carries this state for its whole life: the serving's, the handshake
    /// boxed while it runs (4,688 bytes when one async function awaited both, 1,936 when the
    /// handshake shared the serving's room, 1,504 with a `Notify` waiter in the watchdog).
    #[test]
    fn a_tls_connection_state_stays_small() {
        let size = tls_state_size(terminate_tls);
        eprintln!("TLS connection state: {size} bytes");
        assert!(size <= 1472, "{size} bytes");
    }

    /// Every HTTP connection holds its context for its whole life, with the counts of its
    /// `Arc`: within the allocator's 160-byte class (192 with the client's address as a
    /// field value kept in it, and 128 more for the connection's KV in an allocation of its
    /// own).
    #[test]
    fn an_http_connection_context_stays_small() {
        let size = std::mem::size_of::<server::Ctx>() + 16;
        eprintln!("HTTP connection context: {size} bytes");
        assert!(size <= 160, "{size} bytes");
    }

    /// Every plaintext HTTP connection carries this state while it waits for its next
    /// request: hyper's connection, the TLS session and the hand-off must stay out of it
    /// (boxed where used; the hand-off becomes the shared context before the state starts),
    /// and so must second copies of its arguments and of the idle watchdog (784 bytes with
    /// them, 528 without, 592 with the first bytes the L4+ stage read; 312 since the drain
    /// signal is a `Notify` instead of a watch channel, the watchdog counts ticks, and what
    /// only logs read comes through the context; 248 since the watchdog waits on a shared
    /// clock with a 16-byte waiter and the drain signal through it). At most 256: the
    /// allocator's size class it falls in.
    #[test]
    fn an_http_connection_state_stays_small() {
        let size = state_size(server::serve::<Socket>);
        eprintln!("server::serve state: {size} bytes");
        assert!(size <= 256, "{size} bytes");
    }
}
