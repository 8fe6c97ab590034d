//! L7: HTTP/1.1 and HTTP/2 terminated on a connection the L4+ layer handed over (plaintext,
//! or TLS terminated here with the certificate store), each request running the application
//! flow of its protocol.

pub mod body;
pub mod buffer;
pub mod cgi;
pub mod client;
pub mod exchange;
pub mod h3;
pub mod h3_client;
pub mod idle;
pub mod inputs;
pub mod response;
pub mod server;
pub mod static_files;
pub mod tls;
pub mod upstream;
pub mod websocket;

use std::sync::Arc;

use tokio::net::TcpStream;
use tracing::debug;

use crate::flow::kv::Kv;
use crate::l4::session::Conn;
use crate::runtime::Runtime;

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
}

/// Application names a plaintext resolver may upgrade to.
pub fn is_plain_app(name: &str) -> bool {
    matches!(name, "httpx" | "h1" | "h2" | "http/1.1")
}

/// Serves HTTP on `stream` until the client or the server closes it.
pub async fn serve(rt: Arc<Runtime>, stream: TcpStream, conn: Conn, mut h: Handoff) {
    h.kv.set("conn.layer", "l7");
    if !h.tls {
        server::serve(rt, stream, conn, h).await;
        return;
    }
    let acceptor = match tls::acceptor(&rt, h.cert.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(listener = %conn.key, "TLS termination unavailable: {e}");
            return;
        }
    };
    let accepted =
        tokio::time::timeout(rt.settings.http_header_timeout, acceptor.accept(stream)).await;
    match accepted {
        Ok(Ok(tls)) => {
            let (_, session) = tls.get_ref();
            if let Some(name) = session.server_name() {
                h.kv.set("tls.termination.sni", name.to_string());
            }
            server::serve(rt, tls, conn, h).await;
        }
        Ok(Err(e)) => {
            metrics::counter!("vane_tls_handshake_failures_total").increment(1);
            debug!(listener = %conn.key, peer = %conn.peer, "TLS termination failed: {e}");
        }
        Err(_) => {
            metrics::counter!("vane_tls_handshake_failures_total").increment(1);
            debug!(listener = %conn.key, peer = %conn.peer, "TLS termination timed out");
        }
    }
}
