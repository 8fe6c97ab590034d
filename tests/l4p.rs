//! L4+ over real sockets: TLS routed by SNI and ALPN without terminating it (the client sees
//! the upstream's own certificate), a ClientHello split across segments, plaintext routing by
//! `http.host`, and legacy `resolver` destinations.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::tls::{client_hello, TlsClient, TlsEcho};
use common::*;

const TLS_RESOLVER: &str = r#"connection:
  internal.common.match:
    input: { left: "{{tls.sni}}", right: a.test }
    output:
      "true":
        internal.transport.proxy:
          input: { target.ip: 127.0.0.1, target.port: PORT_A }
      "false":
        internal.common.match:
          input: { left: "{{tls.sni}}", right: b.test }
          output:
            "true":
              internal.transport.proxy:
                input: { target.ip: 127.0.0.1, target.port: PORT_B }
            "false":
              internal.transport.abort: {}
"#;

fn upgrade(cfg: &ConfigDir, port: u16, protocol: &str) {
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!(
            "connection:\n  internal.transport.upgrade:\n    input: {{ protocol: {protocol} }}\n"
        ),
    );
}

#[test]
fn tls_is_routed_by_sni_and_passed_through_untouched() {
    let a = TlsEcho::start("a.test", "A");
    let b = TlsEcho::start("b.test", "B");
    let cfg = ConfigDir::new();
    let port = free_port();
    upgrade(&cfg, port, "tls");
    cfg.write(
        "resolver/tls.yaml",
        &TLS_RESOLVER
            .replace("PORT_A", &a.addr.port().to_string())
            .replace("PORT_B", &b.addr.port().to_string()),
    );
    let v = Vane::start(&cfg, &[port]);
    let roots = [&a.cert.der, &b.cert.der];
    let mut ca =
        TlsClient::connect(port, "a.test", &[], &roots).expect("handshake with A through vane");
    assert_eq!(
        ca.peer_cert().as_ref(),
        Some(&a.cert.der),
        "the client sees A's own certificate"
    );
    assert_eq!(ca.ask("hello").as_deref(), Some("A:hello"));
    let mut cb = TlsClient::connect(port, "B.TEST", &[], &roots).expect("handshake with B");
    assert_eq!(
        cb.peer_cert().as_ref(),
        Some(&b.cert.der),
        "SNI is matched case-insensitively"
    );
    assert_eq!(cb.ask("hello").as_deref(), Some("B:hello"));
    assert!(
        TlsClient::connect(port, "c.test", &[], &roots).is_err(),
        "unknown SNI is aborted"
    );
    assert!(
        v.metric("vane_l4p_inspections_total{protocol=\"tls\",outcome=\"ok\"}")
            .unwrap_or(0.0)
            >= 3.0,
        "{}",
        v.metrics_text()
    );
}

#[test]
fn tls_is_routed_by_alpn() {
    let a = TlsEcho::start("x.test", "H2");
    let b = TlsEcho::start("x.test", "H1");
    let cfg = ConfigDir::new();
    let port = free_port();
    upgrade(&cfg, port, "tls");
    cfg.write(
        "resolver/tls.yaml",
        &format!("connection:\n  internal.common.match:\n    input: {{ left: \"{{{{tls.alpn}}}}\", right: h2, operator: contains }}\n    output:\n      \"true\": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {} }} }} }}\n      \"false\": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {} }} }} }}\n", a.addr.port(), b.addr.port()),
    );
    let _v = Vane::start(&cfg, &[port]);
    let mut h2 =
        TlsClient::connect(port, "x.test", &["h2", "http/1.1"], &[&a.cert.der]).expect("h2 client");
    assert_eq!(h2.ask("q").as_deref(), Some("H2:q"));
    let mut h1 =
        TlsClient::connect(port, "x.test", &["http/1.1"], &[&b.cert.der]).expect("h1 client");
    assert_eq!(h1.ask("q").as_deref(), Some("H1:q"));
}

