//! An actor that owns one piece of running work (a bound port, a probe loop, an HTTP endpoint).
//!
//! The work itself runs in tasks started by a [`Service`]; the actor owns the returned
//! [`Guard`]. When the actor crashes its state is dropped, the guard with it, so the work
//! stops, and the restarted actor starts it again from the current configuration.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use crate::control::{self, Control};
use crate::status::ActorTable;
use crate::supervisor::ChildSpec;

/// Keeps a service's work alive; dropping it stops the work.
pub struct Guard(#[allow(dead_code)] Box<dyn Any + Send>);

impl Guard {
    pub fn new<T: Send + 'static>(inner: T) -> Self {
        Guard(Box::new(inner))
    }
}

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Future returned by [`Service::start`].
pub type StartFuture = Pin<Box<dyn Future<Output = Result<Guard, String>> + Send>>;

/// Data-plane work owned by a [`ServiceActor`].
pub trait Service: Send + Sync + 'static {
    /// Starts the work from the current configuration.
    fn start(&self) -> StartFuture;
    /// How long to wait before trying again after `start` failed.
    fn retry_after(&self) -> Duration {
        Duration::from_secs(2)
    }
}

pub enum ServiceMsg {
    Control(Control),
    /// Try `start` again after a failure.
    Retry,
}

impl From<Control> for ServiceMsg {
    fn from(c: Control) -> Self {
        ServiceMsg::Control(c)
    }
}

#[derive(Clone)]
pub struct ServiceArgs {
    pub name: String,
    pub parent: String,
    pub table: ActorTable,
    pub service: Arc<dyn Service>,
}

pub struct ServiceState {
    args: ServiceArgs,
    guard: Option<Guard>,
}

pub struct ServiceActor;

impl ServiceActor {
    /// A [`ChildSpec`] that starts this service under a supervisor.
    pub fn child_spec(args: ServiceArgs) -> ChildSpec {
        ChildSpec::linked(args.name.clone(), || ServiceActor, args)
    }
}

async fn start_work(myself: &ActorRef<ServiceMsg>, state: &mut ServiceState) {
    state.guard = None;
    match state.args.service.start().await {
        Ok(g) => state.guard = Some(g),
        Err(e) => {
            let wait = state.args.service.retry_after();
            warn!(actor = %state.args.name, "start failed: {e}; retrying in {wait:?}");
            myself.send_after(wait, || ServiceMsg::Retry);
        }
    }
}

impl Actor for ServiceActor {
    type Msg = ServiceMsg;
    type State = ServiceState;
    type Arguments = ServiceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ServiceArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.table.set_running(
            &args.name,
            &args.parent,
            control::handle_for(myself.clone()),
        );
        let mut state = ServiceState { args, guard: None };
        start_work(&myself, &mut state).await;
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.guard = None;
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
            ServiceMsg::Control(Control::Refresh) => {
                info!(actor = %state.args.name, "refreshing from the current configuration");
                start_work(&myself, state).await;
            }
            ServiceMsg::Control(c) => control::apply_fault(&state.args.name, c).await,
            ServiceMsg::Retry => {
                if state.guard.is_none() {
                    start_work(&myself, state).await;
                }
            }
        }
        Ok(())
    }
}
