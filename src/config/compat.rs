//! `vane check --compat`: which of vane's deliberate differences from Vane 0.9.2 a config dir
//! meets, each with the switch that restores 0.9.2's behaviour where there is one
//! (docs/migration.md lists them all).

use super::error::{Problem, Severity};
use super::{ListenerDoc, Proto, Snapshot};
use crate::flow::step::PluginRef;

/// One difference this config meets.
fn note(file: &str, message: String) -> Problem {
    Problem {
        file: file.to_string(),
        at: String::new(),
        message: format!("0.9.2 difference: {message}"),
        severity: Severity::Warning,
    }
}

/// The differences `snap` meets; `invalid` is the number of files that failed to load.
pub fn differences(snap: &Snapshot, invalid: usize) -> Vec<Problem> {
    let mut out = Vec::new();
    if invalid > 0 {
        out.push(note(
            "config dir",
            format!("{invalid} invalid file(s): 0.9.2 started without them; vane refuses to start (`vane run --lenient` starts without them, logging each)"),
        ));
    }
    for (key, entry) in &snap.listeners {
        let l = &entry.doc;
        match (&l.mode, key.proto) {
            (ListenerDoc::Flow(_), Proto::Udp) if !l.per_datagram => out.push(note(
                &entry.file,
                "the flow runs once per UDP session, not for every datagram (`per_datagram: true` restores 0.9.2's)".into(),
            )),
            (ListenerDoc::Legacy(rules), _) if rules.targets().next().is_some() => out.push(note(
                &entry.file,
                "targets count as healthy until their first probe; 0.9.2 probed them all before binding (`HEALTH_FIRST_ROUND_BLOCKS=true` restores that)".into(),
            )),
            _ => {}
        }
    }
    let flows = snap
        .listeners
        .values()
        .filter_map(|e| match &e.doc.mode {
            ListenerDoc::Flow(f) => Some((e.file.as_str(), &**f)),
            ListenerDoc::Legacy(_) => None,
        })
        .chain(snap.resolvers.values().map(|e| (e.file.as_str(), &e.doc)))
        .chain(
            snap.applications
                .values()
                .map(|e| (e.file.as_str(), &e.doc)),
        );
    for (file, flow) in flows {
        if flow
            .root
            .any(&|s| matches!(s.plugin, PluginRef::External(_)))
        {
            out.push(note(
                file,
                "an external plugin that answers its own `failure` branch no longer opens its circuit breaker; only faults (unreachable, timeout, bad reply) do".into(),
            ));
        }
    }
    out
}
