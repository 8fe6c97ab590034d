//! Start-up and shutdown: prepare the config dir, load it (refusing a bad one), start the
//! supervision tree, wait for a signal, drain.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};
use vane_actors::memory::{self, MemoryArgs, MemorySettings};
use vane_actors::policy::RestartPolicy;
use vane_actors::quic::QuicArgs;
use vane_actors::service::Service;
use vane_actors::tree::{self, TreeSpec};
use vane_actors::Name;

use crate::config::error::Severity;
use crate::config::load;
use crate::config::store::{ConfigStore, StoreSource};
use crate::l4::L4;
use crate::l7::L7;
use crate::ops::{management, metrics as prom, registries};
use crate::runtime::Runtime;

/// Creates what Vane expects in a config dir (never overwriting anything).
pub fn prepare_dir(dir: &Path) -> std::io::Result<()> {
    for d in ["listener", "resolver", "certs", "application", "bin"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let plugins = dir.join("plugins.json");
    if std::fs::metadata(&plugins)
        .map(|m| m.len() == 0)
        .unwrap_or(true)
    {
        std::fs::write(&plugins, "{}\n")?;
    }
    let has_nodes = crate::config::format::EXTENSIONS
        .iter()
        .any(|e| dir.join(format!("nodes.{e}")).exists());
    if !has_nodes {
        std::fs::write(dir.join("nodes.yml"), "")?;
    }
    Ok(())
}

/// A warning for each 0.9.2 variable that is set but has no effect here.
fn replaced_env_problems() -> Vec<crate::config::error::Problem> {
    crate::settings::replaced_in_env()
        .into_iter()
        .map(|(name, instead)| crate::config::error::Problem {
            file: "environment".into(),
            at: name.into(),
            message: format!("set but has no effect in this build: {instead}"),
            severity: Severity::Warning,
        })
        .collect()
}

/// `vane check`: prints every problem (as text, or one JSON document on stdout with `json`),
/// returns the exit code.
pub fn check(dir: &Path, json: bool, compat: bool) -> i32 {
    if !dir.is_dir() {
        if json {
            println!(
                "{}",
                serde_json::json!({"ok": false, "config": dir.display().to_string(),
                    "problems": [{"file": "", "at": "", "severity": "error", "message": "not a directory"}]})
            );
        } else {
            eprintln!("{}: not a directory", dir.display());
        }
        return 1;
    }
    let mut loaded = load::load(dir, None);
    loaded.problems.extend(crate::certs::load(dir, None).1);
    loaded.problems.extend(replaced_env_problems());
    let ok = !loaded.has_errors();
    if compat {
        let invalid = invalid_files(&loaded.problems);
        let notes = crate::config::compat::differences(&loaded.snapshot, invalid);
        loaded.problems.extend(notes);
    }
    let s = &loaded.snapshot;
    if json {
        let problems: Vec<_> = loaded
            .problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "file": p.file,
                    "at": p.at,
                    "severity": match p.severity { Severity::Error => "error", Severity::Warning => "warning" },
                    "message": p.message,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "ok": ok,
                "config": dir.display().to_string(),
                "listeners": s.listeners.len(),
                "resolvers": s.resolvers.len(),
                "applications": s.applications.len(),
                "nodes": s.nodes.doc.names.len(),
                "acme_orders": s.acme.doc.orders.len(),
                "problems": problems,
            })
        );
        return if ok { 0 } else { 1 };
    }
    for p in &loaded.problems {
        match p.severity {
            Severity::Error => println!("{p}"),
            Severity::Warning => eprintln!("{p}"),
        }
    }
    if !ok {
        let n = loaded
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        eprintln!("{}: {n} problem(s); the config is not valid", dir.display());
        1
    } else {
        eprintln!(
            "{}: ok ({} listener(s), {} resolver(s), {} application(s), {} node(s), {} acme order(s))",
            dir.display(),
            s.listeners.len(),
            s.resolvers.len(),
            s.applications.len(),
            s.nodes.doc.names.len(),
            s.acme.doc.orders.len()
        );
        0
    }
}

