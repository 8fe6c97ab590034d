//! `vane check` and start-up validation: every class of config error is reported as
//! `FILE: path: message`, exit codes are 0/1, and a bad config refuses to start.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn check(cfg: &ConfigDir) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vane"))
        .arg("check")
        .arg("--config")
        .arg(cfg.path())
        .env_clear()
        .output()
        .expect("run vane check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn has(text: &str, file: &str, at: &str, msg: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(&format!("{file}: ")) && l.contains(at) && l.contains(msg))
}

#[test]
fn valid_dir_exits_zero() {
    let cfg = ConfigDir::new();
    cfg.write(
        "listener/[8080]/tcp.yaml",
        &proxy_flow("127.0.0.1:9".parse().expect("addr")),
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok (1 listener(s)"), "{text}");
}

#[test]
fn every_error_class_is_reported_with_file_and_path() {
    let cfg = ConfigDir::new();
    let l = |p: u16| format!("listener/[{p}]/tcp.yaml");
    cfg.write(&l(1), "connection:\n  internal.nope:\n    input: {}\n");
    cfg.write(&l(2), "connection:\n  internal.transport.proxy:\n    input: { target.ip: 127.0.0.1, target.port: \"http\" }\n");
    cfg.write(
        &l(3),
        "connection:\n  internal.transport.proxy:\n    input: { target.ip: 127.0.0.1 }\n",
    );
    cfg.write(&l(4), "connection:\n  internal.transport.proxy:\n    input: { target.ip: 127.0.0.1, target.port: 80, colour: red }\n");
    cfg.write(&l(5), "connection:\n  internal.common.match:\n    input: { left: a, right: b }\n    output:\n      maybe:\n        internal.transport.abort: {}\n");
    cfg.write(
        &l(6),
        "connection:\n  internal.terminator.response:\n    input: { status: 200 }\n",
    );
    cfg.write(
        &l(7),
        "connection:\n  internal.driver.static:\n    input: { root: /tmp, uri: / }\n",
    );
    cfg.write(
        &l(8),
        "connection:\n  internal.common.match:\n    input: { left: \"{{conn.ip\", right: b }\n",
    );
    cfg.write(
        &l(9),
        "connection:\n  internal.transport.abort: {}\n  internal.transport.proxy: {}\n",
    );
    cfg.write(&l(10), "connection: [ oops\n");
    cfg.write(
        &l(11),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: quic }\n",
    );
    cfg.write(&l(12), "connection:\n  internal.transport.proxy:\n    input: { target.ip: not-an-ip, target.port: 80 }\n");
    cfg.write("listener/[13]/tcp.yaml", "protocols:\n  - name: Bad Name\n    priority: 0\n    detect: { method: magic, pattern: \"\" }\n    destination: { type: forward, forward: { targets: [] } }\n");
    cfg.write(
        "resolver/http.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: http }\n",
    );
    cfg.write(
        "nodes.yaml",
        "nodes:\n  - name: web\n    ips:\n      - { address: 300.1.1.1, ports: [], type: ipv4 }\n",
    );
    std::fs::create_dir_all(cfg.path().join("listener/[14]")).expect("mkdir");
    std::fs::write(
        cfg.path().join("listener/[14]/tcp.yaml"),
        [0xffu8, 0xfe, 0x00, 0x41],
    )
    .expect("write");
    cfg.write(
        "listener/[15]/tcp.yaml",
        &proxy_flow("127.0.0.1:9".parse().expect("addr")),
    );
    cfg.write(
        "listener/[15]/tcp.json",
        r#"{"connection": {"internal.transport.abort": {}}}"#,
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, 1, "{text}");
    let expect = [
        (
            l(1),
            "connection.internal.nope",
            "unknown plugin `internal.nope`",
        ),
        (
            l(2),
            "connection.internal.transport.proxy.input.target.port",
            "expected integer, got string \"http\"",
        ),
        (
            l(3),
            "connection.internal.transport.proxy.input",
            "missing required parameter `target.port`",
        ),
        (
            l(4),
            "connection.internal.transport.proxy.input.colour",
            "unknown parameter",
        ),
        (
            l(5),
            "connection.internal.common.match.output.maybe",
            "has no branch `maybe`",
        ),
        (
            l(6),
            "connection.internal.terminator.response",
            "cannot run at L4",
        ),
        (
            l(7),
            "connection.internal.driver.static",
            "only runs in the application `httpx`",
        ),
        (
            l(8),
            "connection.internal.common.match.input.left",
            "unclosed `{{`",
        ),
        (l(9), "connection", "exactly one plugin"),
        (l(10), "", "syntax error"),
        (
            l(11),
            "connection.internal.transport.upgrade.input.protocol",
            "cannot upgrade to `quic`",
        ),
        (
            l(12),
            "connection.internal.transport.proxy.input.target.ip",
            "is not an IP address",
        ),
        (
            "listener/[13]/tcp.yaml".into(),
            "protocols.0.name",
            "must match",
        ),
        (
            "listener/[13]/tcp.yaml".into(),
            "protocols.0.priority",
            ">= 1",
        ),
        (
            "listener/[13]/tcp.yaml".into(),
            "protocols.0.detect.pattern",
            "must not be empty",
        ),
        (
            "listener/[13]/tcp.yaml".into(),
            "protocols.0.destination.forward.targets",
            "at least one target",
        ),
        (
            "resolver/http.yaml".into(),
            "connection.internal.transport.upgrade.input.protocol",
            "loop back into a resolver",
        ),
        (
            "nodes.yaml".into(),
            "nodes.0.ips.0.address",
            "not an IP address",
        ),
        (
            "nodes.yaml".into(),
            "nodes.0.ips.0.ports",
            "at least one port",
        ),
        ("listener/[14]/tcp.yaml".into(), "", "cannot read"),
        ("listener/[15]/tcp.json".into(), "", "several formats"),
    ];
    for (file, at, msg) in expect {
        assert!(
            has(&text, &file, at, msg),
            "missing `{file}: {at}: ...{msg}...` in:\n{text}"
        );
    }
    assert!(
        text.contains("line"),
        "syntax errors carry a position:\n{text}"
    );
}

#[test]
fn warnings_do_not_fail_the_check() {
    let cfg = ConfigDir::new();
    cfg.write("listener/[80]/tcp.yaml", "connection:\n  internal.common.match:\n    input: { left: a, right: b }\n    output:\n      \"true\":\n        internal.transport.upgrade:\n          input: { protocol: tls }\n");
    let (code, text) = check(&cfg);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning: branch `false` is not handled"),
        "{text}"
    );
    assert!(text.contains("no resolver `tls` is configured"), "{text}");
}

