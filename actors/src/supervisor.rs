//! A one-for-one supervisor with a restart budget, backoff and optional dynamic children.
//!
//! ractor does not restart anything by itself: a supervisor must re-spawn failed children in
//! `handle_supervisor_evt`. This one does, within a [`RestartPolicy`]; when the budget is
//! spent it fails itself so that its own parent (or, at the root, the process) decides.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tracing::{error, info, warn};

use crate::control::{self, Control};
use crate::policy::{RestartBudget, RestartPolicy};
use crate::status::ActorTable;

/// Future returned by a [`StartFn`].
pub type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// Spawns one child linked to the given supervisor cell. Called again on every restart, so it
/// must build the child's state from the current config snapshot.
pub type StartFn = Arc<dyn Fn(ActorCell) -> SpawnFuture + Send + Sync>;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Tree name, unique under the whole root (`listeners/tcp:80`).
    pub name: String,
    pub start: StartFn,
}

impl ChildSpec {
    /// A spec that spawns `make()` linked to its supervisor, with a fresh clone of `args` on
    /// every (re)start.
    pub fn linked<A, F>(name: impl Into<String>, make: F, args: A::Arguments) -> ChildSpec
    where
        A: Actor,
        A::Arguments: Clone + Sync,
        F: Fn() -> A + Send + Sync + 'static,
    {
        ChildSpec {
            name: name.into(),
            start: Arc::new(move |parent: ActorCell| {
                let (actor, args) = (make(), args.clone());
                Box::pin(async move {
                    let (r, _) = Actor::spawn_linked(None, actor, args, parent).await?;
                    Ok(r.get_cell())
                })
            }),
        }
    }
}

/// Supplies the children a supervisor should have right now, each with a fingerprint of its
/// configuration; a child whose fingerprint changed is replaced.
pub trait ChildSource: Send + Sync + 'static {
    fn desired(&self) -> Vec<(ChildSpec, u64)>;
}

/// Messages a supervisor handles.
pub enum SupervisorMsg {
    /// Fault injection or refresh (refresh re-reads the [`ChildSource`]).
    Control(Control),
    /// Backoff elapsed: start the named child again.
    Restart(String),
}

impl From<Control> for SupervisorMsg {
    fn from(c: Control) -> Self {
        SupervisorMsg::Control(c)
    }
}

/// Arguments of a supervisor; clonable so that its parent can restart it.
#[derive(Clone)]
pub struct SupervisorArgs {
    pub name: String,
    pub parent: String,
    pub table: ActorTable,
    pub policy: RestartPolicy,
    pub children: Vec<ChildSpec>,
    pub source: Option<Arc<dyn ChildSource>>,
}

struct Child {
    spec: ChildSpec,
    fingerprint: u64,
    cell: Option<ActorCell>,
}

/// Children of one supervisor instance. Dropping it stops them all, so a supervisor that
/// crashes never leaves orphans behind when its replacement starts fresh ones.
#[derive(Default)]
struct Children {
    by_name: HashMap<String, Child>,
    by_id: HashMap<ActorId, String>,
    /// Children stopped on purpose; their termination is not a crash.
    retired: HashSet<ActorId>,
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.by_name.values() {
            if let Some(cell) = &child.cell {
                cell.stop(Some("supervisor gone".into()));
            }
        }
    }
}

pub struct SupervisorState {
    args: SupervisorArgs,
    children: Children,
    budget: RestartBudget,
}

/// The supervisor actor.
pub struct Supervisor;

impl Supervisor {
    /// A [`ChildSpec`] that starts a supervisor with these arguments.
    pub fn child_spec(args: SupervisorArgs) -> ChildSpec {
        ChildSpec::linked(args.name.clone(), || Supervisor, args)
    }
}

