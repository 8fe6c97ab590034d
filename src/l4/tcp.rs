//! The TCP accept loop of one listener: limits, then one supervised task per connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::net::TcpListener;
use tracing::{error, warn};
use vane_actors::catch::CatchUnwind;

use super::session;
use super::L4;
use crate::config::{Entry, Listener, ListenerKey};
use crate::conn::{Conn, Socket};

/// Starts one accept loop per data-plane shard on `listener` (each on its own duplicate of the
/// socket, so each shard's reactor watches it); the listener actor aborts them on stop.
pub fn spawn_accept_loops(
    rt: &Arc<L4>,
    key: ListenerKey,
    listener: TcpListener,
) -> std::io::Result<Vec<tokio::task::JoinHandle<()>>> {
    let socket = listener.into_std()?;
    let mut copies = Vec::with_capacity(rt.shards.len().max(1));
    for _ in 0..rt.shards.len().max(1) {
        copies.push(socket.try_clone()?);
    }
    let mut copies = copies.into_iter();
    Ok(rt.shards.spawn_each(|shard| {
        let (rt, copy) = (rt.clone(), copies.next());
        async move {
            // Registered with the reactor of the shard this runs on.
            match copy.map(Acceptor::new) {
                Some(Ok(l)) => accept_loop(rt, key, l, shard).await,
                Some(Err(e)) => error!(listener = %key, "cannot watch the listener socket: {e}"),
                None => {}
            }
        }
    }))
}

/// Accepts on shard `here` until the task is aborted (the listener actor stopped).
/// Connections already accepted are independent tasks and keep running, on this shard or,
/// when it runs more connections than another by more than one, on the least loaded.
async fn accept_loop(rt: Arc<L4>, key: ListenerKey, listener: Acceptor, here: usize) {
    let label: Arc<str> = Arc::from(key.to_string());
    let total = metrics::counter!("vane_connections_total", "listener" => label.to_string(), "protocol" => "tcp");
    let meters = Arc::new(Meters {
        active: metrics::gauge!("vane_connections_active", "listener" => label.to_string(), "protocol" => "tcp"),
        panics: metrics::counter!("vane_session_panics_total", "listener" => label.to_string()),
        label: label.clone(),
    });
    let mut backoff = Duration::from_millis(5);
    // A listener bound to one address needs no getsockname per connection to know it.
    let bound = listener
        .socket()
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    // Whether the listener holds back its connections' first ACK, as its flow asks: set now
    // and again when a reload changes the flow.
    let mut held = None;
    let mut hold = |upgrades: bool| {
        if held != Some(upgrades) {
            super::sockets::hold_first_ack(listener.socket(), upgrades);
            held = Some(upgrades);
        }
    };
    if let Some(entry) = rt.config.load().listeners.get(&key) {
        hold(entry.doc.upgrades());
    }
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
        hold(entry.doc.upgrades());
        let local = match bound {
            Some(a) => a,
            None => stream
                .local_addr()
                .unwrap_or_else(|_| listener.socket().local_addr().unwrap_or(peer)),
        };
        let conn = Conn { key, peer, local };
        let armed = rt.take_session_panic(&key);
        total.increment(1);
        meters.active.increment(1.0);
        let placed = rt.shards.place(here);
        let shard = placed.shard();
        let watch = Watch {
            meters: meters.clone(),
            peer,
            _slot: slot,
            _placed: placed,
        };
        if shard == here {
            start(rt.clone(), entry, Socket::fresh(stream), conn, armed, watch);
            continue;
        }
        // Moved: no reactor has the socket yet, so it goes as it is.
        let moved = rt.clone();
        rt.shards.spawn_on(shard, async move {
            start(moved, entry, Socket::fresh(stream), conn, armed, watch)
        });
    }
}

/// A listener socket watched by one shard's reactor. What it accepts is not registered
/// anywhere yet: a connection joins a reactor only when it first waits ([`Socket`]).
struct Acceptor(AsyncFd<std::net::TcpListener>);

impl Acceptor {
    fn new(listener: std::net::TcpListener) -> io::Result<Self> {
        vane_sys::watch::listener(listener).map(Self)
    }

    fn socket(&self) -> &std::net::TcpListener {
        self.0.get_ref()
    }

    /// Waits through the reactor's one reader slot (`poll_read_ready`) rather than a
    /// `readable()` future, which queues a waiter under a lock on every wait: 549
    /// instructions per accepted connection.
    async fn accept(&self) -> io::Result<(std::net::TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| loop {
            let mut ready = std::task::ready!(self.0.poll_read_ready(cx))?;
            if let Ok(accepted) = ready.try_io(|l| accept_non_blocking(l.get_ref())) {
                return std::task::Poll::Ready(accepted);
            }
        })
        .await
    }
}

