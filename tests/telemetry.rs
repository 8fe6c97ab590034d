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

/// Upstream authorities taken from a request header (a forward-proxy style flow) cannot grow
/// the metrics: past `METRICS_MAX_LABEL_VALUES` they share one `other` series, and the
/// collapsed observations are counted.
#[test]
fn upstream_targets_from_client_input_are_capped_per_metric_family() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        r#"pipeline:
  internal.driver.upstream:
    input: { url_prefix: "http://{{req.header.x-target}}" }
    output:
      success: { internal.terminator.response: {} }
      failure: { internal.terminator.response: { input: { status: 502 } } }
"#,
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("METRICS_MAX_LABEL_VALUES", "20".into())],
            wait_ports: vec![port],
        },
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answered = 0;
    for i in 0..300u32 {
        // Distinct loopback addresses with nothing listening: each connect is refused at once.
        let target = format!("127.0.{}.{}:1", i / 200 + 1, i % 200 + 1);
        let req = format!("GET / HTTP/1.1\r\nHost: a\r\nx-target: {target}\r\n\r\n");
        s.write_all(req.as_bytes()).expect("write");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => panic!("connection closed after {answered} answers"),
            }
        }
        let text = String::from_utf8_lossy(&head);
        assert!(text.starts_with("HTTP/1.1 502"), "{text}");
        let len = content_length(&text);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).expect("body");
        answered += 1;
    }
    assert_eq!(answered, 300);
    let text = v.metrics_text();
    let targets: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("vane_upstream_requests_total{"))
        .filter_map(|l| l.split("target=\"").nth(1)?.split('"').next())
        .collect();
    assert!(targets.contains("other"), "{targets:?}");
    assert!(targets.len() <= 21, "{} series: {targets:?}", targets.len());
    let collapsed = v
        .metric("vane_metric_labels_collapsed_total{family=\"vane_upstream_requests_total\"}")
        .unwrap_or(0.0);
    assert!(collapsed >= 280.0, "collapsed {collapsed}");
}
