//! PROXY protocol v1 and v2: accepted from trusted balancers (the client address then feeds
//! `conn.ip`), ignored from anyone else, and sent to upstreams on request.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use vane::l4p::proxy_protocol::{encode, parse, Parsed, Version};

fn only_from(ip: &str, up: SocketAddr, trusted: &str) -> String {
    format!(
        "proxy_protocol:\n  trusted: [\"{trusted}\"]\nconnection:\n  internal.common.match:\n    input: {{ left: \"{{{{conn.ip}}}}\", right: \"{ip}\" }}\n    output:\n      \"true\": {{ internal.transport.proxy: {{ input: {{ target.ip: \"{}\", target.port: {} }} }} }}\n      \"false\": {{ internal.transport.abort: {{}} }}\n",
        up.ip(),
        up.port()
    )
}

fn send(port: u16, bytes: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(bytes).ok()?;
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    while !out.ends_with(b"\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&b[..n]),
        }
    }
    (!out.is_empty()).then(|| String::from_utf8_lossy(&out).trim_end().to_string())
}

#[test]
fn v1_and_v2_headers_from_a_trusted_balancer_set_conn_ip() {
    let up = Echo::start("A");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &only_from("203.0.113.7", up.addr, "127.0.0.1/32"),
    );
    let v = Vane::start(&cfg, &[]);
    assert!(v.wait_log(&format!("port {port} is UP"), Duration::from_secs(5)));
    let client: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
    let dst: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    for version in [Version::V1, Version::V2] {
        let mut bytes = encode(version, client, dst);
        bytes.extend_from_slice(b"hello\n");
        assert_eq!(
            send(port, &bytes).as_deref(),
            Some("A:hello"),
            "{version:?}: header consumed, conn.ip from it"
        );
    }
    assert_eq!(
        send(port, b"hello\n"),
        None,
        "a trusted peer without the required header is refused"
    );
    assert!(wait_until(Duration::from_secs(2), || v.metric(&format!(
        "vane_proxy_protocol_rejected_total{{listener=\"tcp:{port}\"}}"
    )) == Some(1.0)));
}

#[test]
fn headers_from_untrusted_peers_are_not_honoured() {
    let up = Echo::start("A");
    let cfg = ConfigDir::new();
    let port = free_port();
    // Only 10.0.0.0/8 may send headers; we connect from 127.0.0.1, so the header is just data
    // and conn.ip stays 127.0.0.1.
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &only_from("127.0.0.1", up.addr, "10.0.0.0/8"),
    );
    let _v = Vane::start(&cfg, &[port]);
    let reply = send(port, b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\n");
    assert_eq!(
        reply.as_deref(),
        Some("A:PROXY TCP4 203.0.113.7 127.0.0.1 1 2")
    );
}

#[test]
fn headers_are_sent_to_upstreams_from_flows_and_legacy_rules() {
    let (up, got) = recorder(b"pong\n", |b| b.ends_with(b"ping\n"));
    let cfg = ConfigDir::new();
    let (p1, p2) = (free_port(), free_port());
    cfg.write(&format!("listener/[{p1}]/tcp.yaml"), &format!("connection:\n  internal.transport.proxy:\n    input: {{ target.ip: 127.0.0.1, target.port: {}, proxy_protocol: v2 }}\n", up.port()));
    cfg.write(
        &format!("listener/[{p2}]/tcp.yaml"),
        &format!("protocols:\n  - name: all\n    priority: 1\n    detect: {{ method: fallback, pattern: x }}\n    destination:\n      type: forward\n      forward: {{ proxy_protocol: v1, targets: [ {{ ip: 127.0.0.1, port: {} }} ] }}\n", up.port()),
    );
    let _v = Vane::start(&cfg, &[p1, p2]);
    for (port, version) in [(p1, Version::V2), (p2, Version::V1)] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let me = s.local_addr().expect("addr");
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        s.write_all(b"ping\n").expect("write");
        let mut b = [0u8; 5];
        s.read_exact(&mut b).expect("pong");
        let bytes = got.lock().expect("lock").clone();
        match parse(&bytes) {
            Parsed::Header {
                version: v,
                src,
                dst,
                len,
            } => {
                assert_eq!(v, version);
                assert_eq!(src, Some(me), "the upstream learns the real client");
                assert_eq!(dst.map(|d| d.port()), Some(port));
                assert_eq!(&bytes[len..], b"ping\n");
            }
            other => panic!("{other:?}: {bytes:?}"),
        }
    }
}

#[test]
fn proxy_protocol_options_are_validated() {
    let cfg = ConfigDir::new();
    cfg.write("listener/[1]/tcp.yaml", "proxy_protocol: { trusted: [\"10.0.0.0/33\"] }\nconnection: { internal.transport.abort: {} }\n");
    cfg.write("listener/[2]/udp.yaml", "proxy_protocol: { trusted: [\"10.0.0.1\"] }\nconnection: { internal.transport.abort: {} }\n");
    cfg.write("listener/[3]/tcp.yaml", "connection: { internal.transport.proxy: { input: { target.ip: 127.0.0.1, target.port: 1, proxy_protocol: v3 } } }\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(["check", "--config"])
        .arg(cfg.path())
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("listener/[1]/tcp.yaml: proxy_protocol.trusted.0:"),
        "{text}"
    );
    assert!(
        text.contains("listener/[2]/udp.yaml: proxy_protocol: only TCP listeners"),
        "{text}"
    );
    assert!(text.contains("listener/[3]/tcp.yaml: connection.internal.transport.proxy.input.proxy_protocol: expected v1 or v2"), "{text}");
}
