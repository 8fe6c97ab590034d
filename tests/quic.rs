//! QUIC routed by the SNI of its Initial packets, with real quinn clients and servers: a
//! ClientHello spread over two Initial packets, two upstreams told apart by SNI, and a client
//! that changes its address mid-connection.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::quic::{ask, client, connect, server};
use common::*;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_is_routed_by_sni_even_when_the_client_hello_spans_two_packets() {
    let (a, cert_a, _sa) = server("a.test", "A");
    let (b, cert_b, _sb) = server("b.test", "B");
    let cfg = ConfigDir::new();
    let port = free_port();
    quic_config(&cfg, port, a, b);
    let v = Vane::spawn(&cfg, &[]);
    let vane = v.wait_udp(port);

    let ep = client(&[&cert_a, &cert_b], true);
    let conn = connect(&ep, vane, "a.test").await;
    assert_eq!(ask(&conn, "hello").await.as_deref(), Some("A:hello"));
    assert!(
        v.logs()
            .contains("QUIC ClientHello complete after 2 datagrams"),
        "the big ClientHello spanned two Initial packets\n{}",
        v.logs()
    );

    let ep2 = client(&[&cert_a, &cert_b], false);
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
        };
        let (o, i, c) = (outer_sock.clone(), nat.inner.clone(), nat.client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = o.recv_from(&mut buf).await {
                *c.lock().expect("lock") = Some(from);
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
    let (a, cert_a, _sa) = server("a.test", "A");
    let (b, _cert_b, _sb) = server("b.test", "B");
    let cfg = ConfigDir::new();
    let port = free_port();
    quic_config(&cfg, port, a, b);
    let v = Vane::spawn(&cfg, &[]);
    let vane = v.wait_udp(port);
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
}

/// A connection busy for longer than `QUIC_SESSION_TTL_SECS` can still move: its connection
/// IDs are kept alive by its traffic, not only by lookups from new addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_busy_past_the_cid_ttl_can_still_move() {
    let (a, cert_a, _sa) = server("a.test", "A");
    let (b, _cert_b, _sb) = server("b.test", "B");
    let cfg = ConfigDir::new();
    let port = free_port();
    quic_config(&cfg, port, a, b);
    let v = Vane::spawn(
        &cfg,
        &[
            ("QUIC_SESSION_TTL_SECS", "1".into()),
            ("QUIC_STICKY_SESSION_TTL", "2".into()),
        ],
    );
    let vane = v.wait_udp(port);
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
