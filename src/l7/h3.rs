//! HTTP/3: QUIC connections that a `quic` resolver upgraded to `httpx` are terminated here.
//! The UDP listener keeps its socket: one QUIC endpoint per port reads the sessions'
//! datagrams from a channel (a "virtual socket") and sends straight from the listener's
//! socket. Each request runs application `h3` (else `httpx`) with the session's KV.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use dashmap::DashMap;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::debug;

use super::body::BoxError;
use super::server::{handle, Aborted, Ctx};
use super::L7;
use crate::config::ListenerKey;
use crate::conn::carrier::OpenError;
use crate::conn::{Inbox, QuicPort};
use crate::flow::kv::Kv;

/// How our HTTP/3 endpoints shape connection IDs: a QUIC-LB prefix when this instance has a
/// server ID (first octet, then the ID), random bytes, and a 4-byte keyed tag.
struct CidShape {
    prefix: Vec<u8>,
    random: usize,
}

impl CidShape {
    fn len(&self) -> usize {
        self.prefix.len() + self.random + 4
    }
}

static SHAPE: std::sync::OnceLock<CidShape> = std::sync::OnceLock::new();

fn shape() -> &'static CidShape {
    SHAPE.get_or_init(|| CidShape {
        prefix: Vec::new(),
        random: 8,
    })
}

/// Puts `server_id` (QUIC-LB plaintext, `config_id`) into every connection ID issued from now
/// on, so a balancer in front finds this instance from any of them. Set once, before the
/// first endpoint opens.
pub fn use_server_id(server_id: &[u8], config_id: u8) {
    let random = 7;
    let len = 1 + server_id.len() + random + 4;
    let mut prefix = vec![crate::l4p::quic::lb::first_octet(config_id, len)];
    prefix.extend_from_slice(server_id);
    let _ = SHAPE.set(CidShape { prefix, random });
}

/// The per-process key of the connection-ID tags.
fn tag_key() -> &'static std::collections::hash_map::RandomState {
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEY.get_or_init(std::collections::hash_map::RandomState::new)
}

fn tag(body: &[u8]) -> [u8; 4] {
    use std::hash::BuildHasher;
    let h = tag_key().hash_one(body);
    let b = h.to_le_bytes();
    [b[0], b[1], b[2], b[3]]
}

/// True for a connection ID one of our HTTP/3 endpoints issued. Every CID quinn hands out
/// (including those sent encrypted in NEW_CONNECTION_ID, which a client may switch to when
/// it moves) carries a keyed tag, so a packet from an unknown address can be recognised
/// without any table.
pub fn is_ours(cid: &[u8]) -> bool {
    let s = shape();
    let n = s.len();
    cid.len() == n && cid.starts_with(&s.prefix) && tag(&cid[..n - 4]) == cid[n - 4..]
}

/// quinn's generator for our endpoints: prefix, random bytes, their tag.
struct TaggedCids;

impl quinn::ConnectionIdGenerator for TaggedCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let s = shape();
        let mut cid = Vec::with_capacity(s.len());
        cid.extend_from_slice(&s.prefix);
        cid.extend((0..s.random).map(|_| rand::random::<u8>()));
        let t = tag(&cid);
        cid.extend_from_slice(&t);
        quinn::ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        shape().len()
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The endpoint inbox for a short-header packet whose connection ID one of our endpoints on
/// `key` issued (a client that changed address).
pub fn route_moved(rt: &L7, key: ListenerKey, data: &[u8]) -> Option<Inbox> {
    let first = *data.first()?;
    if first & 0x80 != 0 {
        return None;
    }
    let cid = data.get(1..1 + shape().len())?;
    if !is_ours(cid) {
        return None;
    }
    rt.h3_ports.get(&key).map(|p| p.tx.clone())
}

/// The KV of each terminated session, by client address, for its connection's requests.
pub type SessionKeys = Arc<DashMap<SocketAddr, Kv>>;

