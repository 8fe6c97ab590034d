//! Prometheus exposition on `METRICS_ADDR` (the `metrics` actor owns the endpoint).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::StatusCode;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use vane_actors::service::{AbortOnDrop, Guard, Service, StartFuture};

use super::http::{self, Req};

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();

/// The recorder's handle when metrics are on (never installs one).
pub fn installed() -> Option<PrometheusHandle> {
    HANDLE.get().cloned().flatten()
}

/// Installs the global recorder once; later calls return the same handle.
///
/// The recorder keeps each histogram observation as a raw sample until its upkeep folds it
/// into the buckets; rendering does that too, but memory must not depend on whether (or how
/// often) anyone scrapes. A thread of its own runs the upkeep every second, so between two
/// upkeeps at most one second of samples is held.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            spawn_upkeep(handle.clone());
            Some(handle)
        })
        .clone()
}

/// Registers the help text of every family (`# HELP` lines).
fn describe() {
    use super::families::{Kind, FAMILIES};
    for f in FAMILIES {
        match f.kind {
            Kind::Counter => metrics::describe_counter!(f.name, f.help),
            Kind::Gauge => metrics::describe_gauge!(f.name, f.help),
            Kind::Histogram => metrics::describe_histogram!(f.name, f.help),
        }
    }
}

fn spawn_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            // A panic in one round must not end the upkeep (the samples would pile up again).
            let round =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle.run_upkeep()));
            if round.is_err() {
                tracing::error!("metrics upkeep panicked; retrying next round");
            }
        });
    if let Err(e) = started {
        tracing::error!("cannot start the metrics upkeep thread: {e}");
    }
}

pub struct MetricsEndpoint {
    pub addr: SocketAddr,
    pub handle: PrometheusHandle,
    /// Where the socket comes from (handed over by a predecessor) and is registered.
    pub l4: Arc<crate::l4::L4>,
}

impl Service for MetricsEndpoint {
    fn start(&self) -> StartFuture {
        let (addr, handle, l4) = (self.addr, self.handle.clone(), self.l4.clone());
        Box::pin(async move {
            let (l, held) = l4
                .listen_named("metrics", addr)
                .await
                .map_err(|e| format!("metrics endpoint cannot bind {addr}: {e}"))?;
            tracing::info!("✓ Metrics on http://{addr}/metrics");
            let handler = Arc::new(move |req: Req| {
                let handle = handle.clone();
                async move {
                    if req.path != "/metrics" {
                        return http::respond(
                            StatusCode::NOT_FOUND,
                            "text/plain",
                            "try /metrics\n",
                        );
                    }
                    let mut text = handle.render();
                    process_metrics(&mut text);
                    http::respond(StatusCode::OK, "text/plain; version=0.0.4", text)
                }
            });
            Ok(Guard::new((
                AbortOnDrop(tokio::spawn(http::serve(l, handler))),
                held,
            )))
        })
    }
}

/// The `process_*` families of Prometheus' client libraries, from /proc (Linux; silently
/// absent elsewhere), written straight into the exposition: the CPU time is a counter in
/// fractional seconds, which the `metrics` crate's integer counters cannot carry.
fn process_metrics(out: &mut String) {
    use std::fmt::Write;
    let mut family = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"
        );
    };
    if let Some(rss) = status_bytes("VmRSS:") {
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        );
    }
    if let Some(vm) = status_bytes("VmSize:") {
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            vm,
        );
    }
    if let Ok(rd) = std::fs::read_dir("/proc/self/fd") {
        family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            rd.count() as f64,
        );
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name: utime and stime are the 12th and 13th.
        if let Some(rest) = stat.rsplit(')').next() {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            family(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (ticks(11) + ticks(12)) / 100.0,
            );
        }
    }
}

/// A size field of /proc/self/status (`VmRSS:`, `VmSize:`), in bytes.
pub fn status_bytes(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let kb: f64 = l
            .strip_prefix(field)?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024.0)
    })
}
