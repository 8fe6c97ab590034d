//! WebSocket tunnels (`src/l7/websocket.rs`): HTTP/1.1 upgrades and HTTP/2 extended CONNECT.

use super::*;
use common::ws::{ws_upgrade, ws_upstream};

#[test]
fn websocket_upgrades_are_tunnelled_when_allowed_and_refused_otherwise() {
    let up = ws_upstream();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        &split_app(
            "/ws",
            &format!(
                "url_prefix: \"http://127.0.0.1:{}\", websocket: true",
                up.port()
            ),
            &format!("url_prefix: \"http://127.0.0.1:{}\"", up.port()),
        ),
    );
    let _v = Vane::start(&cfg, &[port]);
    let upgrade = |path: &str| ws_upgrade(port, path);
    let (mut s, head) = upgrade("/ws");
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: from-upstream"),
        "{head}"
    );
    for msg in ["frame-one", "frame-two"] {
        s.write_all(msg.as_bytes()).expect("write");
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).expect("echo through the tunnel");
        assert_eq!(got, msg.as_bytes());
    }
    // Without `websocket: true` the upgrade is refused with 0.9.2's 405.
    let (mut s, head) = upgrade("/other");
    assert!(head.starts_with("http/1.1 405"), "{head}");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    assert!(body.contains("WebSocket upgrade is disabled"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_extended_connect_reaches_an_http1_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = ws_upstream();
    let (_cfg, port, _v) = proxy_gateway(
        &format!("http://127.0.0.1:{}", up.port()),
        ", websocket: true",
    );
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut send = h2_client(tcp).await;
    let mut req = hyper::Request::connect("http://ws.test/chat")
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .expect("request");
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200, "RFC 8441 tunnels open with 200");
    let upgraded = hyper::upgrade::on(resp).await.expect("upgraded");
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    for msg in [&b"frame-over-h2"[..], b"second"] {
        io.write_all(msg).await.expect("write");
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut got))
            .await
            .expect("in time")
            .expect("echo");
        assert_eq!(got, msg);
    }
}