/// The HTTP/3 side of one UDP port.
pub struct H3Port {
    pub tx: Inbox,
    pub sessions: SessionKeys,
    _endpoint: quinn::Endpoint,
}

impl H3Port {
    /// The port as the UDP layer holds it.
    fn handle(&self) -> QuicPort {
        QuicPort {
            inbox: self.tx.clone(),
            sessions: self.sessions.clone(),
        }
    }
}

impl Drop for H3Port {
    /// The listener went away: close the endpoint, which also ends its accept loop.
    fn drop(&mut self) {
        self._endpoint.close(0u32.into(), b"listener removed");
    }
}

struct VirtualSocket {
    socket: Arc<UdpSocket>,
    batcher: super::quic_send::Batcher,
    rx: Mutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    local: SocketAddr,
}

impl std::fmt::Debug for VirtualSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualSocket")
            .field("local", &self.local)
            .finish()
    }
}

#[derive(Debug)]
struct Writable(Arc<UdpSocket>);

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_send_ready(cx)
    }
}

impl AsyncUdpSocket for VirtualSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable(self.socket.clone()))
    }

    fn try_send(&self, t: &Transmit<'_>) -> io::Result<()> {
        self.batcher.try_send(&self.socket, t)
    }

    fn max_transmit_segments(&self) -> usize {
        self.batcher.max_segments()
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        match rx.poll_recv(cx) {
            Poll::Ready(Some((addr, data))) => {
                let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
                    return Poll::Ready(Ok(0));
                };
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                *m = RecvMeta {
                    addr,
                    len: n,
                    stride: n,
                    ..RecvMeta::default()
                };
                Poll::Ready(Ok(1))
            }
            Poll::Ready(None) => Poll::Ready(Err(io::Error::other("listener gone"))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The HTTP/3 endpoint of `key`, started on first use. Looked up and started under the
/// table's lock for `key`: sessions that open it at the same moment get one endpoint (a second
/// one would replace the first, and dropping that closed every connection on it).
pub fn port(
    rt: &Arc<L7>,
    key: ListenerKey,
    socket: &Arc<UdpSocket>,
) -> Result<QuicPort, OpenError> {
    let entry = match rt.h3_ports.entry(key) {
        dashmap::Entry::Occupied(p) => return Ok(p.get().handle()),
        dashmap::Entry::Vacant(v) => v,
    };
    let (tx, rx) = mpsc::channel(rt.settings.quic_virtual_channel_capacity);
    let local = socket.local_addr()?;
    let vs = VirtualSocket {
        socket: socket.clone(),
        batcher: Default::default(),
        rx: Mutex::new(rx),
        local,
    };
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config.cid_generator(|| Box::new(TaggedCids));
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        endpoint_config,
        Some(super::tls::h3_server_config(rt)?),
        Arc::new(vs),
        Arc::new(quinn::TokioRuntime),
    )?;
    let sessions: SessionKeys = Arc::new(DashMap::new());
    let (ep, rt2, s2) = (endpoint.clone(), rt.clone(), sessions.clone());
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let peer = incoming.remote_address();
            let kv = s2.get(&peer).map(|k| k.clone()).unwrap_or_default();
            let app = if rt2.config.load().applications.contains_key("h3") {
                "h3"
            } else {
                "httpx"
            };
            let conn = crate::conn::Conn { key, peer, local };
            let ctx = Arc::new(Ctx::new(rt2.clone(), app, kv, &conn, true));
            tokio::spawn(connection(ctx, incoming));
        }
    });
    let port = entry.insert(H3Port {
        tx,
        sessions,
        _endpoint: endpoint,
    });
    Ok(port.handle())
}

