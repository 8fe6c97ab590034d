//! The `config` actor: watches the config dir, debounces bursts of file events, reloads, and
//! tells the owners of whatever changed to refresh.
//!
//! Loading and validation are data-plane work behind [`ConfigSource`]; this actor only decides
//! *when* to reload and *whom* to tell.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::control::{self, Control};
use crate::service::AbortOnDrop;
use crate::status::ActorTable;
use crate::supervisor::ChildSpec;

/// The result of one reload attempt.
#[derive(Debug, Clone, Default)]
pub struct ReloadReport {
    /// True when the new configuration was accepted (possibly with some entries kept at their
    /// last good version).
    pub ok: bool,
    /// The actors whose inputs changed and must refresh (`listeners`, ...).
    pub changed: Vec<crate::Name>,
    /// Every problem found, one `FILE: path: message` per line.
    pub problems: Vec<String>,
    /// One human line describing the outcome.
    pub summary: String,
}

/// Loads, validates and publishes a config dir. Implemented by the data plane.
pub trait ConfigSource: Send + Sync + 'static {
    fn dir(&self) -> PathBuf;
    /// Reloads the whole dir and publishes the result. Blocking (file I/O).
    fn reload(&self) -> ReloadReport;
}

pub enum ConfigMsg {
    Control(Control),
    /// Reload now; the reply (if any) gets the report.
    Reload(Option<RpcReplyPort<ReloadReport>>),
}

impl From<Control> for ConfigMsg {
    fn from(c: Control) -> Self {
        ConfigMsg::Control(c)
    }
}

#[derive(Clone)]
pub struct ConfigArgs {
    pub name: String,
    pub parent: String,
    pub table: ActorTable,
    pub source: Arc<dyn ConfigSource>,
    /// Quiet time after the last file event before reloading.
    pub debounce: Duration,
    /// Where the running instance publishes itself for [`ConfigInbox::reload`].
    pub inbox: ConfigInbox,
}

/// The one way to reload besides the file watcher: ask the running `config` actor and wait
/// for its report. The actor handles one message at a time, so reloads never overlap and
/// the config has exactly one writer. A restarted actor publishes its new address here.
#[derive(Clone, Default)]
pub struct ConfigInbox(Arc<arc_swap::ArcSwapOption<ActorRef<ConfigMsg>>>);

/// Why [`ConfigInbox::reload`] has no report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReloadError {
    #[error("the config actor is not running")]
    NotRunning,
    #[error("the config actor did not answer within {0:?}")]
    TimedOut(Duration),
}

impl ConfigInbox {
    fn publish(&self, actor: ActorRef<ConfigMsg>) {
        self.0.store(Some(Arc::new(actor)));
    }

    /// Reloads now through the actor; the report says what was applied (owners are told
    /// before it is returned).
    pub async fn reload(&self, timeout: Duration) -> Result<ReloadReport, ReloadError> {
        let actor = self.0.load_full().ok_or(ReloadError::NotRunning)?;
        match actor
            .call(|port| ConfigMsg::Reload(Some(port)), Some(timeout))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(report)) => Ok(report),
            Ok(ractor::rpc::CallResult::Timeout) => Err(ReloadError::TimedOut(timeout)),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(ReloadError::NotRunning),
        }
    }
}

pub struct ConfigState {
    args: ConfigArgs,
    _watcher: Option<notify::RecommendedWatcher>,
    _debouncer: AbortOnDrop,
}

pub struct ConfigActor;

impl ConfigActor {
    pub fn child_spec(args: ConfigArgs) -> ChildSpec {
        ChildSpec::linked(args.name.clone(), || ConfigActor, args)
    }
}

/// True for paths the watcher must ignore: anything hidden below the config dir.
pub fn is_hidden(root: &Path, path: &Path) -> bool {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|s| s.starts_with('.') && s != "." && s != "..")
    })
}

fn relevant(root: &Path, ev: &notify::Event) -> bool {
    use notify::EventKind;
    if matches!(ev.kind, EventKind::Access(_)) {
        return false;
    }
    ev.paths.iter().any(|p| !is_hidden(root, p))
}

/// Tells every actor named in `report.changed` to refresh from the new snapshot.
pub fn notify_owners(table: &ActorTable, report: &ReloadReport) {
    for owner in &report.changed {
        if !table.control(owner.as_str(), Control::Refresh) {
            info!(actor = %owner, "not running; it will read the new config when it starts");
        }
    }
}

impl Actor for ConfigActor {
    type Msg = ConfigMsg;
    type State = ConfigState;
    type Arguments = ConfigArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ConfigArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.table.set_running(
            &args.name,
            &args.parent,
            control::handle_for(myself.clone()),
        );
        args.inbox.publish(myself.clone());
        let root = args.source.dir();
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let watch_root = root.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if relevant(&watch_root, &ev) {
                    let _ = tx.send(());
                }
            }
        })
        .and_then(|mut w| w.watch(&root, RecursiveMode::Recursive).map(|_| w));
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                warn!("cannot watch {}: {e}; hot reload disabled", root.display());
                None
            }
        };
        let quiet = args.debounce;
        let me = myself.clone();
        let debouncer = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Coalesce a burst: wait until the dir has been quiet for `quiet`.
                while let Ok(Some(())) = tokio::time::timeout(quiet, rx.recv()).await {}
                if me.send_message(ConfigMsg::Reload(None)).is_err() {
                    break;
                }
            }
        });
        Ok(ConfigState {
            args,
            _watcher: watcher,
            _debouncer: AbortOnDrop(debouncer),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // After a restart we may have missed events; an identical config restarts nothing.
        let _ = myself.send_message(ConfigMsg::Reload(None));
        Ok(())
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
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConfigMsg::Control(c) => control::apply_fault(&state.args.name, c).await,
            ConfigMsg::Reload(reply) => {
                let source = state.args.source.clone();
                let report = tokio::task::spawn_blocking(move || source.reload())
                    .await
                    .unwrap_or_else(|e| ReloadReport {
                        ok: false,
                        summary: format!("reload task failed: {e}"),
                        ..Default::default()
                    });
                notify_owners(&state.args.table, &report);
                if let Some(port) = reply {
                    let _ = port.send(report);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_paths_are_ignored_anywhere_below_root() {
        let root = Path::new("/etc/vane");
        assert!(is_hidden(root, Path::new("/etc/vane/.reload")));
        assert!(is_hidden(
            root,
            Path::new("/etc/vane/listener/[80]/.tcp.yaml.swp")
        ));
        assert!(is_hidden(root, Path::new("/etc/vane/.git/HEAD")));
        assert!(!is_hidden(
            root,
            Path::new("/etc/vane/listener/[80]/tcp.yaml")
        ));
    }
}
