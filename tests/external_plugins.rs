//! External plugins over real drivers: a command in `bin/`, an HTTP endpoint, and a dead
//! endpoint that trips the circuit breaker.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

fn flow(plugin: &str, up: std::net::SocketAddr) -> String {
    format!(
        r#"connection:
  {plugin}:
    input: {{ who: "{{{{conn.ip}}}}" }}
    output:
      allow:
        internal.common.match:
          input: {{ left: "{{{{plugin.{scoped}.user}}}}", right: alice }}
          output:
            "true":
              internal.transport.proxy:
                input: {{ target.ip: "{ip}", target.port: {port} }}
            "false":
              internal.transport.abort: {{}}
      deny:
        internal.transport.abort: {{}}
      failure:
        internal.transport.abort: {{}}
"#,
        scoped = plugin.replace('.', "_"),
        ip = up.ip(),
        port = up.port()
    )
}

#[test]
fn command_plugin_decides_and_stores_scoped_keys() {
    let up = Echo::start("E");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        "bin/auth.sh",
        "#!/bin/sh\nread line\ncase \"$line\" in *127.0.0.1*) echo '{\"branch\":\"allow\",\"store\":{\"user\":\"alice\"}}';; *) echo '{\"branch\":\"deny\"}';; esac\n",
    );
    std::fs::set_permissions(
        cfg.path().join("bin/auth.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
    cfg.write(
        "plugins.json",
        r#"{"auth.check": {"name": "auth.check", "role": "middleware", "driver": {"type": "command", "program": "auth.sh"}, "params": [{"name": "who", "required": true}], "output": ["allow", "deny", "failure"]}}"#,
    );
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &flow("auth.check", up.addr),
    );
    let _v = Vane::start(&cfg, &[port]);
    assert_eq!(
        ask_once(port, "hi").as_deref(),
        Some("E:hi"),
        "allowed, and the stored user matched"
    );
}

/// A one-route HTTP server answering every POST with `reply`, counting requests.
fn http_plugin(
    reply: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let mut got = Vec::new();
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some(i) = text.find("\r\n\r\n") {
                    let len = content_length(&text);
                    if got.len() >= i + 4 + len {
                        break;
                    }
                }
            }
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len()).as_bytes());
        }
    });
    (addr, hits)
}

#[test]
fn http_plugin_envelope_and_breaker_on_a_dead_endpoint() {
    let up = Echo::start("H");
    let (plugin, hits) =
        http_plugin(r#"{"status":"success","data":{"branch":"allow","store":{"user":"alice"}}}"#);
    let dead = free_port();
    let cfg = ConfigDir::new();
    let (p1, p2) = (free_port(), free_port());
    cfg.write(
        "plugins.json",
        &format!(
            r#"{{"web.auth": {{"name": "web.auth", "role": "middleware", "driver": {{"type": "http", "url": "http://{plugin}/check"}}, "params": [{{"name": "who", "required": true}}], "output": ["allow", "deny", "failure"]}},
                "dead.auth": {{"name": "dead.auth", "role": "middleware", "driver": {{"type": "http", "url": "http://127.0.0.1:{dead}/"}}, "params": [{{"name": "who", "required": true}}], "output": ["allow", "deny", "failure"]}}}}"#
        ),
    );
    cfg.write(
        &format!("listener/[{p1}]/tcp.yaml"),
        &flow("web.auth", up.addr),
    );
    cfg.write(
        &format!("listener/[{p2}]/tcp.yaml"),
        &flow("dead.auth", up.addr),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("EXTERNAL_PLUGIN_QUIET_PERIOD_SECS", "30".into())],
            wait_ports: vec![p1, p2],
        },
    );
    assert_eq!(ask_once(p1, "x").as_deref(), Some("H:x"));
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    // The dead plugin fails: the flow takes `failure`, the breaker opens and later calls skip it.
    assert_eq!(ask_once(p2, "y"), None);
    assert!(
        v.wait_log(
            "Marking as failed in Circuit Breaker",
            Duration::from_secs(3)
        ),
        "{}",
        v.logs()
    );
    assert_eq!(ask_once(p2, "z"), None);
    assert!(
        v.wait_log("is in quiet period", Duration::from_secs(3)),
        "{}",
        v.logs()
    );
    assert_eq!(
        v.count_log("Marking as failed in Circuit Breaker"),
        1,
        "the second call never reached the endpoint"
    );
}

#[test]
fn http_plugins_must_answer_options_to_be_registered() {
    let (plugin, _hits) = http_plugin(r#"{"status":"success","data":{"branch":"allow"}}"#);
    let dead = free_port();
    let cfg = ConfigDir::new();
    let v = Vane::start(&cfg, &[]);
    let decl = |url: &str| {
        format!(
            r#"{{"name": "h.auth", "role": "middleware", "driver": {{"type": "http", "url": "{url}"}}, "params": [], "output": ["allow", "failure"]}}"#
        )
    };
    let (code, body) = http_with(
        v.mgmt,
        "POST",
        "/plugins/h.auth",
        Some(TOKEN),
        &decl(&format!("http://127.0.0.1:{dead}/")),
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = http_with(
        v.mgmt,
        "POST",
        "/plugins/h.auth",
        Some(TOKEN),
        &decl(&format!("http://{plugin}/check")),
    );
    assert_eq!(code, 201, "{body}");
    assert!(std::fs::read_to_string(cfg.path().join("plugins.json"))
        .unwrap_or_default()
        .contains("h.auth"));
}
