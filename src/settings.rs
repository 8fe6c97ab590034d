//! Environment settings, read once at start.
//!
//! Names, defaults and parsing follow Vane 0.9.2: booleans are true only for the text `true`
//! (any case) and numbers that fail to parse fall back to their default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Reads one variable (the process environment wins over `.env`).
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn num<T: std::str::FromStr>(name: &str, default: T) -> T {
    var(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn flag(name: &str, default: bool) -> bool {
    match var(name) {
        Some(v) => v.trim().eq_ignore_ascii_case("true"),
        None => default,
    }
}

/// Loads `KEY=VALUE` lines from `.env` in the working directory without overriding the
/// environment.
pub fn load_dotenv(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, v)) = line.split_once('=') {
            let k = k.trim();
            let v = v.trim().trim_matches('"').trim_matches('\'');
            if !k.is_empty() && std::env::var_os(k).is_none() {
                std::env::set_var(k, v);
            }
        }
    }
}

/// Every knob the L4 gateway reads from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub log_level: String,
    pub log_json: bool,
    pub access_token: Option<String>,
    pub mgmt_port: u16,
    pub console_listen: IpAddr,
    pub socket_dir: PathBuf,
    pub metrics_addr: Option<SocketAddr>,
    pub chaos: bool,
    pub shutdown_grace: Duration,
    /// Crashes a supervisor absorbs within `restart_window` before giving up.
    pub restart_max: usize,
    pub restart_window: Duration,

    /// Address data listeners bind (`LISTEN_ADDR`, ours); `LISTEN_IPV6` switches to `::`.
    pub listen_ip: IpAddr,
    /// `UPGRADE_TIMEOUT_SECS`: how long a binary started by `SIGUSR2` has to become ready.
    pub upgrade_timeout: Duration,
    /// `QUIC_LB_SERVER_ID` (hex, 1-8 bytes): this instance's server ID in the connection IDs
    /// its HTTP/3 endpoints issue (QUIC-LB plaintext); `None` when unset or invalid.
    pub quic_lb_server_id: Option<Vec<u8>>,
    /// True when `QUIC_LB_SERVER_ID` is set but is not 1-8 bytes of hex (start refuses).
    pub quic_lb_server_id_invalid: bool,
    /// `QUIC_LB_SERVER_ID_LEN`: read server IDs of this length out of the connection IDs of
    /// forwarded QUIC (`quic.server_id`); defaults to the length of `QUIC_LB_SERVER_ID`, 0 = off.
    pub quic_lb_sid_len: usize,
    /// `QUIC_LB_CONFIG_ID` (0-6): the config rotation codepoint of those IDs.
    pub quic_lb_config_id: u8,
    /// `REUSE_PORT`: bind listeners with `SO_REUSEPORT`, so several processes share a port.
    pub reuse_port: bool,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub tcp_detect_limit: usize,
    pub tcp_peek_timeout: Duration,
    pub udp_detect_limit: usize,
    pub stream_idle_timeout: Duration,
    pub udp_session_timeout: Duration,
    pub udp_max_sessions: usize,
    pub connect_timeout: Duration,

    pub flow_timeout: Duration,
    pub tls_buffer: usize,
    pub tls_peek_timeout: Duration,
    pub tls_allow_parse_failure: bool,
    pub http_plain_buffer: usize,
    pub max_template_depth: usize,
    pub max_template_result: usize,
    pub max_template_parse_depth: usize,
    pub max_template_parse_nodes: usize,
    pub max_limiter_memory: usize,
    /// `METRICS_MAX_LABEL_VALUES`: series per metric family whose label comes from input a
    /// client or a template can vary (upstream targets, ...); past it, one `other` series.
    pub metric_label_values: usize,
    /// `UPSTREAM_MAX_TRACKED`: upstream addresses the health registry and the HTTP/3 client
    /// pools keep state for beyond the configured targets.
    pub upstream_max_tracked: usize,
    /// `UPSTREAM_H3_POOL_MAX`: pooled HTTP/3 upstream connections per data-plane thread.
    pub upstream_h3_pool_max: usize,
    pub plugin_quiet: Duration,
    /// `EXTERNAL_HTTPS_CALL_SKIP_TLS_VERIFY` (alias `SKIP_TLS_VERIFY`, the example file's
    /// spelling): `https` plugins' certificates are not verified.
    pub plugin_skip_tls_verify: bool,
    /// `EXTERNAL_PLUGIN_CHECK_INTERVAL_MINS`: how often every external plugin's connectivity
    /// is checked (first right after start and after each change of `plugins.json`).
    pub plugin_check_interval: Duration,
    pub ratelimit_key_max_len: usize,

    pub health_interval: Duration,
    pub health_timeout: Duration,
    /// `HEALTH_FIRST_ROUND_BLOCKS`: probe every target once before the listeners bind, as
    /// 0.9.2 did, instead of counting never-probed targets healthy.
    pub health_first_round_blocks: bool,
    /// `ACME_RETRY_MIN_SECS` / `ACME_RETRY_MAX_SECS`: the first and the longest wait after a
    /// failed ACME order (doubling in between, jittered).
    pub acme_retry_min: Duration,
    pub acme_retry_max: Duration,
    /// `ACME_TIMEOUT_SECS`: one request to the CA, and each wait for it to validate or issue.
    pub acme_timeout: Duration,
    /// `DEFAULT_CERT_CHECK_INTERVAL_SECS`: how often a running process checks that the
    /// `default` certificate has 7 days left, and makes a new one when it has not (0.9.2
    /// checked at start only, so a process up for a year served an expired one).
    pub default_cert_check: Duration,
    /// `RATELIMIT_REDIS_URL`: count rate limits in this Redis (shared by every instance).
    pub ratelimit_redis_url: Option<String>,
    /// `RATELIMIT_REDIS_TIMEOUT_MS`: the budget of one decision in Redis before failing open.
    pub ratelimit_redis_timeout: Duration,
    pub health_udp_ttl: Duration,
    /// `HEALTH_UDP_CLEANUP_INTERVAL_SECS`: how often expired UDP marks are swept.
    pub health_udp_cleanup: Duration,
    pub nameservers: Vec<SocketAddr>,

    pub l7_adaptive: bool,
    pub l7_ratio: u64,
    pub l7_fixed_limit: u64,

    pub quic_session_ttl: Duration,
    pub quic_max_entries: usize,
    /// Single-threaded runtimes that accept and serve TCP connections (0: the shared one).
    pub data_plane_threads: usize,
    /// Each of two or more data-plane threads bound to a CPU of its own (`DATA_PLANE_PIN`, off
    /// by default: for a machine that serves the gateway alone).
    pub data_plane_pin: bool,
    /// CPU time a data-plane thread runs before it yields its core to another one waiting for it
    /// (`DATA_PLANE_TURN_US`, 1000; 0: never yields). See `l4::turns`.
    pub data_plane_turn: Option<Duration>,
    /// The scheduler slice each data-plane thread asks for (`DATA_PLANE_SLICE_US`, 500; 0:
    /// the kernel's default). See `vane_sys::sched`.
    pub data_plane_slice: Option<Duration>,
    /// One log line per L7 request (`ACCESS_LOG=off` disables).
    pub access_log: bool,
    /// Time a client has to send a complete request head (`HTTP_HEADER_READ_TIMEOUT_SECS`).
    pub http_header_timeout: Duration,
    /// An HTTP connection with no bytes either way for this long is closed.
    pub http_idle_timeout: Duration,
    /// HTTP/1.x on hyper's server instead of vane's own (`HTTP1_SERVER=hyper`): a way back
    /// should the fast path misbehave for someone, and the second mode the L7 suite runs in.
    pub http1_on_hyper: bool,
    /// HTTP/2 on hyper's server instead of vane's own (`HTTP2_SERVER=hyper`): the same way
    /// back, and the L7 suite's second mode too.
    pub http2_on_hyper: bool,
    /// A WebSocket tunnel with no bytes either way for this long is closed.
    pub websocket_idle_timeout: Duration,
    /// CGI output: longest wait per read and largest body (`CGI_BODY_*`).
    pub cgi_body_timeout: Duration,
    pub cgi_body_max: usize,
    /// Bytes of a file read to guess its type when its extension says nothing
    /// (`STATIC_MIME_SNIFF_BYTES`).
    pub static_sniff_bytes: usize,
    /// Datagrams queued into a port's HTTP/3 endpoint (`QUIC_VIRTUAL_CHANNEL_CAPACITY`).
    pub quic_virtual_channel_capacity: usize,
    /// Variables of Vane's environment a CGI program inherits (`CGI_PASS_ENV`, names separated
    /// by commas; `ACCESS_TOKEN` never).
    pub cgi_pass_env: Vec<String>,
    /// Largest body a template may buffer (`L7_MAX_BUFFER_SIZE`).
    pub l7_max_body: usize,
    /// Pooled upstream HTTP connections (`UPSTREAM_*`).
    pub upstream_pool_idle: Duration,
    pub upstream_pool_max_idle: usize,
    pub upstream_keepalive: Duration,
    pub upstream_h2_stream_window: u32,
    pub upstream_h2_conn_window: u32,
    pub quic_max_pending_packets: usize,
    pub quic_session_buffer: usize,
    pub quic_global_pending: usize,
    pub quic_pending_timeout: Duration,
}

