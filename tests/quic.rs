//! QUIC routed by the SNI of its Initial packets, with real quinn clients and servers: a
//! ClientHello spread over two Initial packets, two upstreams told apart by SNI, and a client
//! that changes its address mid-connection.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::quic::{ask, client, connect, post_quantum_client, server};
use common::*;

/// vane forwarding QUIC by SNI (`a.test` to server "A", anything else to "B"), with what
/// must stay alive while a test runs.
struct Gateway {
    v: Vane,
    vane: SocketAddr,
    cert_a: common::tls::Cert,
    cert_b: common::tls::Cert,
    _keep: (ConfigDir, quinn::Endpoint, quinn::Endpoint),
}

fn gateway(env: &[(&str, String)]) -> Gateway {
    let (a, cert_a, sa) = server("a.test", "A");
    let (b, cert_b, sb) = server("b.test", "B");
    let cfg = ConfigDir::new();
    let port = free_port();
    quic_config(&cfg, port, a, b);
    let v = Vane::spawn(&cfg, env);
    let vane = v.wait_udp(port);
    Gateway {
        v,
        vane,
        cert_a,
        cert_b,
        _keep: (cfg, sa, sb),
    }
}

fn quic_config(cfg: &ConfigDir, port: u16, a: SocketAddr, b: SocketAddr) {
    cfg.write(
        &format!("listener/[{port}]/udp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: quic }\n",
    );
    cfg.write(
        "resolver/quic.yaml",
        &format!(
            "connection:\n  internal.common.match:\n    input: {{ left: \"{{{{quic.sni}}}}\", right: a.test }}\n    output:\n      \"true\": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {} }} }} }}\n      \"false\": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {} }} }} }}\n",
            a.port(),
            b.port()
        ),
    );
}

/// How many datagrams the first ClientHello vane logged as complete took.
fn spanned_datagrams(logs: &str) -> Option<usize> {
    let (_, rest) = logs.split_once("QUIC ClientHello complete after ")?;
    rest.split_once(" datagrams")?.0.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_is_routed_by_sni_even_when_the_client_hello_spans_two_packets() {
    let Gateway {
        v,
        vane,
        cert_a,
        cert_b,
        _keep,
    } = gateway(&[]);

    let ep = client(&[&cert_a, &cert_b], true);
    let conn = connect(&ep, vane, "a.test").await;
    assert_eq!(ask(&conn, "hello").await.as_deref(), Some("A:hello"));
    // Two Initial packets, or more when the client resent one before the hello was whole (a
    // loaded machine): a hello read from one datagram would say 1, or not be routed at all.
    let logs = v.logs();
    let held = spanned_datagrams(&logs);
    assert!(
        held.is_some_and(|n| n >= 2),
        "the big ClientHello spanned two Initial packets ({held:?})\n{logs}"
    );

    // A browser-like ClientHello with a post-quantum key share spans datagrams too.
    let ep2 = post_quantum_client(&[&cert_a, &cert_b]);
    let conn_b = connect(&ep2, vane, "b.test").await;
    assert_eq!(ask(&conn_b, "hi").await.as_deref(), Some("B:hi"));
    assert_eq!(
        ask(&conn, "again").await.as_deref(),
        Some("A:again"),
        "A's connection is unaffected"
    );
    assert!(
        v.metric("vane_l4p_inspections_total{protocol=\"quic\",outcome=\"ok\"}")
            .unwrap_or(0.0)
            >= 2.0,
        "{}",
        v.metrics_text()
    );
}

/// A NAT in front of the client whose public port can change (NAT rebinding): the client
/// keeps its connection IDs and does not know its address changed.
struct Nat {
    outer: SocketAddr,
    inner: Arc<std::sync::Mutex<Arc<tokio::net::UdpSocket>>>,
    outer_sock: Arc<tokio::net::UdpSocket>,
    client: Arc<std::sync::Mutex<Option<SocketAddr>>>,
    /// The last short-header datagram the client sent through the NAT.
    last: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl Nat {
    async fn start(to: SocketAddr) -> Nat {
        let outer_sock = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
        let inner = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
        let nat = Nat {
            outer: outer_sock.local_addr().expect("addr"),
            inner: Arc::new(std::sync::Mutex::new(inner.clone())),
            outer_sock: outer_sock.clone(),
            client: Arc::new(std::sync::Mutex::new(None)),
            last: Arc::new(std::sync::Mutex::new(None)),
        };
        let (o, i, c, last) = (
            outer_sock.clone(),
            nat.inner.clone(),
            nat.client.clone(),
            nat.last.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = o.recv_from(&mut buf).await {
                *c.lock().expect("lock") = Some(from);
                if buf[0] & 0x80 == 0 {
                    *last.lock().expect("lock") = Some(buf[..n].to_vec());
                }
                let sock = i.lock().expect("lock").clone();
                let _ = sock.send_to(&buf[..n], to).await;
            }
        });
        nat.pump(inner);
        nat
    }

    fn pump(&self, inner: Arc<tokio::net::UdpSocket>) {
        let (o, c) = (self.outer_sock.clone(), self.client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok(n) = inner.recv(&mut buf).await {
                let to = *c.lock().expect("lock");
                if let Some(to) = to {
                    let _ = o.send_to(&buf[..n], to).await;
                }
            }
        });
    }

    /// The NAT picks a new public port.
    async fn rebind(&self) {
        let fresh = Arc::new(
            tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
        *self.inner.lock().expect("lock") = fresh.clone();
        self.pump(fresh);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_address_changes_keeps_its_route() {
    let Gateway {
        v,
        vane,
        cert_a,
        cert_b: _,
        _keep,
    } = gateway(&[]);
    let nat = Nat::start(vane).await;
    let ep = client(&[&cert_a], false);
    let conn = connect(&ep, nat.outer, "a.test").await;
    assert_eq!(ask(&conn, "before").await.as_deref(), Some("A:before"));
    nat.rebind().await;
    assert_eq!(
        ask(&conn, "after move").await.as_deref(),
        Some("A:after move"),
        "routed by connection ID from the new address\n{}",
        v.logs()
    );
    assert!(
        v.metric("vane_quic_migrations_total").unwrap_or(0.0) >= 1.0,
        "{}",
        v.metrics_text()
    );
    // The old address is quiet now: the new path proves itself and carries the connection
    // without the amplification limit.
    let mut proven = false;
    for i in 0..20 {
        let msg = format!("moved {i} {}", "x".repeat(4000));
        assert_eq!(ask(&conn, &msg).await, Some(format!("A:{msg}")));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if v.metric("vane_quic_paths_proven_total").unwrap_or(0.0) >= 1.0 {
            proven = true;
            break;
        }
    }
    assert!(
        proven,
        "the moved client's path was never proven\n{}",
        v.metrics_text()
    );
}

/// Connection IDs travel in clear: a copy of a live connection's datagram, sent from another
/// address, must neither cut the real client off nor turn vane into an amplifier for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_datagram_from_another_address_does_not_take_the_connection() {
    let Gateway {
        v,
        vane,
        cert_a,
        cert_b: _,
        _keep,
    } = gateway(&[]);
    let nat = Nat::start(vane).await;
    let ep = client(&[&cert_a], false);
    let conn = connect(&ep, nat.outer, "a.test").await;
    assert_eq!(ask(&conn, "before").await.as_deref(), Some("A:before"));
    let copy = nat
        .last
        .lock()
        .expect("lock")
        .clone()
        .expect("a short-header datagram of the live connection");

    let thief = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (t, r) = (thief.clone(), received.clone());
    let counter = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok(n) = t.recv(&mut buf).await {
            r.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let mut sent = 0;
    for i in 0..5 {
        thief.send_to(&copy, vane).await.expect("send copy");
        sent += copy.len();
        let msg = format!("during {i}");
        assert_eq!(
            ask(&conn, &msg).await,
            Some(format!("A:{msg}")),
            "the real client was cut off by a copy from {}\n{}",
            thief.local_addr().expect("addr"),
            v.logs()
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    counter.abort();
    let got = received.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        got <= 3 * sent,
        "the copying address got {got} bytes for {sent} sent (more than 3x)"
    );
    assert!(
        v.metric("vane_quic_migrations_total").unwrap_or(0.0) >= 1.0,
        "the copy was seen as a new path of the connection\n{}",
        v.metrics_text()
    );
    assert_eq!(
        v.metric("vane_quic_paths_proven_total").unwrap_or(0.0),
        0.0,
        "a copy never takes over while the real client speaks"
    );
}

/// Two QUIC connections from one client socket (quinn reuses its endpoint's socket): the
/// second is routed by its own SNI, and the first carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_from_the_same_address_is_routed_by_its_own_hello() {
    let Gateway {
        v,
        vane,
        cert_a,
        cert_b,
        _keep,
    } = gateway(&[]);
    let ep = client(&[&cert_a, &cert_b], false);
    let first = connect(&ep, vane, "a.test").await;
    assert_eq!(ask(&first, "one").await.as_deref(), Some("A:one"));
    let second = connect(&ep, vane, "b.test").await;
    assert_eq!(ask(&second, "two").await.as_deref(), Some("B:two"));
    for i in 0..3 {
        let (m1, m2) = (format!("first {i}"), format!("second {i}"));
        assert_eq!(
            ask(&first, &m1).await,
            Some(format!("A:{m1}")),
            "{}",
            v.logs()
        );
        assert_eq!(ask(&second, &m2).await, Some(format!("B:{m2}")));
    }
}

/// Connection-ID entries are capped hard even when many connections register at once; the
/// entries over the cap are evicted (and counted), and the connections still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_never_push_the_cid_table_past_its_cap() {
    let Gateway {
        v,
        vane,
        cert_a,
        cert_b: _,
        _keep,
    } = gateway(&[("QUIC_MAX_SESSIONS", "16".into())]);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let ep = client(&[&cert_a], false);
            tokio::spawn(async move {
                let conn = connect(&ep, vane, "a.test").await;
                let msg = format!("c{i}");
                let r = ask(&conn, &msg).await;
                (r == Some(format!("A:{msg}")), ep, conn)
            })
        })
        .collect();
    let mut keep = Vec::new();
    for t in tasks {
        let (ok, ep, conn) = t.await.expect("task");
        assert!(ok, "{}", v.logs());
        keep.push((ep, conn));
    }
    let peak = v.metric("vane_quic_cids_peak").unwrap_or(f64::MAX);
    assert!(peak <= 16.0, "the table held {peak} entries (cap 16)");
    let evicted = v.metric("vane_quic_evictions_total").unwrap_or(0.0);
    assert!(
        evicted >= 16.0,
        "16 connections register at least 32 IDs; {evicted} evicted\n{}",
        v.metrics_text()
    );
}

/// A connection busy for longer than `QUIC_SESSION_TTL_SECS` can still move: its connection
/// IDs are kept alive by its traffic, not only by lookups from new addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_busy_past_the_cid_ttl_can_still_move() {
    let Gateway {
        v,
        vane,
        cert_a,
        cert_b: _,
        _keep,
    } = gateway(&[("QUIC_SESSION_TTL_SECS", "1".into())]);
    let nat = Nat::start(vane).await;
    let ep = client(&[&cert_a], false);
    let conn = connect(&ep, nat.outer, "a.test").await;
    // Busy for four TTLs (the quic actor sweeps every second here).
    for i in 0..16 {
        let msg = format!("busy {i}");
        assert_eq!(ask(&conn, &msg).await, Some(format!("A:{msg}")));
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    nat.rebind().await;
    assert_eq!(
        ask(&conn, "after move").await.as_deref(),
        Some("A:after move"),
        "the moved client is still found by connection ID\n{}",
        v.logs()
    );
}
