//! QUIC-LB over real processes: two back vanes terminate HTTP/3 and put their server ID in
//! every connection ID they issue (`QUIC_LB_SERVER_ID`); two front vanes share one UDP port
//! (`REUSE_PORT`, as several balancers behind one address) and forward QUIC by its SNI, or,
//! for a packet of a connection they never saw, by the server ID its connection ID names
//! (`quic.server_id`). A client that changes its address again and again lands on either front
//! and keeps its connection to the same back.

mod common;

use std::time::Duration;

use common::http3;
use common::*;

fn back(
    server_id: &str,
    body: &str,
    cert_from: Option<&ConfigDir>,
) -> (
    Vane,
    ConfigDir,
    u16,
    rustls::pki_types::CertificateDer<'static>,
) {
    let cfg = ConfigDir::new();
    let port = free_port();
    let cert = http3::terminating_config(
        &cfg,
        port,
        &format!("pipeline:\n  internal.terminator.response:\n    input: {{ status: 200, body: \"{body}\" }}\n"),
    );
    // Both backs serve the same name with the same pair, as a real pool does.
    let cert = match cert_from {
        Some(first) => {
            for f in ["site.test.crt", "site.test.key"] {
                let text =
                    std::fs::read_to_string(first.path().join("certs").join(f)).expect("pair");
                cfg.write(&format!("certs/{f}"), &text);
            }
            let pem = std::fs::read(first.path().join("certs/site.test.crt")).expect("crt");
            rustls::pki_types::pem::PemObject::from_pem_slice(&pem).expect("cert")
        }
        None => cert,
    };
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("QUIC_LB_SERVER_ID", server_id.into())],
            wait_ports: vec![],
        },
    );
    v.wait_udp(port);
    (v, cfg, port, cert)
}

fn front(port: u16, back1: u16, back2: u16) -> (Vane, ConfigDir) {
    let cfg = ConfigDir::new();
    cfg.write(
        &format!("listener/[{port}]/udp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: quic }\n",
    );
    let proxy = |p: u16| {
        format!("{{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {p} }} }} }}")
    };
    cfg.write(
        "resolver/quic.yaml",
        &format!(
            r#"connection:
  internal.common.match:
    input: {{ left: "{{{{quic.server_id}}}}", right: "01" }}
    output:
      "true": {b1}
      "false":
        internal.common.match:
          input: {{ left: "{{{{quic.server_id}}}}", right: "02" }}
          output:
            "true": {b2}
            "false":
              internal.common.match:
                input: {{ left: "{{{{quic.sni}}}}", right: "site.test" }}
                output:
                  "true": {b2}
                  "false": {{ internal.transport.abort: {{}} }}
"#,
            b1 = proxy(back1),
            b2 = proxy(back2)
        ),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("REUSE_PORT", "true".into()),
                ("QUIC_LB_SERVER_ID_LEN", "1".into()),
            ],
            wait_ports: vec![],
        },
    );
    v.wait_udp(port);
    (v, cfg)
}

fn udp_sessions(v: &Vane) -> f64 {
    v.metric_sum("vane_connections_total")
}

async fn body(send: &mut http3::Sender) -> String {
    let (status, body) = http3::get_body(send, "/").await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moving_client_keeps_its_back_through_either_front() {
    let (b1, c1, p1, cert) = back("01", "back1", None);
    let (b2, _c2, p2, _) = back("02", "back2", Some(&c1));
    let port = free_port();
    let (fa, _ca) = front(port, p1, p2);
    let (fb, _cb) = front(port, p1, p2);

    let ep = http3::endpoint(cert);
    let mut send = http3::connect(
        ep.clone(),
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    )
    .await;
    assert_eq!(
        body(&mut send).await,
        "back2",
        "a new connection goes by SNI"
    );
    let first = (udp_sessions(&fa), udp_sessions(&fb));
    assert_eq!(first.0 + first.1, 1.0, "{first:?}");

    // Move until the other front has seen the connection (the kernel spreads by address).
    let mut moves = 0;
    for _ in 0..24 {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        ep.rebind(sock).expect("rebind");
        moves += 1;
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), body(&mut send))
                .await
                .ok()
                .as_deref(),
            Some("back2"),
            "request after move {moves}; front A:\n{}\nfront B:\n{}",
            fa.logs(),
            fb.logs()
        );
        if udp_sessions(&fa) > 0.0 && udp_sessions(&fb) > 0.0 {
            break;
        }
    }
    assert!(
        udp_sessions(&fa) > 0.0 && udp_sessions(&fb) > 0.0,
        "both fronts carried the connection after {moves} moves"
    );
    let routed = fa.count_log("routed by server id 02") + fb.count_log("routed by server id 02");
    assert!(
        routed >= 1,
        "a front routed a packet of an unknown connection by its server ID"
    );
    assert_eq!(
        b1.metric_sum("vane_requests_total"),
        0.0,
        "nothing reached the other back"
    );
    assert!(b2.metric_sum("vane_requests_total") >= (moves + 1) as f64);
}