#[test]
fn external_plugins_are_known_before_flows_validate() {
    let cfg = ConfigDir::new();
    cfg.write("plugins.json", r#"{"auth.check": {"name": "auth.check", "role": "middleware", "driver": {"type": "command", "program": "auth"}, "params": [{"name": "token", "required": true}], "output": ["ok", "deny"]}}"#);
    cfg.write("listener/[80]/tcp.yaml", "connection:\n  auth.check:\n    input: { token: \"{{conn.ip}}\" }\n    output:\n      ok: { internal.transport.abort: {} }\n      deny: { internal.transport.abort: {} }\n");
    let (code, text) = check(&cfg);
    assert_eq!(code, 0, "{text}");
    cfg.write(
        "listener/[81]/tcp.yaml",
        "connection:\n  auth.check:\n    output:\n      maybe: { internal.transport.abort: {} }\n",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, 1);
    assert!(
        has(
            &text,
            "listener/[81]/tcp.yaml",
            "connection.auth.check.input",
            "missing required parameter `token`"
        ),
        "{text}"
    );
    assert!(
        has(
            &text,
            "listener/[81]/tcp.yaml",
            "connection.auth.check.output.maybe",
            "no branch"
        ),
        "{text}"
    );
}

#[test]
fn a_bad_config_refuses_to_start_with_the_reasons() {
    let cfg = ConfigDir::new();
    cfg.write(
        "listener/[80]/tcp.yaml",
        "connection:\n  internal.nope: {}\n",
    );
    let mut v = Vane::spawn(&cfg, &[]);
    assert_eq!(v.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(
        v.logs()
            .contains("listener/[80]/tcp.yaml: connection.internal.nope: unknown plugin"),
        "{}",
        v.logs()
    );
}

#[test]
fn a_bad_access_token_refuses_to_start_before_binding() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, "127.0.0.1:9".parse().expect("addr"));
    let mut v = Vane::spawn(&cfg, &[("ACCESS_TOKEN", "short".into())]);
    assert_eq!(v.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(!v.logs().contains("TCP UP"), "{}", v.logs());
}

#[test]
fn a_port_in_use_is_reported_and_the_rest_serves() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let up = Echo::start("OK");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    cfg.tcp_proxy(busy_port, up.addr);
    let mut v = Vane::start(&cfg, &[port]);
    assert_eq!(ask_once(port, "x").as_deref(), Some("OK:x"));
    assert!(
        v.wait_log(
            &format!("cannot bind tcp 127.0.0.1:{busy_port}"),
            Duration::from_secs(5)
        ),
        "{}",
        v.logs()
    );
    assert!(v.alive());
    drop(busy);
    // The listener actor retries and takes the port once it is free.
    assert!(
        wait_until(Duration::from_secs(12), || ask_once(busy_port, "y")
            .as_deref()
            == Some("OK:y")),
        "{}",
        v.logs()
    );
}

