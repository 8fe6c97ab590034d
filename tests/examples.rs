//! The bundled config and every dir under `config/examples/` are valid, and the examples do
//! what their comments say: each is copied with its fixed port numbers mapped to free ones and
//! run against real upstreams.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tls::{TlsClient, TlsEcho};
use common::*;

fn config_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn example_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(config_root().join("examples"))
        .expect("config/examples")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// `text` with every whole number found in `ports` replaced by its mapping.
fn renumber(text: &str, ports: &HashMap<u16, u16>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        match digits.parse::<u16>().ok().and_then(|n| ports.get(&n)) {
            Some(to) => out.push_str(&to.to_string()),
            None => out.push_str(digits),
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Copies `config/examples/NAME` into a fresh config dir, mapping ports in names and texts.
fn instantiate(name: &str, ports: &HashMap<u16, u16>) -> ConfigDir {
    instantiate_dir(&config_root().join("examples").join(name), ports)
}

/// Copies a config dir (without `examples/` and generated certificates), mapping ports.
fn instantiate_dir(src: &Path, ports: &HashMap<u16, u16>) -> ConfigDir {
    fn copy(from: &Path, to: &Path, ports: &HashMap<u16, u16>) {
        for e in std::fs::read_dir(from).expect("read example").flatten() {
            let file = e.file_name().to_string_lossy().to_string();
            if file == "examples" || file == "certs" {
                continue;
            }
            let name = renumber(&file, ports);
            let (src, dst) = (e.path(), to.join(name));
            if src.is_dir() {
                std::fs::create_dir_all(&dst).expect("mkdir");
                copy(&src, &dst, ports);
            } else {
                let text = std::fs::read_to_string(&src).expect("read");
                std::fs::write(&dst, renumber(&text, ports)).expect("write");
                let mode = std::fs::metadata(&src).expect("stat").permissions();
                std::fs::set_permissions(&dst, mode).expect("chmod");
            }
        }
    }
    let cfg = ConfigDir::new();
    copy(src, cfg.path(), ports);
    cfg
}

#[test]
fn the_bundled_config_and_every_example_pass_vane_check() {
    let mut dirs = example_dirs();
    assert!(dirs.len() >= 8, "examples: {dirs:?}");
    dirs.push(config_root());
    for dir in dirs {
        let out = Command::new(env!("CARGO_BIN_EXE_vane"))
            .arg("check")
            .arg("--config")
            .arg(&dir)
            .env_clear()
            .output()
            .expect("run vane check");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{}: {text}", dir.display());
        assert!(text.contains(": ok ("), "{}: {text}", dir.display());
    }
}

#[test]
fn renumber_maps_whole_numbers_only() {
    let ports = HashMap::from([(8443, 30001), (53, 30002)]);
    assert_eq!(
        renumber("[8443] port: 53 84430 1053 53", &ports),
        "[30001] port: 30002 84430 1053 30002"
    );
}

#[test]
fn tls_sni_example_routes_by_name_and_alpn_without_terminating() {
    let api = TlsEcho::start("api.example.com", "API");
    let h2 = TlsEcho::start("www.example.com", "H2");
    let rest = TlsEcho::start("www.example.com", "REST");
    let port = free_port();
    let ports = HashMap::from([
        (8443, port),
        (9441, api.addr.port()),
        (9442, h2.addr.port()),
        (9443, rest.addr.port()),
    ]);
    let cfg = instantiate("tls-sni", &ports);
    let _v = Vane::start(&cfg, &[port]);
    let roots = [&api.cert.der, &h2.cert.der, &rest.cert.der];
    for (sni, alpn, want) in [
        ("api.example.com", &["h2"][..], &api),
        ("www.example.com", &["h2", "http/1.1"][..], &h2),
        ("www.example.com", &["http/1.1"][..], &rest),
    ] {
        let mut c = TlsClient::connect(port, sni, alpn, &roots).expect("handshake");
        assert_eq!(
            c.peer_cert().as_ref(),
            Some(&want.cert.der),
            "{sni} {alpn:?}"
        );
        assert!(c.ask("ping").is_some_and(|r| r.ends_with(":ping")));
    }
}

#[test]
fn legacy_example_sends_http_to_the_first_target_and_the_rest_to_the_fallback_rule() {
    let web = Echo::start("WEB");
    let other = Echo::start("SSH");
    let port = free_port();
    let ports = HashMap::from([
        (7000, port),
        (8081, web.addr.port()),
        (8082, free_port()),
        (8083, free_port()),
        (22, other.addr.port()),
        (443, free_port()),
        (8443, free_port()),
    ]);
    let cfg = instantiate("tcp-legacy", &ports);
    let _v = Vane::start(&cfg, &[port]);
    assert_eq!(
        ask_once(port, "GET /index.html").as_deref(),
        Some("WEB:GET /index.html")
    );
    assert_eq!(ask_once(port, "hello").as_deref(), Some("SSH:hello"));
}

#[test]
fn external_plugin_example_lets_loopback_through() {
    let up = Echo::start("UP");
    let port = free_port();
    let ports = HashMap::from([(7002, port), (8080, up.addr.port())]);
    let cfg = instantiate("external-plugin", &ports);
    let _v = Vane::start(&cfg, &[port]);
    // Only the plugin's `allow` branch proxies; `deny` and `failure` close the connection.
    assert_eq!(ask_once(port, "hi").as_deref(), Some("UP:hi"));
}

#[test]
fn the_bundled_config_answers_http_from_a_flow_and_relays_metrics() {
    let (port, metrics) = (free_port(), free_port());
    let ports = HashMap::from([(8080, port), (9464, metrics)]);
    let cfg = instantiate_dir(&config_root(), &ports);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("METRICS_ADDR", format!("127.0.0.1:{metrics}"))],
            wait_ports: vec![port],
        },
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, body) = http(addr, "GET", "/hello", None);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON answer");
    assert_eq!(json["path"], "/hello");
    assert_eq!(json["client"], "127.0.0.1");
    let (status, body) = http(addr, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(body.contains("vane_connections_total"), "{body}");
    // Not HTTP: closed by the listener flow.
    let mut c = Client::connect(port).expect("connect");
    assert_eq!(c.ask("\u{16}\u{3}\u{1} not http"), None);
    assert!(v.logs().contains("config loaded"));
}

