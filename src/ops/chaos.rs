//! Fault injection for sessions (the actor faults go through the actor table).
//!
//! `POST /chaos/panic/listeners/tcp:PORT/sessions` arms a one-shot panic: the next connection
//! on that listener panics inside its session once it is relaying, or in its first HTTP
//! request when it was handed to L7.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use dashmap::DashMap;

use crate::config::ListenerKey;
use crate::runtime::Runtime;

fn armed() -> &'static DashMap<ListenerKey, AtomicBool> {
    static ARMED: OnceLock<DashMap<ListenerKey, AtomicBool>> = OnceLock::new();
    ARMED.get_or_init(DashMap::new)
}

/// Arms a session panic on the listener named `tcp:PORT`; false for unknown names.
pub fn arm_session_panic(rt: &Runtime, listener: &str) -> bool {
    let snap = rt.config.load();
    match snap.listeners.keys().find(|k| k.to_string() == listener) {
        Some(k) => {
            armed().entry(*k).or_default().store(true, Ordering::SeqCst);
            true
        }
        None => false,
    }
}

/// True (once) when a panic was armed for this listener.
pub fn take_session_panic(rt: &Runtime, key: &ListenerKey) -> bool {
    rt.settings.chaos
        && armed()
            .get(key)
            .is_some_and(|f| f.swap(false, Ordering::SeqCst))
}