#[test]
fn per_datagram_is_checked() {
    let cfg = ConfigDir::new();
    cfg.write(
        "listener/[7001]/tcp.yaml",
        "per_datagram: true\nconnection:\n  internal.transport.abort: {}\n",
    );
    cfg.write(
        "listener/[7002]/udp.yaml",
        "per_datagram: yes please\nconnection:\n  internal.transport.abort: {}\n",
    );
    cfg.write(
        "listener/[7003]/udp.yaml",
        "per_datagram: true\nconnection:\n  internal.transport.upgrade:\n    input: { protocol: quic }\n",
    );
    cfg.write(
        "resolver/quic.yaml",
        "connection:\n  internal.transport.abort: {}\n",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, 1, "{text}");
    assert!(
        has(
            &text,
            "listener/[7001]/tcp.yaml",
            "per_datagram",
            "only UDP listeners"
        ),
        "{text}"
    );
    assert!(
        has(
            &text,
            "listener/[7002]/udp.yaml",
            "per_datagram",
            "expected boolean"
        ),
        "{text}"
    );
    assert!(
        has(
            &text,
            "listener/[7003]/udp.yaml",
            "internal.transport.upgrade",
            "cannot upgrade to `quic`"
        ),
        "{text}"
    );
}

/// `vane check --format json`: one JSON document on stdout naming each problem's file, place
/// and severity, for CI pipelines and editors; the exit code is the same as the text form's.
#[test]
fn check_speaks_json_for_machines() {
    let run = |cfg: &ConfigDir| {
        let out = Command::new(env!("CARGO_BIN_EXE_vane"))
            .args(["check", "--format", "json", "--config"])
            .arg(cfg.path())
            .env_clear()
            .output()
            .expect("run vane check");
        let doc: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
        (out.status.code(), doc)
    };
    let good = ConfigDir::new();
    good.write(
        "listener/[8080]/tcp.yaml",
        &proxy_flow("127.0.0.1:9".parse().expect("addr")),
    );
    let (code, doc) = run(&good);
    assert_eq!(code, Some(0), "{doc}");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["listeners"], 1);
    let bad = ConfigDir::new();
    bad.write(
        "listener/[8080]/tcp.yaml",
        "connection:\n  internal.transport.proxy:\n    input: { target.port: 99999 }\n",
    );
    let (code, doc) = run(&bad);
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["ok"], false);
    let problems = doc["problems"].as_array().expect("problems");
    assert!(
        problems
            .iter()
            .any(|p| p["file"] == "listener/[8080]/tcp.yaml"
                && p["severity"] == "error"
                && !p["message"].as_str().unwrap_or_default().is_empty()),
        "{doc}"
    );
}

