//! HTTP/3 (`src/l7/h3.rs`, `h3_client.rs`): termination on UDP listeners, upstreams, clients that move.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_is_terminated_on_a_udp_listener_with_the_session_keys() {
    use bytes::Buf;
    let cfg = ConfigDir::new();
    let port = free_port();
    let cert = common::http3::terminating_config(&cfg, port, ECHO_APP);
    let v = Vane::start(&cfg, &[]);
    let addr = v.wait_udp(port);
    let mut send = common::http3::client(addr, cert).await;
    for i in 0..3 {
        let req = hyper::Request::get(format!("https://site.test/h3/{i}?q={i}"))
            .header("user-agent", "h3probe")
            .body(())
            .expect("request");
        let mut stream = send.send_request(req).await.expect("send");
        stream.finish().await.expect("finish");
        let resp = stream.recv_response().await.expect("response");
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.headers()["x-version"], "HTTP/3.0");
        assert_eq!(
            resp.headers()["x-client"],
            "127.0.0.1",
            "L4 keys reach HTTP/3 requests"
        );
        let mut body = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.expect("data") {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("GET /h3/{i}?q={i} host=site.test ua=h3probe")
        );
    }
    let counted = "vane_requests_total{app=\"httpx\",status=\"201\"}";
    assert!(wait_until(Duration::from_secs(3), || v.metric(counted) == Some(3.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_forwarded_to_an_http3_upstream() {
    let up = h3_upstream().await;
    let (_cfg, port, _v) = proxy_gateway(
        &format!("https://localhost:{}", up.port()),
        ", version: h3, skip_verify: true",
    );
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut send = h1_client(tcp).await;
    let payload = Bytes::from(vec![b'q'; 1024 * 1024]);
    for i in 0..2 {
        send.ready().await.expect("ready");
        let resp = send
            .send_request(
                hyper::Request::post(format!("/up/{i}"))
                    .header("host", "front.test")
                    .body(http_body_util::Full::new(payload.clone()))
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), 202);
        assert_eq!(resp.headers()["x-seen-version"], "HTTP/3.0");
        assert_eq!(resp.headers()["x-seen-path"], format!("/up/{i}").as_str());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body.len(), payload.len(), "1 MiB up and back over HTTP/3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http3_client_that_changes_address_keeps_its_connection() {
    let cfg = ConfigDir::new();
    let port = free_port();
    let cert = common::http3::terminating_config(&cfg, port, ECHO_APP);
    let v = Vane::start(&cfg, &[]);
    let addr = v.wait_udp(port);
    let ep = common::http3::endpoint(cert);
    let mut send = common::http3::connect(ep.clone(), addr).await;
    assert_eq!(common::http3::get(&mut send, "/before").await.0, 201);
    // The client moves to a new local address (as after a NAT rebinding).
    ep.rebind(std::net::UdpSocket::bind("127.0.0.1:0").expect("new socket"))
        .expect("rebind");
    let after = tokio::time::timeout(
        Duration::from_secs(10),
        common::http3::get(&mut send, "/after"),
    )
    .await
    .expect("answered after the move");
    assert_eq!(after.0, 201);
    // The client switched to a connection ID issued inside the encrypted connection; its tag
    // routed the packets from the new address to the endpoint.
    assert!(
        v.metric("vane_h3_rerouted_datagrams_total").unwrap_or(0.0) >= 1.0,
        "{}",
        v.metrics_text()
    );
}

/// 0.9.2 runs `application/h3` for HTTP/3 requests when it exists, `httpx` otherwise; HTTP/1.1
/// on the same config keeps `httpx`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h3_application_is_preferred_for_http3() {
    let cfg = ConfigDir::new();
    let (udp, tcp) = (free_port(), free_port());
    let cert = common::http3::terminating_config(
        &cfg,
        udp,
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: from-httpx }\n",
    );
    cfg.write(
        "application/h3.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: from-h3 }\n",
    );
    cfg.plain_http(tcp, "httpx");
    let v = Vane::start(&cfg, &[tcp]);
    let addr = v.wait_udp(udp);
    let mut send = common::http3::client(addr, cert).await;
    let (status, body) = common::http3::get_body(&mut send, "/").await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), "from-h3");
    let plain = common::http(
        std::net::SocketAddr::from(([127, 0, 0, 1], tcp)),
        "GET",
        "/",
        None,
    );
    assert_eq!(plain, (200, "from-httpx".to_string()));
}

/// A terminated HTTP/3 client downloads a body of several MiB (the proxied upstream echoes
/// what was posted): the endpoint sends datagrams in batches from the listener's socket,
/// and every byte arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_http3_download_arrives_whole() {
    use bytes::Buf;
    let up = upstream(None).await;
    let cfg = ConfigDir::new();
    let port = free_port();
    let app = proxy_app(&format!("http://127.0.0.1:{}", up.addr.port()), "");
    let cert = common::http3::terminating_config(&cfg, port, &app);
    let v = Vane::start(&cfg, &[]);
    let addr = v.wait_udp(port);
    let mut send = common::http3::client(addr, cert).await;
    let payload: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let req = hyper::Request::post("https://site.test/echo")
        .body(())
        .expect("request");
    let mut stream = send.send_request(req).await.expect("send");
    stream
        .send_data(Bytes::from(payload.clone()))
        .await
        .expect("body");
    stream.finish().await.expect("finish");
    let resp = tokio::time::timeout(Duration::from_secs(20), stream.recv_response())
        .await
        .expect("an answer in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = Vec::with_capacity(payload.len());
    let read = async {
        while let Some(mut chunk) = stream.recv_data().await.expect("data") {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the whole body in time");
    assert_eq!(body.len(), payload.len());
    assert!(body == payload, "the body arrived changed");
}