/// One `accept4` that returns the socket in non-blocking mode, as the shards need it.
#[cfg(target_os = "linux")]
fn accept_non_blocking(l: &std::net::TcpListener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    use rustix::net::{acceptfrom_with, SocketFlags};
    let (fd, addr) = acceptfrom_with(l, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    let peer = addr
        .and_then(|a| SocketAddr::try_from(a).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no peer address"))?;
    Ok((std::net::TcpStream::from(fd), peer))
}

#[cfg(not(target_os = "linux"))]
fn accept_non_blocking(l: &std::net::TcpListener) -> io::Result<(std::net::TcpStream, SocketAddr)> {
    let (s, peer) = l.accept()?;
    s.set_nonblocking(true)?;
    Ok((s, peer))
}

/// Spawns the connection's supervised task on the current shard.
fn start(
    rt: Arc<L4>,
    entry: Arc<Entry<Listener>>,
    stream: Socket,
    conn: Conn,
    armed: bool,
    watch: Watch,
) {
    let peer = watch.peer;
    let span = crate::spans::connection_span(&watch.meters.label, peer);
    // Boxed where it is built: tokio moves a task's future by value about five times between
    // `spawn` and its end (into the task cell, then each change of stage), and this state is
    // sized for a relay (up to 768 bytes); a pointer moves for it instead.
    let session = crate::boxed::pin_in_place(|| session::tcp(rt, entry, stream, conn, armed));
    // Connections only carry a span when traces are exported; otherwise they would pay for
    // one for nothing.
    if span.is_disabled() {
        tokio::spawn(supervised(session, watch));
    } else {
        use tracing::Instrument;
        let rest_span = span.clone();
        let session = async move {
            let rest = session.await;
            rest.map(|r| Box::pin(r.instrument(rest_span)) as _)
        };
        tokio::spawn(supervised(session.instrument(span), watch));
    }
}

/// What a supervised future leaves to run after it, under the same supervision.
trait Ending {
    fn rest(self) -> session::Rest;
}

impl Ending for () {
    fn rest(self) -> session::Rest {
        None
    }
}

impl Ending for session::Rest {
    fn rest(self) -> session::Rest {
        self
    }
}

/// A listener's handles that each of its connection tasks reports to, shared: one reference
/// to take and drop per connection instead of three.
struct Meters {
    active: metrics::Gauge,
    panics: metrics::Counter,
    label: Arc<str>,
}

/// What a connection task reports when it ends.
struct Watch {
    meters: Arc<Meters>,
    peer: std::net::SocketAddr,
    _slot: crate::l4::limits::Slot,
    _placed: super::shards::Placed,
}

/// The serving of a connection handed to HTTP (see [`session::Rest`]).
type RestFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

pin_project_lite::pin_project! {
    /// Where a connection's task is: in its L4 session, or in what the session left to run.
    #[project = StageProj]
    enum Stage<F> {
        Session { #[pin] f: CatchUnwind<F> },
        Rest { f: CatchUnwind<RestFuture> },
    }
}

pin_project_lite::pin_project! {
    /// Runs one connection; a panic closes only it, and is counted and logged. A hand-written
    /// future rather than an `async fn`: an async fn would keep a second copy of the session's
    /// state (its argument) for the connection's whole life. When the session hands the
    /// connection on, its state is dropped and the rest runs in the same task (a task of its
    /// own cost a spawn, a task cell and a turn of the scheduler for every new connection).
    struct Supervised<F> {
        #[pin]
        stage: Stage<F>,
        watch: Option<Watch>,
    }
}

fn supervised<F: std::future::Future>(session: F, watch: Watch) -> Supervised<F> {
    Supervised {
        stage: Stage::Session {
            f: CatchUnwind::new(session),
        },
        watch: Some(watch),
    }
}

impl<F> std::future::Future for Supervised<F>
where
    F: std::future::Future,
    F::Output: Ending,
{
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let ended = loop {
            let mut this = self.as_mut().project();
            match this.stage.as_mut().project() {
                StageProj::Session { f } => match std::task::ready!(f.poll(cx)) {
                    Ok(ended) => match ended.rest() {
                        // The session's state goes; the connection goes on, still counted.
                        Some(rest) => this.stage.set(Stage::Rest {
                            f: CatchUnwind::new(rest),
                        }),
                        None => break Ok(()),
                    },
                    Err(msg) => break Err(msg),
                },
                StageProj::Rest { f } => break std::task::ready!(std::pin::Pin::new(f).poll(cx)),
            }
        };
        if let Some(w) = self.project().watch.take() {
            w.meters.active.decrement(1.0);
            if let Err(msg) = ended {
                w.meters.panics.increment(1);
                error!(listener = %w.meters.label, peer = %w.peer, "session panicked, its connection is closed: {msg}");
            }
        }
        std::task::Poll::Ready(())
    }
}