/// Files with at least one error.
fn invalid_files(problems: &[crate::config::error::Problem]) -> usize {
    problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.file.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// `vane run`: returns the process exit code. `lenient` starts without the files that fail
/// (0.9.2's start) instead of refusing.
pub async fn run(dir: &Path, lenient: bool) -> i32 {
    // Before anything listens: a signal that comes before its handler takes its default
    // action, which for each of these ends the process.
    let signals = Signals::install();
    let settings = crate::settings::get();
    if let Some(t) = &settings.access_token {
        if !(16..=128).contains(&t.len()) {
            error!(
                "ACCESS_TOKEN must be 16-128 characters (got {}); refusing to start",
                t.len()
            );
            return 1;
        }
    } else {
        info!("Access token not set, management API disabled");
    }
    if let Err(e) = prepare_dir(dir) {
        error!("cannot prepare config dir {}: {e}", dir.display());
        return 1;
    }
    match crate::certs::ensure_default(dir) {
        Ok(true) => info!(
            "✓ generated a self-signed default certificate in {}",
            dir.join("certs").display()
        ),
        Ok(false) => {}
        Err(e) => warn!("cannot create the default certificate: {e}"),
    }
    let mut loaded = load::load(dir, None);
    loaded.problems.extend(crate::certs::load(dir, None).1);
    for p in &loaded.problems {
        match p.severity {
            Severity::Error => error!("{p}"),
            Severity::Warning => warn!("{p}"),
        }
    }
    if loaded.has_errors() && !lenient {
        error!(
            "✗ the config in {} is not valid; not starting (run `vane check` for the list, or `vane run --lenient` to start without the invalid files)",
            dir.display()
        );
        return 1;
    }
    if loaded.has_errors() {
        warn!(
            "⚠ starting without {} invalid file(s) (--lenient); they load once fixed",
            invalid_files(&loaded.problems)
        );
    }
    // Without an endpoint nobody can read the metrics: no recorder, and recording costs nothing.
    let prometheus = settings.metrics_addr.and_then(|_| prom::install());
    let store = ConfigStore::new(dir.to_path_buf(), loaded.snapshot);
    if settings.quic_lb_server_id_invalid {
        error!("QUIC_LB_SERVER_ID must be 1 to 8 bytes of hex");
        return 1;
    }
    let rt = Runtime::new(settings, store.clone());
    if let Some(url) = &settings.ratelimit_redis_url {
        // rediss:// builds its TLS client from the process-wide provider; ours is ring.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        if let Err(e) = rt.flow.share_counts(url, settings.ratelimit_redis_timeout) {
            error!("RATELIMIT_REDIS_URL: {e}");
            return 1;
        }
    }
    // Certificates before any listener binds: a TLS or QUIC handshake in the first moments
    // must not meet an empty store (the certs registry reloads them later on changes).
    rt.reload_certs();
    // L4 hands the connections its flows terminate to L7 through the carrier traits.
    let l7 = L7::new(rt.clone());
    // Started by a predecessor's SIGUSR2: its sockets, instead of binding the ports again.
    #[cfg(unix)]
    let mut handed = match crate::ops::upgrade::receive() {
        None => None,
        Some(Ok(h)) => Some(h),
        Some(Err(e)) => {
            error!("upgrade: cannot take over the previous process's sockets: {e}");
            return 1;
        }
    };
    #[cfg(unix)]
    let inherited = handed
        .as_mut()
        .map(|h| std::mem::take(&mut h.sockets))
        .unwrap_or_default();
    #[cfg(not(unix))]
    let inherited = crate::l4::sockets::Inherited::default();
    let l4 = L4::new(rt.clone(), l7.clone(), l7, inherited);
    #[cfg(unix)]
    if let Some(p) = handed.as_mut().and_then(|h| h.predecessor.take()) {
        let _ = l4.predecessor.set(p);
    }
    let snap = store.load();
    info!(
        "⚙ config loaded from {}: {} listener(s), {} resolver(s), {} application(s), {} node(s)",
        dir.display(),
        snap.listeners.len(),
        snap.resolvers.len(),
        snap.applications.len(),
        snap.nodes.doc.names.len()
    );
    for p in replaced_env_problems() {
        warn!("{p}");
    }
    metrics::counter!("vane_config_reloads_total", "result" => "applied").absolute(0);

    if settings.health_first_round_blocks {
        // 0.9.2's start: the first connections already see which targets are down.
        let started = Instant::now();
        crate::ops::registries::round(&rt).await;
        info!(
            "health: first probe round done in {:.0?} before binding (HEALTH_FIRST_ROUND_BLOCKS); {} target(s) down",
            started.elapsed(),
            rt.upstreams.health.down().len()
        );
    }
    let spec = tree_spec(&l4, store, prometheus);
    let (root, mut handle) = match tree::start(spec).await {
        Ok(x) => x,
        Err(e) => {
            error!("cannot start the supervision tree: {e}");
            return 1;
        }
    };
    reload_on_hangup(rt.clone(), signals.hangup);
    #[cfg(target_os = "linux")]
    {
        crate::ops::systemd::ready(&format!("serving {} listener(s)", snap.listeners.len()));
        crate::ops::systemd::spawn_watchdog();
    }
    #[cfg(unix)]
    if let Some(h) = handed.take() {
        // Ready means serving every port the config has: the predecessor stops accepting then.
        let deadline = Instant::now() + settings.upgrade_timeout;
        while !serving_everything(&l4) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !serving_everything(&l4) {
            error!("upgrade: not every listener came up; the previous process keeps serving");
            return 1;
        }
        if let Err(e) = h.ready() {
            warn!("upgrade: could not tell the previous process we serve: {e}");
        }
        let unused = l4.inherited.close_unclaimed();
        if unused > 0 {
            info!("upgrade: {unused} handed-over socket(s) are not in this config; closed");
        }
    }
    let upgraded = upgrade_on_usr2(l4.clone(), signals.upgrade);
    let signal = shutdown_signal(signals.terminate, signals.interrupt);
    tokio::select! {
        _ = signal => info!("Signal received, shutdown now..."),
        pid = upgraded => {
            info!("upgrade: PID {pid} serves the ports; this process stops accepting and drains");
            // Under systemd the new process becomes the service's main process (only the main
            // process may say so with NotifyAccess=main).
            #[cfg(target_os = "linux")]
            let _ = crate::ops::systemd::notify(&format!("MAINPID={pid}"));
        }
        _ = &mut handle => {
            error!("✗ the root supervisor gave up (restart budget exhausted); exiting");
            return 1;
        }
    }
    #[cfg(target_os = "linux")]
    crate::ops::systemd::stopping();
    // HTTP connections finish their requests and close (HTTP/2: GOAWAY) instead of idling
    // through the grace period.
    rt.draining.start();
    root.stop(Some("shutdown".into()));
    let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    drain(&l4, settings.shutdown_grace).await;
    info!("Server has been shut down gracefully.");
    0
}

