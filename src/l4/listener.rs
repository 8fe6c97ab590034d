//! One actor per (port, transport): binds the socket and owns its accept or receive loop.
//! A restart re-binds the port; connections already accepted are unaffected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;
use vane_actors::service::{AbortOnDrop, Guard, Service, ServiceActor, ServiceArgs, StartFuture};
use vane_actors::supervisor::{ChildSource, ChildSpec};
use vane_actors::Name;

use super::L4;
use crate::config::{ListenerKey, Proto};

/// Bind attempts before a start counts as failed (the actor then retries later).
const BIND_ATTEMPTS: usize = 5;

pub struct ListenerService {
    rt: Arc<L4>,
    key: ListenerKey,
}

impl Service for ListenerService {
    fn start(&self) -> StartFuture {
        let (rt, key) = (self.rt.clone(), self.key);
        Box::pin(async move {
            let addr = SocketAddr::new(rt.settings.listen_ip, key.port);
            let label = key.proto.as_str().to_ascii_uppercase();
            info!("↑ PORT {} {label} UP", key.port);
            let mut last_err = None;
            let mut held = None;
            for attempt in 0..BIND_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let tasks = match key.proto {
                    Proto::Tcp => {
                        super::sockets::tcp(&rt.inherited, key, addr, rt.settings.reuse_port)
                            .and_then(|l| {
                                // A duplicate for a hand-over, owned by this start's guard.
                                held = Some(rt.hold(&key.to_string(), &l)?);
                                super::tcp::spawn_accept_loops(&rt, key, l)
                            })
                    }
                    Proto::Udp => {
                        super::udp::endpoint(&rt, key, addr)
                            .await
                            .map(|(sock, sessions)| {
                                vec![tokio::spawn(super::udp::recv_loop(
                                    rt.clone(),
                                    key,
                                    sock,
                                    sessions,
                                ))]
                            })
                    }
                };
                match tasks {
                    Ok(tasks) => {
                        let name = if key.proto == Proto::Tcp {
                            "Tcp"
                        } else {
                            "Udp"
                        };
                        info!("✓ {name} listener on port {} is UP", key.port);
                        let guards: Vec<AbortOnDrop> = tasks.into_iter().map(AbortOnDrop).collect();
                        return Ok(Guard::new((guards, held)));
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            let e = last_err.map(|e| e.to_string()).unwrap_or_default();
            metrics::counter!("vane_listener_bind_failures_total", "listener" => key.to_string())
                .increment(1);
            Err(format!("✗ cannot bind {} {addr}: {e}", key.proto.as_str()))
        })
    }

    fn retry_after(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// The listener set of the current snapshot, for the `listeners` supervisor.
pub struct Listeners {
    pub rt: Arc<L4>,
}

impl Listeners {
    /// What a listener actor reads when it starts: its bind address. A listener whose
    /// address changes is replaced; flows are read per connection and need no restart.
    fn fingerprint(&self, key: ListenerKey) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        BuildHasherDefault::<DefaultHasher>::default().hash_one((
            self.rt.settings.listen_ip,
            key.port,
            key.proto.as_str(),
        ))
    }
}

impl ChildSource for Listeners {
    fn desired(&self) -> Vec<(ChildSpec, u64)> {
        let snap = self.rt.config.load();
        // UDP sockets outlive listener restarts, not the listener's removal.
        let wanted = |k: &ListenerKey| snap.listeners.contains_key(k);
        self.rt.udp.retain(&wanted);
        self.rt.quic.retain(&wanted);
        snap.listeners
            .keys()
            .map(|key| {
                let args = ServiceArgs {
                    name: format!("{}/{key}", Name::Listeners),
                    parent: Name::Listeners.as_str().into(),
                    table: self.rt.actors.clone(),
                    service: Arc::new(ListenerService {
                        rt: self.rt.clone(),
                        key: *key,
                    }),
                };
                (ServiceActor::child_spec(args), self.fingerprint(*key))
            })
            .collect()
    }
}