#[test]
fn acme_example_obtains_its_certificates_from_a_real_ca() {
    let (http, tls) = (free_port(), free_port());
    let ptls = common::pebble::PebbleTls::new();
    let pebble = common::pebble::Pebble::start(&ptls, http, tls, None, None);
    let cfg = instantiate("acme", &HashMap::from([(8080, http), (8443, tls)]));
    let text = std::fs::read_to_string(cfg.path().join("acme.yaml")).expect("acme.yaml");
    let staging = "directory: https://acme-staging-v02.api.letsencrypt.org/directory";
    assert!(text.contains(staging), "{text}");
    cfg.write(
        "acme.yaml",
        &text.replace(
            staging,
            &format!(
                "directory: {}\n    ca_bundle: {}",
                pebble.directory(),
                ptls.ca_pem.display()
            ),
        ),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("ACME_RETRY_MIN_SECS", "1".into())],
            wait_ports: vec![http, tls],
        },
    );
    let issued = || {
        v.metric("vane_acme_orders_total{result=\"issued\"}")
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(std::time::Duration::from_secs(60), || issued() >= 2.0),
        "both orders (http-01 and tls-alpn-01) issue; vane:\n{}\npebble:\n{}",
        v.logs(),
        pebble.logs()
    );
    let root = pebble.root();
    for name in ["example.org", "www.example.org", "api.example.org"] {
        let mut c = TlsClient::connect(tls, name, &["http/1.1"], &[&root])
            .unwrap_or_else(|e| panic!("{name}: not Pebble's pair: {e}"));
        let status = c.ask(&format!("GET / HTTP/1.1\r\nHost: {name}\r\n\r"));
        assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"), "{name}");
    }
}

/// A config dir as a Vane 0.9.2 user has it (legacy rules in TOML, flows in JSON, YAML and
/// TOML, a command plugin in `bin/`, a node, a terminated and a passed-through TLS name, UDP),
/// taken as it is: every part answers end to end.
#[test]
fn a_vane_0_9_2_config_dir_runs_unchanged() {
    let (ping, other) = (Echo::start("PING"), Echo::start("OTHER"));
    let dns = UdpEcho::start("DNS", std::time::Duration::ZERO);
    let passed = TlsEcho::start("other.example", "PASSED");
    let (legacy, http, tls, udp) = (free_port(), free_port(), free_port(), free_port());
    let cfg = instantiate(
        "vane-0.9.2",
        &HashMap::from([
            (6000, legacy),
            (6080, http),
            (6443, tls),
            (6053, udp),
            (9101, ping.addr.port()),
            (9102, other.addr.port()),
            (9153, dns.addr.port()),
            (9301, passed.addr.port()),
        ]),
    );
    let cert = common::tls::write_cert(&cfg, "www.example.com", &["www.example.com"]);
    let v = Vane::start(&cfg, &[legacy, http, tls]);
    // Legacy rules: by prefix to the node, the rest to the fallback rule.
    assert_eq!(ask_once(legacy, "PING 1").as_deref(), Some("PING:PING 1"));
    assert_eq!(ask_once(legacy, "hello").as_deref(), Some("OTHER:hello"));
    // Plaintext HTTP through the JSON flow, the resolver and the application with its plugin.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    assert_eq!(
        common::http(addr, "GET", "/", None),
        (200, "hello from a Vane 0.9.2 config".to_string())
    );
    assert_eq!(common::http(addr, "GET", "/admin", None).0, 403);
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    std::io::Write::write_all(
        &mut s,
        b"GET /admin HTTP/1.1\r\nHost: x\r\nx-token: letmein\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("admin area"),
        "{answer}\n{}",
        v.logs()
    );
    // TLS: www.example.com is terminated with its pair from certs/, other names pass through.
    let mut c = TlsClient::connect(tls, "www.example.com", &["http/1.1"], &[&cert])
        .expect("terminated by vane");
    assert_eq!(
        c.ask("GET / HTTP/1.1\r\nHost: www.example.com\r\n\r")
            .as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let mut p =
        TlsClient::connect(tls, "other.example", &[], &[&passed.cert.der]).expect("passed through");
    assert_eq!(p.ask("hi").as_deref(), Some("PASSED:hi"));
    // UDP.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    v.wait_udp(udp);
    assert_eq!(
        udp_ask(&sock, udp, "q", std::time::Duration::from_secs(2)).as_deref(),
        Some("DNS:q")
    );
}
