//! The published config: an atomically swapped [`Snapshot`] and the reload that replaces it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::{info, warn};
use vane_actors::config::{ConfigSource, ReloadReport};
use vane_actors::Name;

use super::diff::{self, Changes};
use super::error::Severity;
use super::load;
use super::Snapshot;

/// Owns the current snapshot of a config dir.
pub struct ConfigStore {
    dir: PathBuf,
    current: ArcSwap<Snapshot>,
    /// The last [`HISTORY`] reloads, newest last (for the status page).
    history: std::sync::Mutex<std::collections::VecDeque<Reloaded>>,
}

/// Reloads remembered for operators.
const HISTORY: usize = 10;

/// One reload as the status page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// Unix time, seconds.
    pub at: u64,
    pub ok: bool,
    pub summary: String,
    /// The first problems (all are in the log).
    pub problems: Vec<String>,
}

impl ConfigStore {
    pub fn new(dir: PathBuf, initial: Snapshot) -> Arc<Self> {
        Arc::new(Self {
            dir,
            current: ArcSwap::from_pointee(initial),
            history: Default::default(),
        })
    }

    /// The last reloads, oldest first.
    pub fn history(&self) -> Vec<Reloaded> {
        let h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.iter().cloned().collect()
    }

    fn remember(&self, report: &ReloadReport) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(Reloaded {
            at,
            ok: report.ok,
            summary: report.summary.clone(),
            problems: report.problems.iter().take(5).cloned().collect(),
        });
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current snapshot (lock-free).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reloads the dir, publishes the result and says which actors must refresh. Only the
    /// `config` actor calls this (through [`StoreSource`]), one reload at a time.
    fn reload(&self) -> ReloadReport {
        let report = self.reload_inner();
        self.remember(&report);
        report
    }

    fn reload_inner(&self) -> ReloadReport {
        let old = self.load();
        let loaded = load::load(&self.dir, Some(&old));
        let problems: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        let errors = loaded
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        for p in &loaded.problems {
            match p.severity {
                Severity::Error => warn!("{p}"),
                Severity::Warning => info!("{p}"),
            }
        }
        let changes = diff::diff(&old, &loaded.snapshot);
        if changes.is_empty() {
            let summary = if errors > 0 {
                format!("config reload refused ({errors} problem(s)); the last good config stays in force")
            } else {
                "config reloaded: nothing changed".to_string()
            };
            log_outcome(errors, &summary, &loaded.kept, &loaded.problems);
            metrics::counter!("vane_config_reloads_total", "result" => if errors > 0 { "rejected" } else { "unchanged" }).increment(1);
            return ReloadReport {
                ok: errors == 0,
                changed: Vec::new(),
                problems,
                summary,
            };
        }
        announce(&changes);
        let changed = owners(&changes);
        self.current.store(Arc::new(loaded.snapshot));
        let mut summary = format!("config reloaded: {}", describe(&changes));
        if errors > 0 {
            summary.push_str(&format!(
                "; {errors} problem(s), affected entries keep their last good version"
            ));
        }
        log_outcome(errors, &summary, &loaded.kept, &loaded.problems);
        metrics::counter!("vane_config_reloads_total", "result" => if errors > 0 { "partial" } else { "applied" }).increment(1);
        ReloadReport {
            ok: errors == 0,
            changed,
            problems,
            summary,
        }
    }
}

fn log_outcome(
    errors: usize,
    summary: &str,
    kept: &[load::Kept],
    problems: &[super::error::Problem],
) {
    if errors > 0 {
        warn!("{summary}");
        for k in kept {
            kept_lines(k, problems);
        }
    } else {
        info!("{summary}");
    }
}

