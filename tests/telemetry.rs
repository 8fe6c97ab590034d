//! OpenTelemetry: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, each connection becomes a span with a
//! child span per plugin step, exported over OTLP/HTTP to a collector.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

type Posts = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal OTLP/HTTP collector: records (path, body) of every POST and answers 200.
fn collector() -> (u16, Posts) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let got: Posts = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (path, body) = loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break (String::new(), Vec::new()),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .and_then(|v| v.trim().parse().ok())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        let path = head
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or_default()
                            .to_string();
                        break (path, buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            g.lock().expect("lock").push((path, body));
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (port, got)
}

#[test]
fn connections_and_plugin_steps_are_exported_as_spans() {
    let up = Echo::start("T");
    let (otlp, got) = collector();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!("connection:\n  internal.common.match:\n    input: {{ left: \"{{{{conn.ip}}}}\", right: 127.0.0.1 }}\n    output:\n      \"true\": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {} }} }} }}\n      \"false\": {{ internal.transport.abort: {{}} }}\n", up.addr.port()),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{otlp}"),
                ),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
                ("LOG_LEVEL", "info".into()),
            ],
            wait_ports: vec![port],
        },
    );
    assert_eq!(ask_once(port, "traced").as_deref(), Some("T:traced"));
    let contains = |needle: &[u8]| {
        got.lock()
            .expect("lock")
            .iter()
            .any(|(p, b)| p == "/v1/traces" && b.windows(needle.len()).any(|w| w == needle))
    };
    assert!(
        wait_until(Duration::from_secs(10), || contains(b"connection")
            && contains(b"internal.common.match")),
        "no spans exported; got {} posts\n{}",
        got.lock().expect("lock").len(),
        v.logs()
    );
    assert!(contains(b"vane"), "service name");
}

#[test]
fn without_an_endpoint_nothing_is_traced() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, "127.0.0.1:9".parse().expect("addr"));
    let v = Vane::start(&cfg, &[port]);
    let _ = ask_once(port, "x");
    assert!(!v.logs().contains("exporting traces"));
    assert!(
        !v.logs().contains("connection{"),
        "no connection spans in the log lines"
    );
}

#[test]
fn http_requests_are_spans_with_their_plugin_steps_inside() {
    let (otlp, got) = collector();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 204 }\n",
    );
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{otlp}"),
                ),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
            ],
            wait_ports: vec![port],
        },
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(http(addr, "GET", "/traced-path", None).0, 204);
    let contains = |needle: &[u8]| {
        got.lock()
            .expect("lock")
            .iter()
            .any(|(p, b)| p == "/v1/traces" && b.windows(needle.len()).any(|w| w == needle))
    };
    assert!(
        wait_until(Duration::from_secs(10), || contains(b"request")
            && contains(b"/traced-path")
            && contains(b"internal.terminator.response")),
        "no request span exported"
    );
}
