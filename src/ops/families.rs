//! Every metric family vane exports, with its type and help text: registered with the
//! recorder at start (Prometheus shows the help), listed in docs/metrics.md, and what the
//! shipped dashboard and alert rules may name (a test holds all three together).

/// How a family is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

pub const FAMILIES: &[Family] = &[
    family(
        "vane_connections_total",
        Kind::Counter,
        "accepted TCP connections and new UDP sessions",
    ),
    family(
        "vane_connections_active",
        Kind::Gauge,
        "open connections / sessions",
    ),
    family(
        "vane_connections_rejected_total",
        Kind::Counter,
        "refused at accept",
    ),
    family(
        "vane_accept_errors_total",
        Kind::Counter,
        "transient accept() errors (the loop backs off and goes on)",
    ),
    family(
        "vane_listener_bind_failures_total",
        Kind::Counter,
        "ports that could not be bound (retried every 5 s)",
    ),
    family(
        "vane_session_panics_total",
        Kind::Counter,
        "sessions that panicked (only their connection closed)",
    ),
    family(
        "vane_proxy_protocol_rejected_total",
        Kind::Counter,
        "missing or broken PROXY headers from trusted peers",
    ),
    family(
        "vane_udp_dropped_total",
        Kind::Counter,
        "datagrams dropped",
    ),
    family(
        "vane_l4p_inspections_total",
        Kind::Counter,
        "handshakes inspected (ok, no_resolver, or the error when parse failures are allowed)",
    ),
    family(
        "vane_l4p_parse_failures_total",
        Kind::Counter,
        "not_tls, buffer_too_small, closed, io_error, timeout, malformed, not_initial",
    ),
    family(
        "vane_quic_sessions",
        Kind::Gauge,
        "live forwarded QUIC connections",
    ),
    family(
        "vane_quic_cids",
        Kind::Gauge,
        "entries of the connection-ID table",
    ),
    family(
        "vane_quic_cids_peak",
        Kind::Gauge,
        "the most entries the table has held (never above QUIC_MAX_SESSIONS)",
    ),
    family(
        "vane_quic_evictions_total",
        Kind::Counter,
        "table entries evicted at the hard cap",
    ),
    family(
        "vane_quic_migrations_total",
        Kind::Counter,
        "forwarded QUIC connections seen from a new client address (a candidate path opened)",
    ),
    family(
        "vane_quic_paths_proven_total",
        Kind::Counter,
        "candidate paths proven (a round trip while the old paths were quiet)",
    ),
    family(
        "vane_quic_paths_rejected_total",
        Kind::Counter,
        "new addresses refused because the connection has four paths",
    ),
    family(
        "vane_quic_reused_addresses_total",
        Kind::Counter,
        "new QUIC connections from an address that already carried one",
    ),
    family(
        "vane_quic_pending_bytes",
        Kind::Gauge,
        "bytes held while sessions decide or QUIC handshakes are inspected (global budget QUIC_GLOBAL_PENDING_BYTES_LIMIT)",
    ),
    family(
        "vane_quic_pending_peak_bytes",
        Kind::Gauge,
        "the most bytes ever held at once under that budget",
    ),
    family(
        "vane_h3_rerouted_datagrams_total",
        Kind::Counter,
        "datagrams of terminated HTTP/3 connections recognised by their tagged connection ID from a new address",
    ),
    family(
        "vane_requests_total",
        Kind::Counter,
        "requests answered",
    ),
    family(
        "vane_request_duration_seconds",
        Kind::Histogram,
        "time to the response head",
    ),
    family(
        "vane_http_connection_errors_total",
        Kind::Counter,
        "client connections that ended in an error",
    ),
    family(
        "vane_tls_handshake_failures_total",
        Kind::Counter,
        "TLS terminations that failed or timed out",
    ),
    family(
        "vane_upstream_requests_total",
        Kind::Counter,
        "L7: calls of internal.driver.upstream (target = authority, outcome = ok/error); L4/L4+: proxy connects (target = address, outcome = connected/connect_failed); at most METRICS_MAX_LABEL_VALUES targets, the rest as other",
    ),
    family(
        "vane_websocket_tunnels",
        Kind::Gauge,
        "open WebSocket tunnels",
    ),
    family(
        "vane_l7_buffered_bytes",
        Kind::Gauge,
        "bytes of bodies buffered for templates and CGI",
    ),
    family(
        "vane_l7_memory_limit_bytes",
        Kind::Gauge,
        "the current L7 buffer budget (adaptive or fixed)",
    ),
    family(
        "vane_l7_buffer_refused_total",
        Kind::Counter,
        "bodies not buffered (placeholders stay literal)",
    ),
    family(
        "vane_upstream_connect_duration_seconds",
        Kind::Histogram,
        "time to establish a TCP connection to an upstream (successful connects)",
    ),
    family(
        "vane_plugin_duration_seconds",
        Kind::Histogram,
        "time of each flow step",
    ),
    family(
        "vane_external_plugins",
        Kind::Gauge,
        "declared external plugins",
    ),
    family(
        "vane_external_plugin_failures_total",
        Kind::Counter,
        "external plugin calls that failed (and opened the breaker)",
    ),
    family(
        "vane_upstream_healthy",
        Kind::Gauge,
        "1 healthy, 0 down (health actor); targets past the label cap are not reported",
    ),
    family(
        "vane_metric_labels_collapsed_total",
        Kind::Counter,
        "observations whose label value (from client or template input) was reported as other because the family had reached METRICS_MAX_LABEL_VALUES",
    ),
    family(
        "vane_upstream_untracked_total",
        Kind::Counter,
        "upstream addresses the health registry kept no state for (past UPSTREAM_MAX_TRACKED)",
    ),
    family(
        "vane_h3_upstream_pool_evictions_total",
        Kind::Counter,
        "pooled HTTP/3 upstream connections pushed out by a new one (past UPSTREAM_H3_POOL_MAX)",
    ),
    family(
        "vane_nodes",
        Kind::Gauge,
        "nodes in nodes.*",
    ),
    family(
        "vane_certificate_expiry_timestamp_seconds",
        Kind::Gauge,
        "when each loaded certificate expires (Unix time; NaN once it is no longer loaded)",
    ),
    family(
        "vane_certificates",
        Kind::Gauge,
        "loaded certificate pairs",
    ),
    family(
        "vane_legacy_regex_aborted_total",
        Kind::Counter,
        "legacy regex detections stopped at the backtracking step limit (counted as no match)",
    ),
    family(
        "vane_ratelimit_redis_failures_total",
        Kind::Counter,
        "rate-limit decisions Redis did not answer (error, timeout); each failed open",
    ),
    family(
        "vane_ratelimit_redis_up",
        Kind::Gauge,
        "1 while the shared rate-limit store answers, 0 while decisions fail open",
    ),
    family(
        "vane_acme_orders_total",
        Kind::Counter,
        "ACME orders by result (issued, failed)",
    ),
    family(
        "vane_acme_renewal_timestamp_seconds",
        Kind::Gauge,
        "when the ACME worker next orders each certificate (Unix time)",
    ),
    family(
        "vane_config_reloads_total",
        Kind::Counter,
        "reloads and what came of them",
    ),
    family(
        "vane_actor_restarts_total",
        Kind::Counter,
        "supervised restarts",
    ),
];
