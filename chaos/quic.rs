//! Chaos for QUIC: panic the `quic` actor while QUIC connections are active (it restarts and
//! adopts the connection-ID table it sweeps, traffic goes on, the process lives), and flood the QUIC
//! port with garbage and half-finished Initials (pending memory stays bounded and real clients
//! still get through).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::quic::{ask, client, connect, server};
use common::*;

fn setup(cfg: &ConfigDir, a: SocketAddr) -> u16 {
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/udp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: quic }\n",
    );
    cfg.write("resolver/quic.yaml", &format!("connection:\n  internal.transport.proxy:\n    input: {{ target.ip: 127.0.0.1, target.port: {} }}\n", a.port()));
    port
}

/// A gateway forwarding QUIC to one server, and a client connection through it that works.
struct Live {
    v: Vane,
    port: u16,
    vane: SocketAddr,
    conn: quinn::Connection,
    cert: common::tls::Cert,
    ep: quinn::Endpoint,
    server: quinn::Endpoint,
    cfg: ConfigDir,
}

async fn live() -> Live {
    let (a, cert, server) = server("a.test", "A");
    let cfg = ConfigDir::new();
    let port = setup(&cfg, a);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![],
            wait_ports: vec![],
        },
    );
    let vane = v.wait_udp(port);
    let ep = client(&[&cert], false);
    let conn = connect(&ep, vane, "a.test").await;
    assert_eq!(ask(&conn, "before").await.as_deref(), Some("A:before"));
    Live {
        v,
        port,
        vane,
        conn,
        cert,
        ep,
        server,
        cfg,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_the_quic_actor_keeps_connections_flowing() {
    // Named bindings keep the endpoints and the config dir alive for the whole test.
    let Live {
        mut v,
        port: _,
        vane,
        conn,
        cert,
        ep: _ep,
        server: _server,
        cfg: _cfg,
    } = live().await;
    assert!(
        wait_until(Duration::from_secs(2), || v
            .metric("vane_quic_sessions")
            .unwrap_or(0.0)
            >= 1.0),
        "{}",
        v.metrics_text()
    );

    assert_eq!(v.post("/chaos/panic/quic").0, 202);
    assert!(
        wait_until(Duration::from_secs(5), || v.actor("quic")
            == Some(("running".into(), 1))),
        "{:?}",
        v.actor("quic")
    );
    assert!(wait_until(Duration::from_secs(3), || v
        .metric("vane_actor_restarts_total{actor=\"quic\"}")
        == Some(1.0)));
    // The table and the gauges belong to the data plane: the restarted actor adopts them.
    assert!(
        v.metric("vane_quic_sessions").unwrap_or(0.0) >= 1.0,
        "the live connection is still counted\n{}",
        v.metrics_text()
    );
    assert!(
        v.metric("vane_quic_cids").unwrap_or(0.0) >= 1.0,
        "its connection IDs are still routed\n{}",
        v.metrics_text()
    );
    assert_eq!(
        ask(&conn, "during").await.as_deref(),
        Some("A:during"),
        "the open connection goes on"
    );
    let ep2 = client(&[&cert], false);
    let conn2 = connect(&ep2, vane, "a.test").await;
    assert_eq!(ask(&conn2, "new").await.as_deref(), Some("A:new"));
    assert!(v.alive());
}

/// Random datagrams and Initial-looking headers with random payloads from `127.0.0.2`.
fn flood(port: u16, stop: Arc<AtomicBool>, sent: Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let socks: Vec<UdpSocket> = (0..64)
            .filter_map(|_| UdpSocket::bind("127.0.0.2:0").ok())
            .collect();
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut i = 0usize;
        while !stop.load(Ordering::SeqCst) && i < 200_000 {
            let mut d: Vec<u8> = (0..1200).map(|_| rnd() as u8).collect();
            if i.is_multiple_of(2) {
                // A well-formed v1 Initial header (random DCID, length to the end), random body.
                d[0] = 0xc3;
                d[1..5].copy_from_slice(&1u32.to_be_bytes());
                d[5] = 8;
                d[14] = 0;
                d[15] = 0;
                let len = (1200 - 18) as u16 | 0x4000;
                d[16..18].copy_from_slice(&len.to_be_bytes());
            }
            let _ = socks[i % socks.len()].send_to(&d, ("127.0.0.1", port));
            sent.fetch_add(1, Ordering::SeqCst);
            i += 1;
            if i.is_multiple_of(2000) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_flood_stays_within_the_pending_limits_and_real_clients_get_through() {
    let (a, cert, _s) = server("a.test", "A");
    let cfg = ConfigDir::new();
    let port = setup(&cfg, a);
    let limit = 2 * 1024 * 1024;
    let mut v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("QUIC_GLOBAL_PENDING_BYTES_LIMIT", limit.to_string()),
                ("LOG_LEVEL", "info".into()),
            ],
            wait_ports: vec![],
        },
    );
    let vane = v.wait_udp(port);
    let rss_before = rss_kib(v.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooder = flood(port, stop.clone(), sent.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ok = 0;
    for i in 0..3 {
        let ep = client(&[&cert], false);
        let conn = connect(&ep, vane, "a.test").await;
        if ask(&conn, &format!("q{i}")).await.as_deref() == Some(format!("A:q{i}").as_str()) {
            ok += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = flooder.join();
    assert_eq!(ok, 3, "real clients got through the flood");
    assert!(sent.load(Ordering::SeqCst) > 1000, "the flood ran");
    // The high-water mark of the whole flood, not a few samples of it.
    let peak = v.metric("vane_quic_pending_peak_bytes").unwrap_or(f64::MAX);
    assert!(
        peak <= limit as f64,
        "pending bytes peaked at {peak}, limit {limit}"
    );
    let grew = rss_kib(v.pid()).saturating_sub(rss_before);
    assert!(grew < 64 * 1024, "RSS grew by {grew} KiB");
    assert!(
        v.metric("vane_l4p_parse_failures_total{protocol=\"quic\",error=\"malformed\"}")
            .unwrap_or(0.0)
            + v.metric("vane_l4p_parse_failures_total{protocol=\"quic\",error=\"not_initial\"}")
                .unwrap_or(0.0)
            > 100.0,
        "{}",
        v.metrics_text()
    );
    assert!(v.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_udp_listener_keeps_quic_connections() {
    let Live {
        mut v,
        port,
        vane: _,
        conn,
        cert: _,
        ep: _ep,
        server: _server,
        cfg: _cfg,
    } = live().await;
    let name = format!("listeners/udp:{port}");
    assert_eq!(v.post(&format!("/chaos/panic/{name}")).0, 202);
    assert!(
        wait_until(Duration::from_secs(5), || v.actor(&name)
            == Some(("running".into(), 1))),
        "{:?}",
        v.actor(&name)
    );
    assert_eq!(
        ask(&conn, "after").await.as_deref(),
        Some("A:after"),
        "the session survived the listener restart"
    );
    assert!(v.alive());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_at_an_http3_port_leaves_real_http3_clients_served() {
    let cfg = ConfigDir::new();
    let port = free_port();
    let cert = common::http3::terminating_config(
        &cfg,
        port,
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: served }\n",
    );
    let mut v = Vane::start(&cfg, &[]);
    let addr = v.wait_udp(port);
    let rss_before = rss_kib(v.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooder = flood(port, stop.clone(), sent.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ok = 0;
    for i in 0..3 {
        let mut send = common::http3::client(addr, cert.clone()).await;
        let (status, len) = common::http3::get(&mut send, &format!("/during-{i}")).await;
        if status == 200 && len == "served".len() {
            ok += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = flooder.join();
    assert_eq!(ok, 3, "HTTP/3 clients were served during the flood");
    assert!(sent.load(Ordering::SeqCst) > 1000, "the flood ran");
    let grew = rss_kib(v.pid()).saturating_sub(rss_before);
    assert!(grew < 64 * 1024, "RSS grew by {grew} KiB");
    assert!(v.alive());
}

/// Live UDP sessions cost a few kilobytes each: a session that waits for replies borrows no
/// receive buffer (each used to own 64 KiB for its whole life), and its task keeps no room for
/// the deciding steps it has finished. Every session still gets its echo back.
#[test]
fn live_udp_sessions_cost_kilobytes_not_a_buffer_each() {
    let echo = UdpEcho::start("U", Duration::ZERO);
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/udp.yaml"),
        &proxy_flow(echo.addr),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("UDP_SESSION_TIMEOUT_SECS", "60".into()),
                ("MAX_CONNECTIONS_PER_IP", "100000".into()),
                ("LOG_LEVEL", "info".into()),
            ],
            wait_ports: Vec::new(),
        },
    );
    v.wait_udp(port);
    // Warm up the runtime's threads and pools with a few sessions first.
    let mut socks = Vec::new();
    let open = |n: usize, socks: &mut Vec<std::net::UdpSocket>| {
        for i in 0..n {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
            let reply = udp_ask(&s, port, &format!("s{i}"), Duration::from_secs(2));
            assert_eq!(reply.as_deref(), Some(&*format!("U:s{i}")), "session {i}");
            socks.push(s);
        }
    };
    open(200, &mut socks);
    let before = rss_kib(v.pid());
    let n = 2000;
    open(n, &mut socks);
    let per = rss_kib(v.pid()).saturating_sub(before) as f64 / n as f64;
    assert!(per < 16.0, "{per:.1} KiB per live UDP session");
}

/// A valid v1 Initial whose CRYPTO frame holds the first 1000 bytes of a ClientHello that
/// claims 3000: inspection must hold it and wait for the rest.
fn half_initial(i: u32) -> Vec<u8> {
    use vane::l4p::quic::keys::InitialKeys;
    use vane::l4p::quic::packet::{put_varint, V1};
    let dcid = (0x5eed_0000_0000_0000u64 + i as u64).to_be_bytes();
    let keys = InitialKeys::client(V1, &dcid).expect("keys");
    let mut hello = vec![1u8, 0, 0x0b, 0xb8]; // ClientHello, 3000 bytes
    hello.extend(std::iter::repeat_n(0x42u8, 996));
    let mut frames = vec![0x06];
    put_varint(&mut frames, 0);
    put_varint(&mut frames, hello.len() as u64);
    frames.extend_from_slice(&hello);
    frames.resize(1100, 0);
    keys.seal(V1, &dcid, b"halfcid", 0, &frames)
}

/// Half-finished handshakes are held while inspection waits for the rest of the
/// ClientHello; what they hold counts against `QUIC_GLOBAL_PENDING_BYTES_LIMIT`, so a flood of
/// them from many addresses reaches the limit (and is refused there) instead of growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_finished_handshakes_are_held_within_the_global_budget() {
    let (a, _cert, _s) = server("a.test", "A");
    let cfg = ConfigDir::new();
    let port = setup(&cfg, a);
    let limit = 128 * 1024;
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("QUIC_GLOBAL_PENDING_BYTES_LIMIT", limit.to_string()),
                ("MAX_CONNECTIONS_PER_IP", "1000".into()),
            ],
            wait_ports: vec![],
        },
    );
    v.wait_udp(port);
    let datagram_len = half_initial(0).len();
    // 400 addresses x ~1.2 KB is more than three times the limit.
    let socks: Vec<UdpSocket> = (0..400)
        .filter_map(|_| UdpSocket::bind("127.0.0.1:0").ok())
        .collect();
    assert!(socks.len() >= 300, "sockets for the flood");
    for (i, s) in socks.iter().enumerate() {
        s.send_to(&half_initial(i as u32), ("127.0.0.1", port))
            .expect("send");
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let refused = "vane_udp_dropped_total{reason=\"pending_full\"}";
    assert!(
        wait_until(Duration::from_secs(5), || v.metric(refused).unwrap_or(0.0)
            >= 1.0),
        "the flood reached the limit and was refused there\n{}",
        v.metrics_text()
    );
    let held = v.metric("vane_quic_pending_bytes").unwrap_or(0.0);
    assert!(
        held >= (limit - 2 * datagram_len) as f64,
        "inspection holds the half-finished handshakes ({held} bytes): they are charged"
    );
    let peak = v.metric("vane_quic_pending_peak_bytes").unwrap_or(f64::MAX);
    assert!(peak <= limit as f64, "peak {peak} over the limit {limit}");
}
