//! External plugins over real drivers: a command in `bin/`, an HTTP endpoint, and a dead
//! endpoint that trips the circuit breaker.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
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
    cfg.write_exec("bin/auth.sh", "#!/bin/sh\nread line\ncase \"$line\" in *127.0.0.1*) echo '{\"branch\":\"allow\",\"store\":{\"user\":\"alice\"}}';; *) echo '{\"branch\":\"deny\"}';; esac\n");
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

/// Answers one HTTP/1.1 request on `s`: `OPTIONS` with 204, anything else with `reply`.
fn answer<S: Read + Write>(s: &mut S, reply: &str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(i) = text.find("\r\n\r\n") {
            if got.len() >= i + 4 + content_length(&text) {
                break;
            }
        }
    }
    let out = if got.starts_with(b"OPTIONS ") {
        "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_string()
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}", reply.len())
    };
    let _ = s.write_all(out.as_bytes());
    let _ = s.flush();
}

/// An `https` plugin on a self-signed certificate for `localhost`.
fn https_plugin(reply: &'static str) -> u16 {
    let cfg = std::sync::Arc::new(common::tls::server_config("localhost", &[], false));
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, s);
                answer(&mut tls, reply);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

fn decl(name: &str, driver: &str) -> String {
    format!(
        r#""{name}": {{"name": "{name}", "role": "middleware", "driver": {driver}, "params": [{{"name": "who", "required": true}}], "output": ["allow", "deny", "failure"]}}"#
    )
}

#[test]
fn https_plugins_are_called_verified_or_not_and_checked_for_health() {
    const ALLOW: &str =
        r#"{"status":"success","data":{"branch":"allow","store":{"user":"alice"}}}"#;
    let up = Echo::start("S");
    let tls_port = https_plugin(ALLOW);
    let dead = free_port();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        "plugins.json",
        &format!(
            "{{{}, {}}}",
            decl(
                "tls.auth",
                &format!(r#"{{"type": "http", "url": "https://localhost:{tls_port}/check"}}"#)
            ),
            decl(
                "gone.auth",
                &format!(r#"{{"type": "http", "url": "http://127.0.0.1:{dead}/"}}"#)
            )
        ),
    );
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &flow("tls.auth", up.addr),
    );
    // The example file's spelling of the switch works too.
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("SKIP_TLS_VERIFY", "true".into())],
            wait_ports: vec![port],
        },
    );
    assert_eq!(
        ask_once(port, "hi").as_deref(),
        Some("S:hi"),
        "{}",
        v.logs()
    );
    // The first connectivity check runs at start.
    let healthy = |name: &str| {
        let (_, body) = v.get("/plugins?type=external");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        doc["data"]["external"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["name"] == name).cloned())
            .map(|p| p["healthy"].clone())
    };
    assert!(
        wait_until(Duration::from_secs(10), || healthy("gone.auth")
            == Some(serde_json::Value::Bool(false))
            && healthy("tls.auth") == Some(serde_json::Value::Bool(true))),
        "{:?} {:?}\n{}",
        healthy("tls.auth"),
        healthy("gone.auth"),
        v.logs()
    );
    let (_, status) = v.get("/status");
    assert!(status.contains("\"external_healthy\":1"), "{status}");
    assert!(v
        .logs()
        .contains("External plugin 'gone.auth' is unhealthy"));
    let (_, one) = v.get("/plugins/tls.auth");
    assert!(one.contains("\"healthy\":true"), "{one}");
    drop(v);

    // Verified (the default): the self-signed plugin is refused, the flow takes `failure`.
    let v = Vane::start(&cfg, &[port]);
    assert_eq!(ask_once(port, "hi"), None);
    assert!(
        v.wait_log(
            "Marking as failed in Circuit Breaker",
            Duration::from_secs(3)
        ),
        "{}",
        v.logs()
    );
    assert!(v.logs().contains("TLS to localhost"), "{}", v.logs());
}

#[test]
fn unix_socket_plugins_are_called_over_a_real_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("auth.sock");
    let l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer(
                &mut s,
                r#"{"status":"success","data":{"branch":"allow","store":{"user":"alice"}}}"#,
            );
        }
    });
    let up = Echo::start("U");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        "plugins.json",
        &format!(
            "{{{}}}",
            decl(
                "sock.auth",
                &format!(r#"{{"type": "unix", "path": "{}"}}"#, sock.display())
            )
        ),
    );
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &flow("sock.auth", up.addr),
    );
    let v = Vane::start(&cfg, &[port]);
    assert_eq!(
        ask_once(port, "hi").as_deref(),
        Some("U:hi"),
        "{}",
        v.logs()
    );
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

/// A command plugin that does not answer within `FLOW_EXECUTION_TIMEOUT_SECS` fails the call
/// (the connection is closed in time, not when the program finally exits) and opens its
/// breaker.
#[test]
fn a_command_plugin_that_hangs_is_cut_at_the_flow_timeout() {
    let up = Echo::start("E");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write_exec(
        "bin/slow.sh",
        "#!/bin/sh\nsleep 20\necho '{\"branch\":\"allow\"}'\n",
    );
    cfg.write(
        "plugins.json",
        &format!(
            "{{{}}}",
            decl("slow.check", r#"{"type": "command", "program": "slow.sh"}"#)
        ),
    );
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &flow("slow.check", up.addr),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("FLOW_EXECUTION_TIMEOUT_SECS", "1".into())],
            wait_ports: vec![port],
        },
    );
    let started = std::time::Instant::now();
    let mut c = Client::connect(port).expect("connect");
    c.set_timeout(Duration::from_secs(10));
    assert_eq!(c.ask("hi"), None, "no verdict: the connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "closed at the flow timeout, not when the program exits: {:?}",
        started.elapsed()
    );
    assert!(
        v.wait_log(
            "Marking as failed in Circuit Breaker",
            Duration::from_secs(5)
        ) || v.logs().contains("timed out"),
        "{}",
        v.logs()
    );
}
