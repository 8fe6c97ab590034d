//! L4: TCP and UDP listeners, connection limits, the listener flow, and relays. Connections
//! the L4+ stage terminates leave this layer through the carriers in [`crate::conn`].

pub mod buffers;
pub mod limits;
pub mod listener;
pub mod relay;
pub mod session;
pub mod shards;
pub mod sockets;
pub mod tcp;
pub mod turns;
pub mod udp;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::config::ListenerKey;
use crate::conn::{HttpCarrier, QuicCarrier};
use crate::l4p::route::Stage;
use crate::runtime::Runtime;

/// The L4 layer of a running gateway: the shared runtime plus what this layer owns. It
/// dereferences to the [`Runtime`], so a session reads `l4.settings` as it reads its own
/// `l4.limits`.
pub struct L4 {
    pub rt: Arc<Runtime>,
    /// Global and per-IP connection limits (TCP connections and UDP sessions).
    pub limits: Arc<limits::ConnLimits>,
    /// The threads that accept and serve TCP connections.
    pub shards: shards::Shards,
    /// UDP sockets, sessions, the pending budget and the QUIC tables.
    pub udp: udp::UdpState,
    /// Where TCP connections terminated here go (L7), wired by boot.
    pub http: Arc<dyn HttpCarrier>,
    /// Where QUIC sessions terminated here go (HTTP/3), wired by boot.
    pub quic: Arc<dyn QuicCarrier>,
    /// Listening sockets handed over by the process this one replaced (hitless upgrade).
    pub inherited: sockets::Inherited,
    /// That process, while it still serves UDP sessions (their datagrams are relayed to it).
    pub predecessor: std::sync::OnceLock<udp::predecessor::Predecessor>,
    /// The listening TCP sockets this process serves, by name (`tcp:PORT`, `management`,
    /// `metrics`), for a hand-over. Weak: the service that bound one owns it, so a removed
    /// listener is not kept open here.
    pub bound: DashMap<String, std::sync::Weak<std::os::fd::OwnedFd>>,
    /// Chaos: a one-shot panic armed per listener (`/chaos/panic/listeners/.../sessions`).
    session_panics: DashMap<ListenerKey, AtomicBool>,
}

impl std::ops::Deref for L4 {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.rt
    }
}

impl L4 {
    /// The layer over `rt`, handing terminated connections to `http` and `quic`. Starts the
    /// data-plane threads.
    pub fn new(
        rt: Arc<Runtime>,
        http: Arc<dyn HttpCarrier>,
        quic: Arc<dyn QuicCarrier>,
        inherited: sockets::Inherited,
    ) -> Arc<Self> {
        let s = rt.settings;
        Arc::new(Self {
            limits: Arc::new(limits::ConnLimits::new(
                s.max_connections,
                s.max_connections_per_ip,
            )),
            shards: start_shards(
                s.data_plane_threads,
                shards::Tuning {
                    pin: s.data_plane_pin,
                    turn: s.data_plane_turn,
                    slice: s.data_plane_slice,
                },
            ),
            udp: udp::UdpState::new(s),
            http,
            quic,
            inherited,
            predecessor: std::sync::OnceLock::new(),
            bound: DashMap::new(),
            session_panics: DashMap::new(),
            rt,
        })
    }

    /// What the L4+ stage reads.
    pub fn stage(&self) -> Stage<'_> {
        Stage {
            settings: self.rt.settings,
            config: &self.rt.config,
            flow: &self.rt.flow,
            acme: &self.rt.acme.challenges,
            peek_wait: self.rt.peek_wait,
            hello_wait: self.rt.hello_wait,
        }
    }

    /// The TCP listener named `name`: handed over by the predecessor, else bound to `addr`;
    /// registered for the next hand-over, the returned handle keeping it there.
    pub async fn listen_named(
        &self,
        name: &str,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<(tokio::net::TcpListener, Arc<std::os::fd::OwnedFd>)> {
        let l = match self.inherited.take_tcp(name)? {
            Some(l) => l,
            None => tokio::net::TcpListener::bind(addr).await?,
        };
        let held = self.hold(name, &l)?;
        Ok((l, held))
    }

    /// Registers listener `l` as `name` for the next hand-over. The returned duplicate keeps
    /// the entry alive: whoever owns the listener holds it, and dropping it unregisters.
    pub fn hold(
        &self,
        name: &str,
        l: &impl std::os::fd::AsFd,
    ) -> std::io::Result<Arc<std::os::fd::OwnedFd>> {
        let dup = Arc::new(l.as_fd().try_clone_to_owned()?);
        self.bound.insert(name.to_string(), Arc::downgrade(&dup));
        Ok(dup)
    }

    /// Arms a session panic on the listener named `tcp:PORT`; false for unknown names.
    pub fn arm_session_panic(&self, listener: &str) -> bool {
        let snap = self.rt.config.load();
        match snap.listeners.keys().find(|k| k.to_string() == listener) {
            Some(k) => {
                self.session_panics
                    .entry(*k)
                    .or_default()
                    .store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// True (once) when a panic was armed for this listener and chaos routes are enabled.
    pub fn take_session_panic(&self, key: &ListenerKey) -> bool {
        self.rt.settings.chaos
            && self
                .session_panics
                .get(key)
                .is_some_and(|f| f.swap(false, Ordering::SeqCst))
    }
}

fn start_shards(n: usize, how: shards::Tuning) -> shards::Shards {
    shards::Shards::start(n, how).unwrap_or_else(|e| {
        tracing::error!(
            "cannot start {n} data-plane threads ({e}); serving TCP on the shared runtime"
        );
        shards::Shards::none()
    })
}