async fn start_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    name: &str,
) -> Result<(), ActorProcessingErr> {
    let Some(child) = state.children.by_name.get_mut(name) else {
        return Ok(());
    };
    if child.cell.is_some() {
        return Ok(());
    }
    match (child.spec.start)(myself.get_cell()).await {
        Ok(cell) => {
            state.children.by_id.insert(cell.get_id(), name.to_string());
            child.cell = Some(cell);
            Ok(())
        }
        Err(e) => {
            warn!(actor = name, "start failed: {e}");
            schedule_restart(myself, state, name)
        }
    }
}

fn schedule_restart(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    name: &str,
) -> Result<(), ActorProcessingErr> {
    state.args.table.record_restart(name);
    match state.budget.on_crash(&state.args.policy, Instant::now()) {
        Some(backoff) => {
            let name = name.to_string();
            myself.send_after(backoff, move || SupervisorMsg::Restart(name));
            Ok(())
        }
        None => {
            error!(
                supervisor = %state.args.name,
                "restart budget exhausted ({} restarts in {:?}); giving up",
                state.args.policy.max_restarts, state.args.policy.window
            );
            Err(format!("{}: restart budget exhausted", state.args.name).into())
        }
    }
}

async fn sync_children(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
) -> Result<(), ActorProcessingErr> {
    let Some(source) = state.args.source.clone() else {
        return Ok(());
    };
    let desired = source.desired();
    let wanted: HashSet<String> = desired.iter().map(|(s, _)| s.name.clone()).collect();
    let gone: Vec<String> = state
        .children
        .by_name
        .keys()
        .filter(|n| !wanted.contains(*n))
        .cloned()
        .collect();
    for name in gone {
        retire(state, &name);
        state.args.table.remove(&name);
    }
    for (spec, fingerprint) in desired {
        let name = spec.name.clone();
        let same = state
            .children
            .by_name
            .get(&name)
            .is_some_and(|c| c.fingerprint == fingerprint);
        if same {
            continue;
        }
        if state.children.by_name.contains_key(&name) {
            info!(actor = %name, "configuration changed; replacing");
            retire(state, &name);
        }
        state.children.by_name.insert(
            name.clone(),
            Child {
                spec,
                fingerprint,
                cell: None,
            },
        );
        start_child(myself, state, &name).await?;
    }
    Ok(())
}

/// Stops a child on purpose and forgets it.
fn retire(state: &mut SupervisorState, name: &str) {
    if let Some(child) = state.children.by_name.remove(name) {
        if let Some(cell) = child.cell {
            state.children.by_id.remove(&cell.get_id());
            state.children.retired.insert(cell.get_id());
            cell.stop(Some("removed".into()));
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.table.set_running(
            &args.name,
            &args.parent,
            control::handle_for(myself.clone()),
        );
        let mut children = Children::default();
        for spec in &args.children {
            children.by_name.insert(
                spec.name.clone(),
                Child {
                    spec: spec.clone(),
                    fingerprint: 0,
                    cell: None,
                },
            );
        }
        Ok(SupervisorState {
            args,
            children,
            budget: RestartBudget::default(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let names: Vec<String> = state.args.children.iter().map(|c| c.name.clone()).collect();
        for name in names {
            start_child(&myself, state, &name).await?;
        }
        sync_children(&myself, state).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.args.table.set_stopped(&state.args.name);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Control(Control::Refresh) => sync_children(&myself, state).await,
            SupervisorMsg::Control(c) => {
                control::apply_fault(&state.args.name, c).await;
                Ok(())
            }
            SupervisorMsg::Restart(name) => start_child(&myself, state, &name).await,
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let id = cell.get_id();
        if state.children.retired.remove(&id) {
            return Ok(());
        }
        let Some(name) = state.children.by_id.remove(&id) else {
            return Ok(());
        };
        warn!(actor = %name, "actor exited ({why}); restarting");
        if let Some(child) = state.children.by_name.get_mut(&name) {
            child.cell = None;
        }
        schedule_restart(&myself, state, &name)
    }
}