async fn connection(ctx: Arc<Ctx>, incoming: quinn::Incoming) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            debug!(peer = %ctx.peer, "QUIC handshake failed: {e}");
            return;
        }
    };
    let mut h3c = match h3::server::Connection::new(h3_quinn::Connection::new(conn)).await {
        Ok(c) => c,
        Err(e) => {
            debug!(peer = %ctx.peer, "HTTP/3 set-up failed: {e}");
            return;
        }
    };
    loop {
        match h3c.accept().await {
            Ok(Some(resolver)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => request(ctx, req, stream).await,
                        Err(e) => debug!("HTTP/3 request head: {e}"),
                    }
                });
            }
            Ok(None) => return,
            Err(e) => {
                debug!(peer = %ctx.peer, "HTTP/3 connection ended: {e}");
                return;
            }
        }
    }
}

/// The receiving half of an HTTP/3 request stream, server or client side.
pub trait RecvData: Unpin + Send + 'static {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>>;
}

impl RecvData for h3::server::RequestStream<h3_quinn::RecvStream, Bytes> {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>> {
        self.poll_recv_data(cx)
            .map_ok(|b| b.map(|mut b| b.copy_to_bytes(b.remaining())))
            .map_err(|e| Box::new(e) as BoxError)
    }
}

impl RecvData for h3::client::RequestStream<h3_quinn::RecvStream, Bytes> {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>> {
        self.poll_recv_data(cx)
            .map_ok(|b| b.map(|mut b| b.copy_to_bytes(b.remaining())))
            .map_err(|e| Box::new(e) as BoxError)
    }
}

/// A body read from an HTTP/3 stream: a request body here, a response body upstream.
pub struct H3Body<S>(pub S);

impl<S: RecvData> HttpBody for H3Body<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0
            .poll_data(cx)
            .map(|r| r.transpose().map(|r| r.map(Frame::data)))
    }
}

async fn request(
    ctx: Arc<Ctx>,
    req: hyper::Request<()>,
    stream: h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
) {
    let (mut send, recv) = stream.split();
    let req = req.map(|()| H3Body(recv).boxed());
    match handle(ctx, req).await {
        Ok(reply) => {
            let (parts, mut body) = reply.into_response().into_parts();
            if let Err(e) = send
                .send_response(hyper::Response::from_parts(parts, ()))
                .await
            {
                debug!("HTTP/3 response head: {e}");
                return;
            }
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Ok(data) = f.into_data() {
                            if send.send_data(data).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        debug!("HTTP/3 response body: {e}");
                        send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                        return;
                    }
                }
            }
            let _ = send.finish().await;
        }
        Err(Aborted) => send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions of one port that open its endpoint at the same moment (the first datagrams
    /// of a burst, on different threads) all get the same endpoint: a second one replaced
    /// the first in the table, and dropping the first closed every connection on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_opening_a_port_at_once_share_one_endpoint() {
        let dir = tempfile::tempdir().expect("dir");
        let store = crate::config::store::ConfigStore::new(
            dir.path().to_path_buf(),
            crate::config::Snapshot::default(),
        );
        let l7 = L7::new(crate::runtime::Runtime::new(crate::settings::get(), store));
        let handle = tokio::runtime::Handle::current();
        for round in 0..10u16 {
            let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
            let key = ListenerKey {
                port: socket.local_addr().expect("addr").port(),
                proto: crate::config::Proto::Udp,
            };
            let start = Arc::new(std::sync::Barrier::new(6));
            let threads: Vec<_> = (0..6)
                .map(|_| {
                    let (l7, socket, start, handle) =
                        (l7.clone(), socket.clone(), start.clone(), handle.clone());
                    std::thread::spawn(move || {
                        let _in_runtime = handle.enter();
                        start.wait();
                        port(&l7, key, &socket).map(|p| p.inbox)
                    })
                })
                .collect();
            let inboxes: Vec<Inbox> = threads
                .into_iter()
                .map(|t| t.join().expect("thread").expect("port"))
                .collect();
            assert!(
                inboxes.iter().all(|i| i.same_channel(&inboxes[0])),
                "round {round}: more than one endpoint"
            );
            assert!(
                !inboxes[0].is_closed(),
                "round {round}: the endpoint in use was dropped"
            );
        }
    }
}
