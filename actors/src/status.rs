//! The live table of actors behind `GET /actors` and `vane_actor_restarts_total`.
//!
//! Supervisors write it; the management API reads it. It is a concurrent map rather than an
//! actor so that reading it never waits on a mailbox.

use std::sync::Arc;

use dashmap::DashMap;

use crate::control::{Control, ControlHandle};

/// Lifecycle state as reported to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorState {
    Running,
    Restarting,
    Stopped,
}

impl ActorState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorState::Running => "running",
            ActorState::Restarting => "restarting",
            ActorState::Stopped => "stopped",
        }
    }
}

/// One row of `GET /actors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorInfo {
    pub name: String,
    pub parent: String,
    pub status: ActorState,
    pub restarts: u64,
}

struct Entry {
    parent: String,
    status: ActorState,
    restarts: u64,
    control: Option<ControlHandle>,
}

/// Shared, cheaply clonable table of every supervised actor by its tree name.
#[derive(Clone, Default)]
pub struct ActorTable {
    inner: Arc<DashMap<String, Entry>>,
}

impl ActorTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `name` (child of `parent`) is running and how to reach it for chaos.
    pub fn set_running(&self, name: &str, parent: &str, control: ControlHandle) {
        let mut e = self.inner.entry(name.to_string()).or_insert_with(|| Entry {
            parent: parent.to_string(),
            status: ActorState::Running,
            restarts: 0,
            control: None,
        });
        e.parent = parent.to_string();
        e.status = ActorState::Running;
        e.control = Some(control);
    }

    /// Marks a crash: the actor is down and a restart is pending.
    pub fn record_restart(&self, name: &str) {
        if let Some(mut e) = self.inner.get_mut(name) {
            e.status = ActorState::Restarting;
            e.restarts += 1;
            e.control = None;
        }
        metrics::counter!("vane_actor_restarts_total", "actor" => name.to_string()).increment(1);
    }

    pub fn set_stopped(&self, name: &str) {
        if let Some(mut e) = self.inner.get_mut(name) {
            e.status = ActorState::Stopped;
            e.control = None;
        }
    }

    /// Forgets an actor that was removed on purpose (e.g. a listener whose port was deleted).
    pub fn remove(&self, name: &str) {
        self.inner.remove(name);
    }

    pub fn get(&self, name: &str) -> Option<ActorInfo> {
        self.inner.get(name).map(|e| ActorInfo {
            name: name.to_string(),
            parent: e.parent.clone(),
            status: e.status,
            restarts: e.restarts,
        })
    }

    /// Every actor, sorted by name so the output is stable.
    pub fn snapshot(&self) -> Vec<ActorInfo> {
        let mut rows: Vec<ActorInfo> = self
            .inner
            .iter()
            .map(|e| ActorInfo {
                name: e.key().clone(),
                parent: e.parent.clone(),
                status: e.status,
                restarts: e.restarts,
            })
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        rows
    }

    /// Delivers a chaos command to a running actor; false when it is unknown or down.
    pub fn control(&self, name: &str, cmd: Control) -> bool {
        let handle = self.inner.get(name).and_then(|e| e.control.clone());
        match handle {
            Some(h) => h(cmd),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_is_counted_and_status_follows() {
        let t = ActorTable::new();
        t.set_running("memory", "root", Arc::new(|_| true));
        t.record_restart("memory");
        let row = t.get("memory").expect("row");
        assert_eq!(row.status, ActorState::Restarting);
        assert_eq!(row.restarts, 1);
        assert!(
            !t.control("memory", Control::Panic),
            "down actors take no commands"
        );
        t.set_running("memory", "root", Arc::new(|_| true));
        assert_eq!(t.get("memory").map(|r| r.status), Some(ActorState::Running));
        assert!(t.control("memory", Control::Panic));
    }
}