impl Settings {
    pub fn from_env() -> Self {
        let level = var("LOG_LEVEL").unwrap_or_default().to_ascii_lowercase();
        let log_level = match level.as_str() {
            "debug" | "info" | "warn" | "error" => level,
            _ => "info".into(),
        };
        let metrics_addr = match var("METRICS_ADDR") {
            Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
            Some(v) => v.trim().parse().ok().or(Some(default_metrics())),
            None => Some(default_metrics()),
        };
        let lb_server_id: Result<Option<Vec<u8>>, ()> = match var("QUIC_LB_SERVER_ID") {
            None => Ok(None),
            Some(h) => match hex::decode(h.trim()) {
                Ok(b) if (1..=8).contains(&b.len()) => Ok(Some(b)),
                _ => Err(()),
            },
        };
        let listen_ip = if flag("LISTEN_IPV6", false) {
            IpAddr::from([0u16; 8])
        } else {
            var("LISTEN_ADDR")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        };
        let mut nameservers = Vec::new();
        for (host, port, dh) in [
            ("NAMESERVER1", "NAMESERVER1_PORT", "1.1.1.1"),
            ("NAMESERVER2", "NAMESERVER2_PORT", "8.8.8.8"),
        ] {
            let h = var(host).unwrap_or_else(|| dh.to_string());
            let h = h.trim();
            if h.eq_ignore_ascii_case("system") {
                // The host's own name servers; 0.9.2 could only use fixed IPv4 ones.
                let conf = std::fs::read_to_string(RESOLV_CONF);
                match conf {
                    Ok(text) => nameservers.extend(resolv_conf_servers(&text)),
                    Err(e) => {
                        tracing::warn!("{host}=system: cannot read {}: {e}; skipped", RESOLV_CONF)
                    }
                }
                continue;
            }
            match h.parse::<IpAddr>() {
                Ok(ip) => nameservers.push(SocketAddr::new(ip, num(port, 53u16))),
                Err(_) => tracing::warn!("{host}={h} is not an IP address; skipped"),
            }
        }
        let console_listen = var("CONSOLE_LISTEN")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(if flag("CONSOLE_LISTEN_IPV6", false) {
                IpAddr::from([0u16; 8])
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            });
        let mgmt_port = match num("PORT", 3333u16) {
            0 => 3333,
            p => p,
        };
        Self {
            log_level,
            log_json: var("LOG_FORMAT").is_some_and(|v| v.eq_ignore_ascii_case("json")),
            access_token: var("ACCESS_TOKEN").filter(|t| !t.is_empty()),
            mgmt_port,
            console_listen,
            socket_dir: PathBuf::from(var("SOCKET_DIR").unwrap_or_else(|| "/var/run/vane".into())),
            metrics_addr,
            chaos: flag("CHAOS_ENDPOINTS", false),
            shutdown_grace: Duration::from_secs(num("SHUTDOWN_GRACE_SECS", 30)),
            restart_max: num("RESTART_MAX", 20usize).max(1),
            restart_window: Duration::from_secs(num("RESTART_WINDOW_SECS", 60).max(1)),
            listen_ip,
            reuse_port: flag("REUSE_PORT", false),
            quic_lb_server_id: lb_server_id.clone().ok().flatten(),
            quic_lb_server_id_invalid: lb_server_id.is_err(),
            quic_lb_sid_len: num(
                "QUIC_LB_SERVER_ID_LEN",
                lb_server_id.ok().flatten().map_or(0, |s| s.len()),
            )
            .min(8),
            quic_lb_config_id: num("QUIC_LB_CONFIG_ID", 0u8).min(6),
            upgrade_timeout: Duration::from_secs(num("UPGRADE_TIMEOUT_SECS", 30).max(1)),
            max_connections: num("MAX_CONNECTIONS", 10_000),
            max_connections_per_ip: num("MAX_CONNECTIONS_PER_IP", 50),
            tcp_detect_limit: num("TCP_DETECT_LIMIT", 64usize).clamp(1, 8192),
            tcp_peek_timeout: Duration::from_millis(num("TCP_PEEK_TIMEOUT_MS", 1000)),
            udp_detect_limit: num("UDP_DETECT_LIMIT", 64usize).clamp(1, 65535),
            stream_idle_timeout: Duration::from_secs(num("STREAM_IDLE_TIMEOUT_SECS", 10).max(1)),
            udp_session_timeout: Duration::from_secs(num("UDP_SESSION_TIMEOUT_SECS", 30).max(1)),
            udp_max_sessions: num("UDP_SESSION_BUFFER", 4_194_304usize) / 48,
            connect_timeout: Duration::from_millis(num("UPSTREAM_CONNECT_TIMEOUT_MS", 5000)),
            flow_timeout: Duration::from_secs(num("FLOW_EXECUTION_TIMEOUT_SECS", 10).max(1)),
            tls_buffer: num("TLS_CLIENTHELLO_BUFFER_SIZE", 4096usize).clamp(64, 65_536),
            tls_peek_timeout: Duration::from_millis(num("TLS_HANDSHAKE_PEEK_TIMEOUT_MS", 500)),
            tls_allow_parse_failure: flag("TLS_ALLOW_PARSE_FAILURE", false),
            http_plain_buffer: num("HTTP_PLAIN_HEADER_BUFFER_SIZE", 4096usize).clamp(16, 65_536),
            max_template_depth: num("MAX_TEMPLATE_DEPTH", 5),
            max_template_result: num("MAX_TEMPLATE_RESULT_SIZE", 65_536),
            max_template_parse_depth: num("MAX_TEMPLATE_PARSE_DEPTH", 5),
            max_template_parse_nodes: num("MAX_TEMPLATE_PARSE_NODES", 50),
            max_limiter_memory: num("MAX_LIMITER_MEMORY", 4_194_304),
            metric_label_values: num("METRICS_MAX_LABEL_VALUES", 1000usize).max(1),
            upstream_max_tracked: num("UPSTREAM_MAX_TRACKED", 10_000usize).max(16),
            upstream_h3_pool_max: num("UPSTREAM_H3_POOL_MAX", 256usize).max(1),
            plugin_quiet: Duration::from_secs(num("EXTERNAL_PLUGIN_QUIET_PERIOD_SECS", 3)),
            plugin_skip_tls_verify: flag("EXTERNAL_HTTPS_CALL_SKIP_TLS_VERIFY", false)
                || flag("SKIP_TLS_VERIFY", false),
            plugin_check_interval: Duration::from_secs(
                num("EXTERNAL_PLUGIN_CHECK_INTERVAL_MINS", 15u64).max(1) * 60,
            ),
            ratelimit_key_max_len: num("RATELIMIT_KEY_MAX_LEN", 256),
            health_interval: Duration::from_secs(num("HEALTH_TCP_INTERVAL_SECS", 5).max(1)),
            health_timeout: Duration::from_millis(num("HEALTH_TCP_CONNECT_TIMEOUT_MS", 2000)),
            health_first_round_blocks: flag("HEALTH_FIRST_ROUND_BLOCKS", false),
            acme_retry_min: Duration::from_secs(num("ACME_RETRY_MIN_SECS", 60).max(1)),
            acme_retry_max: Duration::from_secs(num("ACME_RETRY_MAX_SECS", 21_600).max(1)),
            acme_timeout: Duration::from_secs(num("ACME_TIMEOUT_SECS", 60).max(1)),
            default_cert_check: Duration::from_secs(
                num("DEFAULT_CERT_CHECK_INTERVAL_SECS", 3600).max(1),
            ),
            ratelimit_redis_url: std::env::var("RATELIMIT_REDIS_URL")
                .ok()
                .filter(|u| !u.trim().is_empty()),
            ratelimit_redis_timeout: Duration::from_millis(
                num("RATELIMIT_REDIS_TIMEOUT_MS", 50u64).max(1),
            ),
            health_udp_ttl: Duration::from_secs(num("HEALTH_UDP_UNHEALTHY_TTL_SECS", 10)),
            health_udp_cleanup: Duration::from_secs(
                num("HEALTH_UDP_CLEANUP_INTERVAL_SECS", 5).max(1),
            ),
            nameservers,
            l7_adaptive: flag("L7_ADAPTIVE_MEMORY_LIMIT", true),
            l7_ratio: num("L7_ADAPTIVE_MEMORY_RATIO", 85),
            l7_fixed_limit: num("L7_GLOBAL_BUFFER_LIMIT", 536_870_912),
            quic_session_ttl: Duration::from_secs(num("QUIC_SESSION_TTL_SECS", 300).max(1)),
            quic_max_entries: num("QUIC_MAX_SESSIONS", 100_000usize).max(16),
            data_plane_threads: num(
                "DATA_PLANE_THREADS",
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )
            .min(256),
            data_plane_pin: flag("DATA_PLANE_PIN", false),
            data_plane_turn: match num("DATA_PLANE_TURN_US", 1000u64) {
                0 => None,
                us => Some(Duration::from_micros(us.min(1_000_000))),
            },
            data_plane_slice: match num("DATA_PLANE_SLICE_US", 500u64) {
                0 => None,
                us => Some(Duration::from_micros(us.clamp(100, 100_000))),
            },
            access_log: !matches!(
                var("ACCESS_LOG")
                    .map(|v| v.trim().to_ascii_lowercase())
                    .as_deref(),
                Some("off" | "false" | "0" | "no")
            ),
            http_header_timeout: Duration::from_secs(
                num("HTTP_HEADER_READ_TIMEOUT_SECS", 30u64).max(1),
            ),
            http_idle_timeout: Duration::from_secs(num("HTTP_IDLE_TIMEOUT_SECS", 60u64).max(1)),
            http1_on_hyper: var("HTTP1_SERVER")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("hyper")),
            http2_on_hyper: var("HTTP2_SERVER")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("hyper")),
            l7_max_body: num("L7_MAX_BUFFER_SIZE", 10_485_760usize),
            cgi_body_timeout: Duration::from_secs(num("CGI_BODY_TIMEOUT_SEC", 30u64).max(1)),
            cgi_body_max: num("CGI_BODY_MAX_SIZE_BYTE", 10_485_760usize),
            static_sniff_bytes: num("STATIC_MIME_SNIFF_BYTES", 512usize).clamp(1, 65_536),
            quic_virtual_channel_capacity: num("QUIC_VIRTUAL_CHANNEL_CAPACITY", 1024usize)
                .clamp(16, 1 << 20),
            cgi_pass_env: var("CGI_PASS_ENV")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty() && *n != "ACCESS_TOKEN")
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            websocket_idle_timeout: Duration::from_secs(
                num("WEBSOCKET_IDLE_TIMEOUT_SECS", 300u64).max(1),
            ),
            upstream_pool_idle: Duration::from_secs(num("UPSTREAM_POOL_IDLE_TIMEOUT", 90u64)),
            upstream_pool_max_idle: num("UPSTREAM_POOL_MAX_IDLE", 32usize),
            upstream_keepalive: Duration::from_secs(
                num("UPSTREAM_KEEPALIVE_INTERVAL", 30u64).max(1),
            ),
            upstream_h2_stream_window: num("UPSTREAM_H2_STREAM_WINDOW", 2_097_152u32),
            upstream_h2_conn_window: num("UPSTREAM_H2_CONN_WINDOW", 2_097_152u32),
            quic_max_pending_packets: num("QUIC_MAX_PENDING_PACKETS", 5usize).max(1),
            quic_session_buffer: num("QUIC_SESSION_BUFFER_LIMIT", 65_536usize).max(1500),
            quic_global_pending: num("QUIC_GLOBAL_PENDING_BYTES_LIMIT", 67_108_864usize)
                .max(65_536),
            quic_pending_timeout: Duration::from_secs(10),
        }
    }
}

fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// The config dir: `--config DIR`, else `CONFIG_DIR`, else `./config` when present, else
/// `/etc/vane`. A leading `~` is expanded.
pub fn config_dir(flag: Option<&str>) -> PathBuf {
    let raw = flag.map(str::to_string).or_else(|| var("CONFIG_DIR"));
    match raw {
        Some(p) => expand_home(&p),
        None if Path::new("config").is_dir() => PathBuf::from("config"),
        None => PathBuf::from("/etc/vane"),
    }
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix('~'), var("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(format!("{home}{rest}")),
        _ => PathBuf::from(p),
    }
}

static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

/// The process-wide settings, read from the environment on first use.
pub fn get() -> &'static Settings {
    SETTINGS.get_or_init(Settings::from_env)
}

/// Where `NAMESERVERn=system` reads the host's name servers.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` entries of a resolv.conf text, on port 53 (comments, other options and
/// addresses that do not parse are skipped; a scoped IPv6 address keeps no scope).
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr = words.next()?;
            let addr = addr.split('%').next().unwrap_or(addr);
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Vane 0.9.2 variables this build reads nowhere, with what does their job here. `vane check`
/// and the start warn when one is set, so nobody tunes a knob that is not connected.
pub const REPLACED_ENV: &[(&str, &str)] = &[
    ("UDP_TIMEOUT_LOCAL", "UDP sessions end after UDP_SESSION_TIMEOUT_SECS without traffic"),
    ("UDP_TIMEOUT_REMOTE", "UDP sessions end after UDP_SESSION_TIMEOUT_SECS without traffic"),
    ("QUIC_TIMEOUT_LOCAL", "forwarded QUIC connections end after UDP_SESSION_TIMEOUT_SECS without traffic (the 1 s reply timeout cut quiet live connections)"),
    ("QUIC_TIMEOUT_REMOTE", "forwarded QUIC connections end after UDP_SESSION_TIMEOUT_SECS without traffic"),
    ("QUIC_STICKY_SESSION_TTL", "the listener's session table is the sticky table; its entries live as long as their session (UDP_SESSION_TIMEOUT_SECS)"),
    ("QUIC_RECV_BUFFER_SIZE", "forwarded QUIC replies are read like other UDP replies, into buffers borrowed per burst"),
    ("QUIC_LONG_HEADER_BUFFER_SIZE", "Initial packets are inspected within QUIC_SESSION_BUFFER_LIMIT and QUIC_GLOBAL_PENDING_BYTES_LIMIT"),
];

/// The [`REPLACED_ENV`] variables set in this process's environment.
pub fn replaced_in_env() -> Vec<(&'static str, &'static str)> {
    REPLACED_ENV
        .iter()
        .filter(|(name, _)| std::env::var_os(name).is_some())
        .copied()
        .collect()
}

#[cfg(test)]
mod resolv_conf_tests {
    use super::*;

    #[test]
    fn resolv_conf_yields_its_name_servers_in_order() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\n\
                    nameserver fe80::1%eth0 # link-local\n;nameserver 9.9.9.9\n\
                    nameserver not-an-ip\noptions ndots:2\n  nameserver   2001:db8::53\n";
        let got = resolv_conf_servers(text);
        let want: Vec<SocketAddr> = ["10.0.0.2:53", "[fe80::1]:53", "[2001:db8::53]:53"]
            .iter()
            .map(|s| s.parse().expect("addr"))
            .collect();
        assert_eq!(got, want);
        assert!(resolv_conf_servers("").is_empty());
    }
}
