//! Vane 0.9.2 behaviours that only unit tests covered, now over real processes and sockets:
//! `CONFIG_DIR`, the start-up preparation of the dir, non-port listener directories, TCP and
//! UDP on one port, `.env` with the environment winning, running without `ACCESS_TOKEN`,
//! `LISTEN_IPV6` and `TLS_ALLOW_PARSE_FAILURE`.

mod common;

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A vane started by hand (no `--config`), killed when dropped.
struct Raw(Child, std::path::PathBuf);

impl Raw {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn raw(cwd: &std::path::Path, env: &[(&str, String)]) -> Raw {
    let log = cwd.join("vane.log");
    let out = std::fs::File::create(&log).expect("log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vane"));
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SOCKET_DIR", cwd)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Raw(cmd.spawn().expect("spawn vane"), log)
}

#[test]
fn config_dir_from_the_environment_is_prepared_and_one_port_serves_tcp_and_udp() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("conf");
    let (tcp_up, udp_up) = (Echo::start("T"), UdpEcho::start("U", Duration::ZERO));
    let port = free_port();
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write(
        &format!("listener/[{port}]/tcp.yaml"),
        &proxy_flow(tcp_up.addr),
    );
    write(
        &format!("listener/[{port}]/udp.yaml"),
        &proxy_flow(udp_up.addr),
    );
    // Not port directories: ignored, as in 0.9.2.
    write("listener/notaport/tcp.yaml", "not: [a, flow");
    write("listener/[abc]/tcp.yaml", "not: [a, flow");
    let v = raw(
        work.path(),
        &[
            ("CONFIG_DIR", dir.display().to_string()),
            ("LISTEN_ADDR", "127.0.0.1".into()),
            ("METRICS_ADDR", "off".into()),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || ask_once(port, "x").as_deref()
            == Some("T:x")),
        "{}",
        v.logs()
    );
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert!(
        wait_until(Duration::from_secs(5), || udp_ask(
            &sock,
            port,
            "y",
            Duration::from_millis(300)
        )
        .as_deref()
            == Some("U:y")),
        "{}",
        v.logs()
    );
    for d in ["resolver", "application", "certs", "bin"] {
        assert!(dir.join(d).is_dir(), "{d}/ created");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("plugins.json"))
            .ok()
            .as_deref(),
        Some("{}\n")
    );
    assert!(dir.join("nodes.yml").is_file());
    assert!(
        v.logs()
            .contains("Access token not set, management API disabled"),
        "{}",
        v.logs()
    );
    // Only the port directory made listeners; a bracketed non-port name is named, not bound.
    assert!(v.logs().contains("2 listener(s)"), "{}", v.logs());
    assert!(!v.logs().contains("notaport"), "{}", v.logs());
    assert!(
        v.logs().contains("`abc` is not a port; never bound"),
        "{}",
        v.logs()
    );
}

#[test]
fn dot_env_is_read_the_environment_wins_and_ipv6_listens_on_both_families() {
    let work = tempfile::tempdir().expect("tempdir");
    let cfg = ConfigDir::new();
    let up = Echo::start("E");
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let (mgmt, metrics) = (free_port(), free_port());
    std::fs::write(
        work.path().join(".env"),
        format!(
            "# 0.9.2's .env\nACCESS_TOKEN=a-token-from-dotenv-123\nPORT={mgmt}\nMETRICS_ADDR=127.0.0.1:{metrics}\nLOG_LEVEL=debug\nLISTEN_IPV6=true\n"
        ),
    )
    .expect(".env");
    let v = raw(
        work.path(),
        &[
            ("CONFIG_DIR", cfg.path().display().to_string()),
            ("LOG_LEVEL", "info".into()),
        ],
    );
    let mgmt_addr = SocketAddr::from(([127, 0, 0, 1], mgmt));
    assert!(
        wait_until(Duration::from_secs(10), || http(
            mgmt_addr,
            "GET",
            "/status",
            Some("a-token-from-dotenv-123")
        )
        .0 == 200),
        "the token and port came from .env:\n{}",
        v.logs()
    );
    let (code, _) = http(
        SocketAddr::from(([127, 0, 0, 1], metrics)),
        "GET",
        "/metrics",
        None,
    );
    assert_eq!(code, 200, "METRICS_ADDR from .env");
    assert!(
        !v.logs().contains(" DEBUG "),
        "LOG_LEVEL from the environment wins:\n{}",
        v.logs()
    );
    // LISTEN_IPV6: `::`, reachable over IPv6 and IPv4 loopback.
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
    let mut c = Client::from_stream(
        TcpStream::connect_timeout(&v6, Duration::from_secs(2)).expect("[::1]"),
    );
    assert_eq!(c.ask("six").as_deref(), Some("E:six"));
    assert_eq!(ask_once(port, "four").as_deref(), Some("E:four"));
}

#[test]
fn tls_allow_parse_failure_routes_what_is_not_tls() {
    let up = Echo::start("RAW");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tls_listener(port);
    cfg.write(
        "resolver/tls.yaml",
        &format!(
            "connection:\n  internal.common.match:\n    input: {{ left: \"{{{{tls.sni}}}}\", right: unknown }}\n    output:\n      \"true\": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {} }} }} }}\n      \"false\": {{ internal.transport.abort: {{}} }}\n",
            up.addr.port()
        ),
    );
    let strict = Vane::start(&cfg, &[port]);
    assert_eq!(ask_once(port, "plain"), None, "not TLS: closed by default");
    drop(strict);
    let _lenient = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("TLS_ALLOW_PARSE_FAILURE", "true".into())],
            wait_ports: vec![port],
        },
    );
    assert_eq!(
        ask_once(port, "plain").as_deref(),
        Some("RAW:plain"),
        "tls.sni = unknown, and the resolver routed it"
    );
}

#[test]
fn unknown_fields_outside_inputs_are_ignored_as_in_0_9_2() {
    let up = Echo::start("E");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!(
            "notes: \"written by hand\"\nconnection:\n  internal.transport.proxy:\n    comment: \"main path\"\n    input: {{ target.ip: \"{}\", target.port: {} }}\n",
            up.addr.ip(),
            up.addr.port()
        ),
    );
    cfg.write(
        "nodes.yaml",
        "nodes:\n  - name: web\n    weight: 3\n    ips:\n      - { address: 127.0.0.1, ports: [80], type: ipv4, zone: a }\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(["check", "--config"])
        .arg(cfg.path())
        .env_clear()
        .output()
        .expect("vane check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("comment: warning: ignored"),
        "named, not refused: {text}"
    );
    let _v = Vane::start(&cfg, &[port]);
    assert_eq!(ask_once(port, "x").as_deref(), Some("E:x"));
}
