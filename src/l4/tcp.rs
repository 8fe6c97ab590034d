//! The TCP accept loop of one listener: limits, then one supervised task per connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{error, warn};
use vane_actors::catch::CatchUnwind;

use super::session::{self, Conn};
use crate::config::ListenerKey;
use crate::runtime::Runtime;

/// Accepts until the task is aborted (the listener actor stopped). Connections already
/// accepted are independent tasks and keep running.
pub async fn accept_loop(rt: Arc<Runtime>, key: ListenerKey, listener: TcpListener) {
    let label: Arc<str> = Arc::from(key.to_string());
    let total = metrics::counter!("vane_connections_total", "listener" => label.to_string(), "protocol" => "tcp");
    let active = metrics::gauge!("vane_connections_active", "listener" => label.to_string(), "protocol" => "tcp");
    let panics = metrics::counter!("vane_session_panics_total", "listener" => label.to_string());
    let mut backoff = Duration::from_millis(5);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::from_millis(5);
                x
            }
            Err(e) => {
                // EMFILE and friends are transient: back off, never give up (0.9.2 did).
                warn!(listener = %label, "accept failed: {e}; retrying in {backoff:?}");
                metrics::counter!("vane_accept_errors_total", "listener" => label.clone())
                    .increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(slot) = rt.limits.acquire(peer.ip()) else {
            drop(stream);
            continue;
        };
        let Some(entry) = rt.config.load().listeners.get(&key).cloned() else {
            warn!(listener = %label, "no config found; connection dropped");
            continue;
        };
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| listener.local_addr().unwrap_or(peer));
        let conn = Conn { key, peer, local };
        let armed = crate::ops::chaos::take_session_panic(&rt, &key);
        total.increment(1);
        active.increment(1.0);
        let (rt2, active, panics, label) =
            (rt.clone(), active.clone(), panics.clone(), label.clone());
        tokio::spawn(async move {
            let r = CatchUnwind::new(session::tcp(rt2, entry, stream, conn, armed)).await;
            active.decrement(1.0);
            drop(slot);
            if let Err(msg) = r {
                panics.increment(1);
                error!(listener = %label, peer = %peer, "session panicked, its connection is closed: {msg}");
            }
        });
    }
}
