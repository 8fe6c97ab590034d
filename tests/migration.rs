//! Moving from Vane 0.9.2: the switches that restore its behaviour where vane deliberately
//! differs (docs/migration.md), and `vane check --compat`, which says which differences a
//! config dir meets.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn check(cfg: &ConfigDir, extra: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(["check", "--config"])
        .arg(cfg.path())
        .args(extra)
        .env_clear()
        .output()
        .expect("vane check");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// A config dir meeting every difference `--compat` can see: an invalid file, a UDP flow, a
/// legacy rule with targets, a flow calling an external plugin.
fn meets_all(cfg: &ConfigDir, echo: std::net::SocketAddr) -> (u16, u16) {
    let (good, bad) = (free_port(), free_port());
    cfg.tcp_proxy(good, echo);
    cfg.write(
        &format!("listener/[{bad}]/tcp.yaml"),
        "connection:\n  internal.transport.proxy:\n    input: { target.ip: 127.0.0.1, target.port: not-a-port }\n",
    );
    cfg.write(
        &format!("listener/[{}]/udp.yaml", free_port()),
        &format!(
            "connection:\n  internal.transport.proxy:\n    input: {{ target.ip: 127.0.0.1, target.port: {} }}\n",
            echo.port()
        ),
    );
    cfg.write(
        &format!("listener/[{}]/tcp.yaml", free_port()),
        &format!(
            "protocols:\n  - name: all\n    priority: 1\n    detect: {{ method: fallback, pattern: any }}\n    destination: {{ type: forward, forward: {{ targets: [ {{ ip: 127.0.0.1, port: {} }} ] }} }}\n",
            echo.port()
        ),
    );
    cfg.write(
        "plugins.json",
        r#"{"auth.check": {"name": "auth.check", "role": "middleware", "driver": {"type": "http", "url": "http://127.0.0.1:9/"}, "params": [], "output": ["success", "failure"]}}"#,
    );
    cfg.write(
        "resolver/tls.yaml",
        "connection:\n  auth.check:\n    output:\n      success: { internal.transport.upgrade: { input: { protocol: httpx } } }\n      failure: { internal.transport.abort: {} }\n",
    );
    (good, bad)
}

#[test]
fn check_compat_names_each_difference_and_its_switch() {
    let echo = Echo::start("E");
    let cfg = ConfigDir::new();
    meets_all(&cfg, echo.addr);
    let (code, plain) = check(&cfg, &[]);
    assert_eq!(code, Some(1), "{plain}");
    assert!(
        !plain.contains("0.9.2 difference"),
        "only with --compat:\n{plain}"
    );
    let (code, text) = check(&cfg, &["--compat"]);
    assert_eq!(code, Some(1), "still invalid:\n{text}");
    for needle in [
        "1 invalid file(s): 0.9.2 started without them; vane refuses to start (`vane run --lenient`",
        "once per UDP session, not for every datagram (`per_datagram: true`",
        "`HEALTH_FIRST_ROUND_BLOCKS=true` restores that",
        "resolver/tls.yaml: warning: 0.9.2 difference: an external plugin that answers its own `failure` branch",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let (_, json) = check(&cfg, &["--compat", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    let notes = doc["problems"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|p| {
                    p["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("0.9.2 difference"))
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(notes, 4, "{json}");
}

#[test]
fn lenient_starts_without_the_invalid_files_as_0_9_2_did() {
    let echo = Echo::start("E");
    let cfg = ConfigDir::new();
    let (good, bad) = meets_all(&cfg, echo.addr);
    // By default an invalid dir does not start.
    let mut strict = Vane::spawn(&cfg, &[]);
    assert_eq!(
        strict.wait_exit(Duration::from_secs(10)),
        Some(1),
        "{}",
        strict.logs()
    );
    assert!(
        strict.logs().contains("vane run --lenient"),
        "{}",
        strict.logs()
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(["run", "--lenient", "--config"])
        .arg(cfg.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LISTEN_ADDR", "127.0.0.1")
        .env("METRICS_ADDR", "off")
        .env("SOCKET_DIR", cfg.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vane run --lenient");
    let served = wait_until(Duration::from_secs(10), || {
        ask_once(good, "hi").as_deref() == Some("E:hi")
    });
    let bad_bound = std::net::TcpStream::connect(("127.0.0.1", bad)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    assert!(served, "the valid listener serves");
    assert!(!bad_bound, "the invalid one is left out");
}

#[test]
fn health_first_round_blocks_probes_before_binding() {
    let live = Echo::start("LIVE");
    let dead = free_port();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!(
            "protocols:\n  - name: all\n    priority: 1\n    detect: {{ method: fallback, pattern: any }}\n    destination: {{ type: forward, forward: {{ targets: [ {{ ip: 127.0.0.1, port: {dead} }} ], fallbacks: [ {{ ip: 127.0.0.1, port: {} }} ] }} }}\n",
            live.addr.port()
        ),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("HEALTH_FIRST_ROUND_BLOCKS", "true".into())],
            wait_ports: vec![],
        },
    );
    assert!(v.wait_log(
        &format!("Tcp listener on port {port} is UP"),
        Duration::from_secs(10)
    ));
    // The very first connection already knows the target is down and takes the fallback.
    assert_eq!(ask_once(port, "first").as_deref(), Some("LIVE:first"));
    let logs = v.logs();
    let probed = logs
        .find("before binding (HEALTH_FIRST_ROUND_BLOCKS); 1 target(s) down")
        .expect("the blocking round is logged");
    let bound = logs
        .find(&format!("Tcp listener on port {port} is UP"))
        .expect("bound");
    assert!(probed < bound, "probed before binding:\n{logs}");
}