fn tree_spec(
    l4: &Arc<L4>,
    store: Arc<ConfigStore>,
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> TreeSpec<crate::l4::udp::QuicRoute> {
    let rt = &l4.rt;
    let s = rt.settings;
    let mut services: Vec<(Name, Arc<dyn Service>)> = Vec::new();
    if let Some(token) = &s.access_token {
        services.push((
            Name::Management,
            Arc::new(management::Management {
                rt: l4.clone(),
                token: token.clone(),
            }),
        ));
    }
    if let (Some(addr), Some(handle)) = (s.metrics_addr, prometheus) {
        services.push((
            Name::Metrics,
            Arc::new(prom::MetricsEndpoint {
                addr,
                handle,
                l4: l4.clone(),
            }),
        ));
    }
    TreeSpec {
        table: rt.actors.clone(),
        policy: RestartPolicy {
            max_restarts: s.restart_max,
            window: s.restart_window,
            ..RestartPolicy::default()
        },
        config: Arc::new(StoreSource(store)),
        config_debounce: Duration::from_millis(500),
        config_inbox: rt.config_inbox.clone(),
        registries: vec![
            (
                Name::Nodes,
                Arc::new(registries::NodesRegistry(rt.clone())) as Arc<dyn Service>,
            ),
            (Name::Certs, Arc::new(registries::CertsRegistry(rt.clone()))),
            (
                Name::Plugins,
                Arc::new(registries::PluginsRegistry(rt.clone())),
            ),
            (
                Name::Health,
                Arc::new(registries::HealthChecker(rt.clone())),
            ),
            (
                Name::Acme,
                Arc::new(crate::ops::acme::AcmeWorker(rt.clone())),
            ),
        ],
        memory: MemoryArgs {
            name: Name::Memory.as_str().into(),
            parent: Name::Root.as_str().into(),
            table: rt.actors.clone(),
            settings: MemorySettings {
                adaptive: s.l7_adaptive,
                ratio: s.l7_ratio,
                fixed_limit: s.l7_fixed_limit,
            },
            budget: rt.memory.clone(),
            reader: Arc::new(memory::read_available),
            tick: Duration::from_secs(1),
        },
        quic: QuicArgs {
            name: Name::Quic.as_str().into(),
            parent: Name::Root.as_str().into(),
            table: rt.actors.clone(),
            tables: l4.udp.cids.tables.clone(),
            // Ended connections leave the table at once; the sweep catches what idles out.
            sweep_every: (s.quic_session_ttl / 4)
                .clamp(Duration::from_secs(1), Duration::from_secs(30)),
        },
        listeners: Arc::new(crate::l4::listener::Listeners { rt: l4.clone() }),
        services,
    }
}

/// `SIGHUP` reloads the config as `POST /reload` does (through the `config` actor, the one
/// writer), as nginx and HAProxy operators expect from `systemctl reload`. Without a handler
/// the signal would end the process.
fn reload_on_hangup(rt: Arc<crate::runtime::Runtime>, hup: Option<Signal>) {
    #[cfg(unix)]
    {
        let Some(mut hup) = hup else {
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                info!("SIGHUP received: reloading the config");
                #[cfg(target_os = "linux")]
                crate::ops::systemd::reloading();
                let done = crate::ops::config_api::reload_applied(&rt).await;
                #[cfg(target_os = "linux")]
                crate::ops::systemd::ready("reloaded");
                match done {
                    Ok(r) if r.ok => info!("✓ reload (SIGHUP): {}", r.summary),
                    Ok(r) => {
                        for p in &r.problems {
                            warn!("{p}");
                        }
                        warn!(
                            "✗ reload (SIGHUP) refused, the running config stays: {}",
                            r.summary
                        );
                    }
                    Err(e) => error!("✗ reload (SIGHUP) failed: {e}"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop((rt, hup));
}

/// True when every listener of the config serves, and the management API and the metrics
/// endpoint have claimed the sockets handed to them.
fn serving_everything(l4: &L4) -> bool {
    let snap = l4.config.load();
    let listeners = snap.listeners.keys().all(|k| match k.proto {
        crate::config::Proto::Tcp => l4
            .bound
            .get(&k.to_string())
            .is_some_and(|w| w.strong_count() > 0),
        crate::config::Proto::Udp => l4.udp.sessions_of(*k).is_some(),
    });
    // The console and metrics sockets, if they were handed over, are taken.
    listeners && !l4.inherited.holds("management") && !l4.inherited.holds("metrics")
}

/// Resolves with the new process's PID once a `SIGUSR2` upgrade has succeeded; a failed one
/// is logged and this process carries on (and may be upgraded again).
async fn upgrade_on_usr2(l4: Arc<L4>, usr2: Option<Signal>) -> u32 {
    #[cfg(unix)]
    {
        let Some(mut usr2) = usr2 else {
            return std::future::pending().await;
        };
        while usr2.recv().await.is_some() {
            info!("SIGUSR2 received: upgrading to the binary at this process's path");
            match crate::ops::upgrade::upgrade(l4.clone()).await {
                Ok(pid) => return pid,
                Err(e) => error!("✗ upgrade failed: {e}; this process carries on"),
            }
        }
        std::future::pending().await
    }
    #[cfg(not(unix))]
    {
        drop((l4, usr2));
        std::future::pending().await
    }
}

/// Resolves at `SIGTERM` or `SIGINT` (Ctrl-C), either one that came since [`Signals::install`].
async fn shutdown_signal(terminate: Option<Signal>, interrupt: Option<Signal>) {
    async fn next(s: Option<Signal>) {
        match s {
            #[cfg(unix)]
            Some(mut s) => {
                s.recv().await;
            }
            _ => std::future::pending().await,
        }
    }
    if terminate.is_none() && interrupt.is_none() {
        let _ = tokio::signal::ctrl_c().await;
        return;
    }
    tokio::select! {
        _ = next(terminate) => {}
        _ = next(interrupt) => {}
    }
}

#[cfg(unix)]
type Signal = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Signal = std::convert::Infallible;

/// The signals the process answers, their handlers installed together at the start of
/// [`run`]. Installed later, as they were until 2026-12-05, each left a window after the
/// listeners came up in which the signal's default action ended the process: a deploy
/// script's `SIGUSR2`, or `systemctl reload` or `stop`, right after a start.
struct Signals {
    hangup: Option<Signal>,
    upgrade: Option<Signal>,
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            // Said once, here, with what its absence costs.
            let take = |kind: SignalKind, name: &str, so: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!("{name} cannot be handled ({e}); {so}");
                    None
                }
            };
            Signals {
                hangup: take(SignalKind::hangup(), "SIGHUP", "reload with POST /reload"),
                upgrade: take(
                    SignalKind::user_defined2(),
                    "SIGUSR2",
                    "hitless upgrades are unavailable",
                ),
                terminate: take(
                    SignalKind::terminate(),
                    "SIGTERM",
                    "it ends vane without a drain",
                ),
                interrupt: take(
                    SignalKind::interrupt(),
                    "SIGINT",
                    "Ctrl-C will not stop vane",
                ),
            }
        }
        #[cfg(not(unix))]
        Signals {
            hangup: None,
            upgrade: None,
            terminate: None,
            interrupt: None,
        }
    }
}

/// Waits for open connections to finish, up to `grace`.
async fn drain(rt: &L4, grace: Duration) {
    let start = Instant::now();
    let open = rt.limits.active();
    if open > 0 {
        info!("draining {open} open connection(s) for up to {grace:?}");
    }
    while rt.limits.active() > 0 && start.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = rt.limits.active();
    if left > 0 {
        warn!("grace period over; closing {left} connection(s)");
    }
}