#[test]
fn a_client_hello_split_across_segments_is_routed_and_delivered_byte_for_byte() {
    let hello = client_hello("a.test", &["h2"]);
    let want = hello.len();
    let (a, got_a) = recorder(b"A", move |b| b.len() >= want);
    let (b, _) = recorder(b"B", move |b| b.len() >= want);
    let cfg = ConfigDir::new();
    let port = free_port();
    upgrade(&cfg, port, "tls");
    cfg.write(
        "resolver/tls.yaml",
        &TLS_RESOLVER
            .replace("PORT_A", &a.port().to_string())
            .replace("PORT_B", &b.port().to_string()),
    );
    let _v = Vane::start(&cfg, &[port]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let cuts = [3, hello.len() / 2, hello.len()];
    let mut from = 0;
    for cut in cuts {
        s.write_all(&hello[from..cut]).expect("segment");
        from = cut;
        std::thread::sleep(Duration::from_millis(80));
    }
    let mut reply = [0u8; 1];
    s.read_exact(&mut reply).expect("routed");
    assert_eq!(&reply, b"A");
    assert_eq!(
        *got_a.lock().expect("lock"),
        hello,
        "the upstream received the ClientHello untouched"
    );
}

#[test]
fn a_stalled_or_garbage_handshake_is_closed_and_counted() {
    let cfg = ConfigDir::new();
    let port = free_port();
    upgrade(&cfg, port, "tls");
    cfg.write(
        "resolver/tls.yaml",
        "connection:\n  internal.transport.abort: {}\n",
    );
    let v = Vane::start(&cfg, &[port]);
    assert_eq!(ask_once(port, "this is not tls"), None);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(&client_hello("a.test", &[])[..20])
        .expect("partial");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut b = [0u8; 1];
    assert!(
        matches!(s.read(&mut b), Ok(0) | Err(_)),
        "closed after TLS_HANDSHAKE_PEEK_TIMEOUT_MS"
    );
    assert!(
        wait_until(Duration::from_secs(2), || v.metric(
            "vane_l4p_parse_failures_total{protocol=\"tls\",error=\"not_tls\"}"
        ) == Some(1.0)),
        "{}",
        v.metrics_text()
    );
    assert!(wait_until(Duration::from_secs(2), || v.metric(
        "vane_l4p_parse_failures_total{protocol=\"tls\",error=\"timeout\"}"
    ) == Some(1.0)));
}

#[test]
fn plaintext_is_routed_by_http_host_and_legacy_resolver_destinations_work() {
    let a = Echo::start("A");
    let b = Echo::start("B");
    let cfg = ConfigDir::new();
    let (port, legacy) = (free_port(), free_port());
    upgrade(&cfg, port, "http");
    cfg.write(
        &format!("listener/[{legacy}]/tcp.yaml"),
        "protocols:\n  - name: web\n    priority: 1\n    detect: { method: prefix, pattern: \"HTTP/1.\" }\n    destination: { type: resolver, resolver: http }\n",
    );
    cfg.write(
        "resolver/http.yaml",
        &format!("connection:\n  internal.common.match:\n    input: {{ left: \"{{{{http.host}}}}\", right: a.test }}\n    output:\n      \"true\": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {} }} }} }}\n      \"false\": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {} }} }} }}\n", a.addr.port(), b.addr.port()),
    );
    let _v = Vane::start(&cfg, &[port, legacy]);
    for p in [port, legacy] {
        let mut c = Client::connect(p).expect("connect");
        assert_eq!(
            c.ask("GET / HTTP/1.1\r\nHost: a.test\r").as_deref(),
            Some("A:GET / HTTP/1.1"),
            "port {p}"
        );
        let mut c = Client::connect(p).expect("connect");
        assert_eq!(
            c.ask("GET / HTTP/1.1\r\nHost: other.test\r").as_deref(),
            Some("B:GET / HTTP/1.1"),
            "port {p}"
        );
        // A head longer than the first peek: its Host is still seen.
        let long = format!(
            "GET / HTTP/1.1\r\nX-Pad: {}\r\nHost: a.test\r",
            "p".repeat(1500)
        );
        let mut c = Client::connect(p).expect("connect");
        assert_eq!(
            c.ask(&long).as_deref(),
            Some("A:GET / HTTP/1.1"),
            "port {p}, a 1.5 KB head"
        );
    }
}
