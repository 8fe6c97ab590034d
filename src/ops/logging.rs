//! Logs and traces: human-readable lines on stderr (or JSON lines with `LOG_FORMAT=json`), and,
//! when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans exported over OTLP/HTTP: one per
//! connection, with a child per plugin step.

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes traces when dropped (keep it alive for the life of the process).
pub struct Telemetry(Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = p.shutdown();
        }
    }
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_new(format!("{level},hyper=warn,hickory_resolver=warn,hickory_proto=warn,hickory_net=warn,ractor=warn,reqwest=warn,opentelemetry=warn")).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The OTLP tracer provider, when an endpoint is configured.
fn otel_provider() -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let endpoint =
        crate::settings::var("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|e| !e.trim().is_empty())?;
    // The exporter reads the standard OTEL_EXPORTER_OTLP_* variables itself.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| eprintln!("OpenTelemetry exporter for {endpoint} unavailable: {e}"))
        .ok()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("vane")
        .build();
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

pub fn init(level: &str, json: bool) -> Telemetry {
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.with_ansi(false).boxed()
    };
    let provider = otel_provider();
    match &provider {
        Some(p) => {
            let otel = tracing_opentelemetry::layer().with_tracer(p.tracer("vane"));
            let _ = tracing_subscriber::registry()
                .with(fmt.with_filter(filter(level)))
                .with(otel)
                .try_init();
            crate::spans::enable();
            if let Some(e) = crate::settings::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
                tracing::info!("exporting traces over OTLP/HTTP to {e}");
            }
        }
        None => {
            let _ = tracing_subscriber::registry()
                .with(fmt.with_filter(filter(level)))
                .try_init();
        }
    }
    Telemetry(provider)
}
