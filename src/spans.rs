//! Spans for connections, HTTP requests and plugin steps. They are opened only while traces
//! are exported (`OTEL_EXPORTER_OTLP_ENDPOINT`), so a connection pays nothing otherwise. Every
//! layer opens them; `ops::logging` turns them on when it installs the exporter.

static SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True when traces are exported: only then do connections and plugin steps open spans.
pub fn spans_on() -> bool {
    SPANS.load(std::sync::atomic::Ordering::Relaxed)
}

/// A span for one connection (disabled unless traces are exported).
pub fn connection_span(listener: &str, peer: std::net::SocketAddr) -> tracing::Span {
    if spans_on() {
        tracing::info_span!("connection", listener = %listener, peer = %peer)
    } else {
        tracing::Span::none()
    }
}

/// A span for one HTTP request (disabled unless traces are exported).
pub fn request_span(app: &str, method: &str, path: &str) -> tracing::Span {
    if spans_on() {
        tracing::info_span!("request", app = %app, method = %method, path = %path)
    } else {
        tracing::Span::none()
    }
}

/// A span for one plugin step (disabled unless traces are exported).
pub fn plugin_span(name: &str, at: &str) -> tracing::Span {
    if spans_on() {
        tracing::info_span!("plugin", name = %name, at = %at)
    } else {
        tracing::Span::none()
    }
}

/// Turns spans on (the OTLP exporter is installed).
pub fn enable() {
    SPANS.store(true, std::sync::atomic::Ordering::Relaxed);
}