/// `vane convert`: the bundled config dir and every example, written in each format, pass
/// `vane check` with the same listeners, resolvers, applications and nodes as the original
/// (and converting back and forth changes nothing `vane check` can see).
#[test]
fn every_example_converts_to_every_format_and_still_checks() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut dirs = vec![root.clone()];
    for e in std::fs::read_dir(root.join("examples"))
        .expect("examples")
        .flatten()
    {
        if e.path().is_dir() {
            dirs.push(e.path());
        }
    }
    assert!(dirs.len() >= 8, "{dirs:?}");
    let check = |dir: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_vane"))
            .args(["check", "--format", "json", "--config"])
            .arg(dir)
            .env_clear()
            .output()
            .expect("vane check");
        let mut doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        doc.as_object_mut().map(|m| m.remove("config"));
        doc
    };
    let scratch = tempfile::tempdir().expect("scratch");
    for (i, dir) in dirs.iter().enumerate() {
        let want = check(dir);
        assert_eq!(want["ok"], true, "{}: {want}", dir.display());
        for to in ["toml", "yaml", "json", "ron"] {
            let out = scratch.path().join(format!("{i}-{to}"));
            let run = Command::new(env!("CARGO_BIN_EXE_vane"))
                .args(["convert", "--to", to, "--out"])
                .arg(&out)
                .arg("--config")
                .arg(dir)
                .env_clear()
                .output()
                .expect("vane convert");
            assert!(
                run.status.success(),
                "{} to {to}: {}",
                dir.display(),
                String::from_utf8_lossy(&run.stderr)
            );
            let got = check(&out);
            assert_eq!(got, want, "{} as {to}", dir.display());
        }
    }
}

/// A plural `resolvers/`, `applications/` or `listeners/` (Vane reads the singular ones) is
/// named in a warning instead of being silently ignored; the rest of the dir still loads.
#[test]
fn plural_directories_are_named_not_silently_ignored() {
    let cfg = ConfigDir::new();
    cfg.write(
        "listener/[8080]/tcp.yaml",
        &proxy_flow("127.0.0.1:9".parse().expect("addr")),
    );
    cfg.write(
        "resolvers/tls.yaml",
        "connection:\n  internal.transport.abort: {}\n",
    );
    cfg.write(
        "applications/httpx.yaml",
        "pipeline:\n  internal.terminator.response: {}\n",
    );
    let (code, text) = check(&cfg);
    assert_eq!(code, 0, "a warning, not a refusal: {text}");
    for (plural, singular) in [("resolvers", "resolver"), ("applications", "application")] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{plural}/"))
                    && l.contains(&format!("`{singular}/`"))),
            "{plural}/ is named: {text}"
        );
    }
}

/// 0.9.2 variables this build reads nowhere are named by `vane check` when set (with what
/// does their job here), so nobody tunes a knob that is not connected; the check still passes.
#[test]
fn variables_with_no_effect_are_named_when_set() {
    let cfg = ConfigDir::new();
    cfg.write(
        "listener/[8080]/tcp.yaml",
        &proxy_flow("127.0.0.1:9".parse().expect("addr")),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vane"))
        .arg("check")
        .arg("--config")
        .arg(cfg.path())
        .env_clear()
        .env("QUIC_RECV_BUFFER_SIZE", "1")
        .env("UDP_TIMEOUT_LOCAL", "5")
        .env("UDP_SESSION_TIMEOUT_SECS", "30")
        .output()
        .expect("run vane check");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{text}");
    for name in ["QUIC_RECV_BUFFER_SIZE", "UDP_TIMEOUT_LOCAL"] {
        assert!(
            text.lines().any(|l| l.starts_with("environment: ")
                && l.contains(name)
                && l.contains("no effect")),
            "{name} is named: {text}"
        );
    }
    assert!(
        !text.contains("UDP_SESSION_TIMEOUT_SECS:"),
        "a variable that takes effect is not: {text}"
    );
}
