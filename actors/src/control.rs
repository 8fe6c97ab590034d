//! Commands every actor understands besides its own protocol: chaos faults and "refresh".

use std::sync::Arc;
use std::time::Duration;

/// A command delivered to an actor through the [`crate::ActorTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Panic inside the message handler, as a bug would (chaos route).
    Panic,
    /// Block the handler for this long, as a slow dependency would (chaos route).
    Stall(Duration),
    /// Rebuild from the current config snapshot (sent by the `config` actor after a reload).
    Refresh,
}

/// Sends a [`Control`] to one actor instance; returns false when its mailbox is closed.
pub type ControlHandle = Arc<dyn Fn(Control) -> bool + Send + Sync>;

/// Runs a chaos command inside a handler. Panics on purpose for [`Control::Panic`].
pub async fn apply_fault(name: &str, cmd: Control) {
    match cmd {
        Control::Panic => panic!("chaos: panic requested for actor {name}"),
        Control::Stall(d) => tokio::time::sleep(d).await,
        Control::Refresh => {}
    }
}

/// Builds a [`ControlHandle`] for an actor whose message type can carry a [`Control`].
pub fn handle_for<M>(actor: ractor::ActorRef<M>) -> ControlHandle
where
    M: From<Control> + Send + 'static,
{
    Arc::new(move |cmd| actor.send_message(M::from(cmd)).is_ok())
}
