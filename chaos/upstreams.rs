//! Chaos at the edges: upstreams that die mid-relay or hang, and connection floods past the
//! limits. Each test checks that the affected connections end promptly, that nothing else is
//! disturbed, and that the gateway serves normally afterwards.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn an_upstream_dying_mid_relay_closes_only_its_connections() {
    let healthy = Echo::start("H");
    let doomed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let doomed_addr = doomed.local_addr().expect("addr");
    let cfg = ConfigDir::new();
    let (p_ok, p_dead) = (free_port(), free_port());
    cfg.tcp_proxy(p_ok, healthy.addr);
    cfg.tcp_proxy(p_dead, doomed_addr);
    let mut v = Vane::start(&cfg, &[p_ok, p_dead]);
    let mut good = Client::connect(p_ok).expect("connect");
    assert_eq!(good.ask("a").as_deref(), Some("H:a"));
    let mut victim = TcpStream::connect(("127.0.0.1", p_dead)).expect("connect");
    victim.write_all(b"hello\n").expect("write");
    // Skip the harness's readiness probe, then kill the upstream side of our connection.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut upstream_side = None;
    doomed.set_nonblocking(true).expect("nonblocking");
    while upstream_side.is_none() && Instant::now() < deadline {
        if let Ok((mut s, _)) = doomed.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut b = [0u8; 6];
            if s.read_exact(&mut b).is_ok() && &b == b"hello\n" {
                upstream_side = Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let upstream_side = upstream_side.expect("our connection reached the upstream");
    drop(upstream_side);
    drop(doomed);
    victim
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut b = [0u8; 1];
    let t = Instant::now();
    assert!(
        matches!(victim.read(&mut b), Ok(0) | Err(_)),
        "the client sees the close"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "promptly");
    assert_eq!(
        good.ask("b").as_deref(),
        Some("H:b"),
        "the other upstream's connection is untouched"
    );
    assert!(v.alive());
}

#[test]
fn a_hanging_upstream_is_cut_by_the_idle_timeout() {
    let hang = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = hang.local_addr().expect("addr");
    let held = std::thread::spawn(move || {
        // Accept and never answer.
        let mut conns = Vec::new();
        hang.set_nonblocking(true).expect("nonblocking");
        let end = Instant::now() + Duration::from_secs(8);
        while Instant::now() < end {
            if let Ok((s, _)) = hang.accept() {
                conns.push(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, addr);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("STREAM_IDLE_TIMEOUT_SECS", "2".into())],
            wait_ports: vec![port],
        },
    );
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.write_all(b"anyone?\n").expect("write");
    c.set_read_timeout(Some(Duration::from_secs(6)))
        .expect("timeout");
    let t = Instant::now();
    let mut b = [0u8; 1];
    assert!(matches!(c.read(&mut b), Ok(0) | Err(_)));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "closed by the idle timeout after {waited:?}"
    );
    assert!(wait_until(Duration::from_secs(3), || v.metric(&format!(
        "vane_connections_active{{listener=\"tcp:{port}\",protocol=\"tcp\"}}"
    )) == Some(0.0)));
    let _ = held.join();
}

#[test]
fn a_connection_flood_past_the_limits_is_refused_counted_and_survived() {
    let up = Echo::start("F");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let mut v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("MAX_CONNECTIONS", "100".into()),
                ("MAX_CONNECTIONS_PER_IP", "1000".into()),
            ],
            wait_ports: vec![port],
        },
    );
    let before = rss_kib(v.pid());
    let mut held = Vec::new();
    for _ in 0..600 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            held.push(s);
        }
    }
    assert!(
        wait_until(Duration::from_secs(5), || v
            .metric("vane_connections_rejected_total{reason=\"max_connections\"}")
            .unwrap_or(0.0)
            >= 400.0),
        "{}",
        v.metrics_text()
    );
    let grew = rss_kib(v.pid()).saturating_sub(before);
    assert!(grew < 32 * 1024, "RSS grew by {grew} KiB under the flood");
    drop(held);
    assert!(
        wait_until(Duration::from_secs(5), || ask_once(port, "after")
            .as_deref()
            == Some("F:after")),
        "serves normally once the flood is gone"
    );
    assert!(v.alive());
}