/// The 0.9.2 lines for an entry whose new file failed: the area's change signal (scripts wait
/// for it also when the file is invalid) and its keep-last-good warning.
fn kept_lines(k: &load::Kept, problems: &[super::error::Problem]) {
    let why: Vec<String> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error && Some(&p.file) == k.failed.as_ref())
        .map(|p| {
            if p.at.is_empty() {
                p.message.clone()
            } else {
                format!("{}: {}", p.at, p.message)
            }
        })
        .collect();
    let why = if why.is_empty() {
        "several formats of it conflict".to_string()
    } else {
        why.join("; ")
    };
    match &k.what {
        load::What::Listener(key) => {
            let label = match key.proto {
                super::Proto::Tcp => "TCP",
                super::Proto::Udp => "UDP",
            };
            info!("⚙ Config change signal received for {label} Listener, reloading...");
            warn!(
                "New {label} config is invalid. Keeping last known good version. Error: [{}] {why}",
                key.port
            );
        }
        load::What::Resolver(name) => {
            info!("⚙ Config change signal received for Resolver, reloading...");
            warn!(
                "Resolver config reload failed: [{name}] {why}. Keeping last known good version."
            );
        }
        load::What::Application(name) => {
            info!("⚙ Config change signal received for Application, reloading...");
            warn!(
                "Application config reload failed: [{name}] {why}. Keeping last known good version."
            );
        }
        load::What::Plugins | load::What::Nodes | load::What::Acme | load::What::LazyCert => {}
    }
    warn!("{k}");
}

/// The 0.9.2 log lines operators and the Go suite look for.
fn announce(c: &Changes) {
    for (proto, label) in [(super::Proto::Tcp, "TCP"), (super::Proto::Udp, "UDP")] {
        let touched = |v: &Vec<super::ListenerKey>| v.iter().any(|k| k.proto == proto);
        if touched(&c.listeners_added)
            || touched(&c.listeners_removed)
            || touched(&c.listeners_changed)
        {
            info!("⚙ Config change signal received for {label} Listener, reloading...");
        }
        for k in c.listeners_changed.iter().filter(|k| k.proto == proto) {
            info!("↻ PORT {} {label} RELOAD", k.port);
        }
        for k in c.listeners_removed.iter().filter(|k| k.proto == proto) {
            info!("↓ PORT {} {label} DOWN", k.port);
        }
    }
    if !c.resolvers.is_empty() {
        info!("⚙ Config change signal received for Resolver, reloading...");
    }
    if !c.applications.is_empty() {
        info!("⚙ Config change signal received for Application, reloading...");
    }
}

fn describe(c: &Changes) -> String {
    let mut parts = Vec::new();
    let keys = |v: &Vec<super::ListenerKey>| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !c.listeners_added.is_empty() {
        parts.push(format!("listeners added [{}]", keys(&c.listeners_added)));
    }
    if !c.listeners_removed.is_empty() {
        parts.push(format!(
            "listeners removed [{}]",
            keys(&c.listeners_removed)
        ));
    }
    if !c.listeners_changed.is_empty() {
        parts.push(format!(
            "listeners changed [{}]",
            keys(&c.listeners_changed)
        ));
    }
    if !c.resolvers.is_empty() {
        parts.push(format!("resolvers [{}]", c.resolvers.join(" ")));
    }
    if !c.applications.is_empty() {
        parts.push(format!("applications [{}]", c.applications.join(" ")));
    }
    if c.nodes {
        parts.push("nodes".into());
    }
    if c.plugins {
        parts.push("plugins".into());
    }
    if c.certs {
        parts.push("certificates".into());
    }
    if c.acme {
        parts.push("acme".into());
    }
    parts.join("; ")
}

/// Actors whose inputs changed.
fn owners(c: &Changes) -> Vec<Name> {
    let mut out = Vec::new();
    if !c.listeners_added.is_empty() || !c.listeners_removed.is_empty() {
        out.push(Name::Listeners);
    }
    if c.listeners() || c.nodes {
        out.push(Name::Health);
    }
    if c.nodes {
        out.push(Name::Nodes);
    }
    if c.plugins {
        out.push(Name::Plugins);
    }
    if c.certs {
        out.push(Name::Certs);
    }
    if c.acme {
        out.push(Name::Acme);
    }
    out
}

/// The `config` actor reloads through this.
pub struct StoreSource(pub Arc<ConfigStore>);

impl ConfigSource for StoreSource {
    fn dir(&self) -> PathBuf {
        self.0.dir.clone()
    }

    fn reload(&self) -> ReloadReport {
        self.0.reload()
    }
}
