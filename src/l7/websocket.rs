//! Completing a WebSocket pass-through: the client gets the upstream's `101` (with its
//! headers), then both upgraded connections are joined and bytes copied both ways until one
//! side closes or nothing moves for `WEBSOCKET_IDLE_TIMEOUT_SECS` (0.9.2's tunnel had no idle
//! timeout).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use hyper::header::HeaderMap;
use hyper::upgrade::OnUpgrade;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::body::{self, Body};
use super::idle::{watch, Tracked};
use crate::runtime::Runtime;

/// The client's side of a tunnel: an upgrade hyper completes once the answer is sent, or,
/// on vane's HTTP/2 server, the stream's request body (the answer's body carries the rest).
pub enum ClientSide {
    Upgrade(OnUpgrade),
    Stream(Body),
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// The client's side once it is ready: hyper's upgrade when it completes, a stream at once.
type ClientIo =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Box<dyn Io>, hyper::Error>> + Send>>;

/// The `101` for the client; the tunnel runs in the background once both sides switched.
pub fn complete(
    h2: bool,
    rt: &Runtime,
    client: ClientSide,
    upstream: OnUpgrade,
    upstream_resp: Option<(StatusCode, HeaderMap, Body)>,
) -> Response<Body> {
    let (idle, ticks) = (rt.settings.websocket_idle_timeout, rt.ws_idle_ticks);
    let (client, to_client): (ClientIo, Body) = match client {
        ClientSide::Upgrade(on) => (
            Box::pin(async move { on.await.map(|c| Box::new(TokioIo::new(c)) as Box<dyn Io>) }),
            body::empty(),
        ),
        ClientSide::Stream(from) => {
            let (io, to_client) = super::h2::tunnel::pair(from);
            let io: Box<dyn Io> = Box::new(io);
            (Box::pin(std::future::ready(Ok(io))), to_client)
        }
    };
    tokio::spawn(async move {
        let (c, u) = tokio::join!(client, upstream);
        let (c, u) = match (c, u) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                debug!(
                    "WebSocket upgrade did not complete (client: {:?}, upstream: {:?})",
                    c.err(),
                    u.err()
                );
                return;
            }
        };
        metrics::gauge!("vane_websocket_tunnels").increment(1.0);
        let last = Arc::new(AtomicU64::new(0));
        let mut c = Tracked::new(c, last.clone());
        let mut u = TokioIo::new(u);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut c, &mut u) => {
                debug!("WebSocket tunnel ended: {r:?}");
            }
            _ = watch(last, ticks, idle) => debug!("WebSocket tunnel idle; closed"),
        }
        metrics::gauge!("vane_websocket_tunnels").decrement(1.0);
    });
    let mut resp = Response::new(to_client);
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    if let Some((_, headers, _)) = upstream_resp {
        *resp.headers_mut() = headers;
    }
    if h2 {
        // RFC 8441: a 200 opens the tunnel; HTTP/2 carries no connection-specific headers
        // and no Sec-WebSocket-Accept.
        *resp.status_mut() = StatusCode::OK;
        for name in [
            "connection",
            "upgrade",
            "sec-websocket-accept",
            "keep-alive",
        ] {
            resp.headers_mut().remove(name);
        }
    }
    resp
}
