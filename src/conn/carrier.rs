//! Hand-offs from L4 to a layer above it. The L4+ stage decides that a connection is to be
//! terminated here ([`Handoff`]); the L4 session then passes it to the carrier boot gave it.
//! The traits keep the arrow one way: L4 calls them, L7 implements them.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{Conn, Socket};
use crate::config::ListenerKey;
use crate::flow::kv::Kv;

/// What the L4+ layer hands to L7: the application to run and the connection's KV.
pub struct Handoff {
    /// Application name (`httpx`, or `h1`/`h2`/`http/1.1` from a plaintext resolver).
    pub app: String,
    pub kv: Kv,
    /// Terminate TLS first (the resolver was `tls`).
    pub tls: bool,
    /// Certificate id the upgrade pinned (`cert` input); else chosen by SNI.
    pub cert: Option<String>,
    /// Chaos: the first request of this connection panics (`/chaos/panic/listeners/.../sessions`).
    pub panic_first_request: bool,
    /// What the L4+ stage read of a plaintext connection (the start of its first request): the
    /// HTTP server starts from these bytes.
    pub read: bytes::BytesMut,
}

/// Application names a plaintext resolver may upgrade to.
pub fn is_plain_app(name: &str) -> bool {
    matches!(name, "httpx" | "h1" | "h2" | "http/1.1")
}

/// Serves a TCP connection the L4+ stage chose to terminate (HTTP/1.1, HTTP/2, TLS first
/// when the hand-off says so).
pub trait HttpCarrier: Send + Sync {
    /// Serves `stream` until either side closes it.
    fn serve(
        self: Arc<Self>,
        stream: Socket,
        conn: Conn,
        handoff: Handoff,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Datagrams for a terminating endpoint: (client address, bytes).
pub type Inbox = mpsc::Sender<(SocketAddr, Bytes)>;

/// A UDP port's terminating endpoint as the UDP layer sees it.
#[derive(Clone)]
pub struct QuicPort {
    pub inbox: Inbox,
    /// The KV of each terminated session, by client address, for its connection's requests.
    pub sessions: Arc<DashMap<SocketAddr, Kv>>,
}

/// Why a terminating endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("listener socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("QUIC configuration: {0}")]
    Quic(String),
}

/// Terminates QUIC sessions of UDP listeners (HTTP/3). The UDP layer keeps the socket and
/// feeds the endpoint of each port through its [`Inbox`].
pub trait QuicCarrier: Send + Sync {
    /// The endpoint of `key`, started on first use; it sends from `socket`.
    fn open(
        self: Arc<Self>,
        key: ListenerKey,
        socket: &Arc<UdpSocket>,
    ) -> Result<QuicPort, OpenError>;
    /// The inbox of `key`'s endpoint when `datagram` belongs to one of its connections whose
    /// client changed address (a connection ID the endpoint issued).
    fn moved(&self, key: ListenerKey, datagram: &[u8]) -> Option<Inbox>;
    /// Closes the endpoints of listeners `keep` no longer wants.
    fn retain(&self, keep: &dyn Fn(&ListenerKey) -> bool);
}
