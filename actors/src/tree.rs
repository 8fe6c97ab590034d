//! Assembles the supervision tree of the architecture page and runs its root.
//!
//! ```text
//! root ─ config
//!      ─ registries ─ nodes, certs, plugins, health, acme
//!      ─ memory
//!      ─ quic
//!      ─ listeners ─ tcp:PORT / udp:PORT (dynamic, from the config snapshot)
//!      ─ management
//!      ─ metrics
//! ```

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};

use crate::config::{ConfigActor, ConfigArgs, ConfigInbox, ConfigSource};
use crate::memory::{MemoryActor, MemoryArgs};
use crate::names::Name;
use crate::policy::RestartPolicy;
use crate::quic::{QuicActor, QuicArgs};
use crate::service::{Service, ServiceActor, ServiceArgs};
use crate::status::ActorTable;
use crate::supervisor::{ChildSource, Supervisor, SupervisorArgs, SupervisorMsg};

/// Everything the tree needs from the data plane.
pub struct TreeSpec<R> {
    pub table: ActorTable,
    pub policy: RestartPolicy,
    pub config: Arc<dyn ConfigSource>,
    pub config_debounce: Duration,
    /// Filled in by the running `config` actor (the management API reloads through it).
    pub config_inbox: ConfigInbox,
    /// Children of `registries` (`Name::Nodes`, ...), in start order.
    pub registries: Vec<(Name, Arc<dyn Service>)>,
    pub memory: MemoryArgs,
    pub quic: QuicArgs<R>,
    pub listeners: Arc<dyn ChildSource>,
    /// Optional services directly under root (`Name::Management`, `Name::Metrics`).
    pub services: Vec<(Name, Arc<dyn Service>)>,
}

/// Starts the tree; the returned handle finishes when the root stops (or gives up).
pub async fn start<R: crate::quic::Route>(
    spec: TreeSpec<R>,
) -> Result<(ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>), ractor::SpawnErr> {
    let table = spec.table.clone();
    let service = |name: String, parent: &str, svc: Arc<dyn Service>| {
        ServiceActor::child_spec(ServiceArgs {
            name,
            parent: parent.to_string(),
            table: table.clone(),
            service: svc,
        })
    };
    let mut children = vec![ConfigActor::child_spec(ConfigArgs {
        name: Name::Config.as_str().into(),
        parent: Name::Root.as_str().into(),
        table: table.clone(),
        source: spec.config.clone(),
        debounce: spec.config_debounce,
        inbox: spec.config_inbox.clone(),
    })];
    let registries = spec
        .registries
        .into_iter()
        .map(|(n, s)| service(n.as_str().into(), Name::Registries.as_str(), s))
        .collect();
    children.push(Supervisor::child_spec(SupervisorArgs {
        name: Name::Registries.as_str().into(),
        parent: Name::Root.as_str().into(),
        table: table.clone(),
        policy: spec.policy,
        children: registries,
        source: None,
    }));
    let mut memory = spec.memory;
    memory.name = Name::Memory.as_str().into();
    memory.parent = Name::Root.as_str().into();
    children.push(MemoryActor::child_spec(memory));
    let mut quic = spec.quic;
    quic.name = Name::Quic.as_str().into();
    quic.parent = Name::Root.as_str().into();
    children.push(QuicActor::<R>::child_spec(quic));
    children.push(Supervisor::child_spec(SupervisorArgs {
        name: Name::Listeners.as_str().into(),
        parent: Name::Root.as_str().into(),
        table: table.clone(),
        policy: spec.policy,
        children: Vec::new(),
        source: Some(spec.listeners),
    }));
    for (n, s) in spec.services {
        children.push(service(n.as_str().into(), Name::Root.as_str(), s));
    }
    let root = SupervisorArgs {
        name: Name::Root.as_str().into(),
        parent: String::new(),
        table,
        policy: spec.policy,
        children,
        source: None,
    };
    Actor::spawn(None, Supervisor, root).await
}
