//! What templates read at L7: the `conn.*` keys in their 0.9.2 formats, and the certificate an
//! upgrade's `cert` input pins.

use super::*;

#[test]
fn conn_keys_keep_their_0_9_2_formats() {
    let (cfg, port) = app_dir(
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: \"{{conn.uuid}}|{{conn.ip}}|{{conn.port}}|{{conn.proto}}|{{conn.timestamp}}|{{conn.layer}}|{{server.port}}\" }\n",
    );
    let v = Vane::start(&cfg, &[port]);
    let (code, body) = common::http(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "GET",
        "/",
        None,
    );
    assert_eq!(code, 200);
    // The listener's and the resolver's upgrades, decided at load, still count their runs.
    let upgrades = v
        .metric("vane_plugin_duration_seconds_count{plugin=\"internal.transport.upgrade\"}")
        .unwrap_or(0.0);
    assert!(upgrades >= 2.0, "{upgrades} upgrade runs counted");
    let f: Vec<&str> = body.split('|').collect();
    assert_eq!(f.len(), 7, "{body}");
    assert_eq!(f[0].len(), 32, "uuid: 32 hex digits: {body}");
    assert!(f[0].bytes().all(|b| b.is_ascii_hexdigit()), "{body}");
    assert_eq!(&f[0][12..13], "7", "a version 7 UUID: {body}");
    assert_eq!(f[1], "127.0.0.1");
    assert!(f[2].parse::<u16>().is_ok_and(|p| p > 0), "{body}");
    assert_eq!(f[3], "tcp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let ts: u64 = f[4].parse().expect("unix seconds");
    assert!(ts <= now && now - ts < 60, "timestamp in seconds: {body}");
    assert_eq!(f[5], "l7");
    assert_eq!(f[6], port.to_string());
}

#[test]
fn the_upgrade_cert_input_pins_the_certificate_whatever_the_name() {
    let cfg = ConfigDir::new();
    let port = free_port();
    let pinned = common::tls::write_cert(&cfg, "pinned", &["pinned.test"]);
    let other = common::tls::write_cert(&cfg, "asked.test", &["asked.test"]);
    cfg.tls_listener(port);
    cfg.write(
        "resolver/tls.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx, cert: pinned }\n",
    );
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: ok }\n",
    );
    let _v = Vane::start(&cfg, &[port]);
    let c = common::tls::TlsClient::connect(port, "pinned.test", &["http/1.1"], &[&pinned])
        .expect("handshake with the pinned certificate");
    assert_eq!(c.peer_cert().as_ref(), Some(&pinned));
    // A client asking for asked.test, which has a pair of its own that it trusts, still gets
    // the pinned certificate, which does not name it: the handshake fails.
    assert!(
        common::tls::TlsClient::connect(port, "asked.test", &["http/1.1"], &[&pinned, &other])
            .is_err(),
        "the pin wins over selection by name"
    );
}

/// The L4+ stage parses a plaintext head for `http.*` only when some flow may read those keys:
/// an application flow that reads them (the resolver does not) still gets them.
#[test]
fn request_head_keys_reach_an_application_that_reads_them() {
    let answer = body_for("{{http.method}}|{{http.path}}|{{http.host}}", "/p?q=1");
    assert_eq!(answer, (200, "GET|/p?q=1|test".to_string()));
}

/// A key built from another (`{{http.{{req.query}}}}`) may be any key, so it counts as
/// reading them.
#[test]
fn a_key_built_from_a_template_counts_as_reading_request_head_keys() {
    let answer = body_for("{{http.{{req.query}}}}", "/p?host");
    assert_eq!(answer, (200, "test".to_string()));
}

/// What an application answering `body` (a template) says to a GET of `path` (Host: test).
fn body_for(body: &str, path: &str) -> (u16, String) {
    let (cfg, port) = app_dir(&format!(
        "pipeline:\n  internal.terminator.response:\n    input: {{ status: 200, body: \"{body}\" }}\n"
    ));
    let _v = Vane::start(&cfg, &[port]);
    common::http(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "GET",
        path,
        None,
    )
}
