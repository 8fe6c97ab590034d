//! The upstream driver (`src/l7/upstream.rs`, `h1_pool.rs`, `client.rs`): pooled HTTP/1.1, HTTP/2 by ALPN and h2c, streamed bodies, every version pair, failing upstreams.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_forwarded_to_an_http1_upstream_over_one_pooled_connection() {
    let up = upstream(None).await;
    let (_cfg, port, _v) = proxy_gateway(&format!("http://127.0.0.1:{}/base", up.addr.port()), "");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut send = h1_client(tcp).await;
    let big = vec![b'z'; 64 * 1024];
    for i in 0..5 {
        let path = if i == 4 {
            "/teapot".to_string()
        } else {
            format!("/p{i}?q={i}")
        };
        let req = hyper::Request::post(path.as_str())
            .header("host", "front.test")
            .header("x-custom", format!("c{i}"))
            .header("connection", "keep-alive, x-private")
            .header("x-private", "secret")
            .body(http_body_util::Full::new(Bytes::from(big.clone())))
            .expect("request");
        send.ready().await.expect("ready");
        let resp = send.send_request(req).await.expect("response");
        let h = resp.headers().clone();
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(status, if i == 4 { 418 } else { 200 });
        assert_eq!(h["x-upstream"], "yes");
        assert_eq!(h["x-seen-custom"], format!("c{i}").as_str());
        assert_eq!(h["x-seen-vane"], "0.9.2");
        assert_eq!(h["x-seen-xff"], "127.0.0.1");
        assert_eq!(h["x-seen-xfh"], "front.test");
        assert_eq!(h["x-seen-private"], "-", "hop-by-hop headers stay behind");
        assert!(
            h.get("x-drop-me").is_none(),
            "hop-by-hop headers of the reply too"
        );
        if i < 4 {
            assert_eq!(h["x-seen-uri"], format!("/base/p{i}?q={i}").as_str());
        }
        assert_eq!(
            body.len(),
            big.len(),
            "the request body went up and came back"
        );
    }
    assert_eq!(
        up.conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "five requests, one pooled upstream connection"
    );
}

/// An upstream that closes each keep-alive connection shortly after answering (as servers
/// with a short keep-alive timeout do): the pooled connection is found dead, or fails before
/// the request is sent and the request goes again on a new one; no client sees an error.
/// (Fails with the pool's closed-check and retry removed.)
#[test]
fn a_pooled_connection_the_upstream_closed_is_not_used_twice() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = l.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten().take(64) {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
                    std::thread::sleep(Duration::from_millis(30));
                }
                // Closed without `Connection: close`: the pool learns it from the socket.
            });
        }
    });
    let (_cfg, port, _v) = proxy_gateway(&format!("http://{up}"), "");
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    for i in 0..6 {
        let r = h1(&mut s, &[&format!("GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n")]);
        assert_eq!((r[0].0, r[0].2.as_str()), (200, "ok"), "request {i}");
        // After the close (a request racing the close itself can fail on any HTTP/1.1
        // client: the upstream may close after the request left).
        std::thread::sleep(Duration::from_millis(if i % 2 == 0 { 150 } else { 300 }));
    }
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 6,
        "every request needed a new upstream connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_speaks_http2_by_alpn_and_a_dead_one_takes_the_failure_branch() {
    let up = upstream(Some(Arc::new(common::tls::server_config(
        "localhost",
        &["h2", "http/1.1"],
        false,
    ))))
    .await;
    let dead = free_port();
    // `/dead` goes to a port nobody listens on, the rest to the TLS upstream.
    let (cfg, port) = app_dir(&split_app(
        "/dead",
        &format!("url_prefix: \"http://127.0.0.1:{dead}\""),
        &format!(
            "url_prefix: \"https://localhost:{}\", skip_verify: true",
            up.addr.port()
        ),
    ));
    let _v = Vane::start(&cfg, &[port]);
    let get = |path: &'static str| async move {
        let resp = get_front(port, path).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts, String::from_utf8_lossy(&body).to_string())
    };
    let (parts, body) = get("/x").await;
    assert_eq!(parts.status, 200, "{body}");
    assert_eq!(parts.headers["x-seen-version"], "HTTP/2.0");
    let (parts, body) = get("/dead").await;
    assert_eq!(parts.status, 502);
    assert!(body.starts_with("upstream failed: "), "{body}");
    assert!(
        body.len() > "upstream failed: ".len(),
        "the error is stored: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_h2c_speaks_http2_to_a_plaintext_upstream() {
    let up = upstream(None).await;
    let (_cfg, port, _v) = proxy_gateway(
        &format!("http://127.0.0.1:{}", up.addr.port()),
        ", version: h2c",
    );
    let resp = get_front(port, "/x").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-seen-version"], "HTTP/2.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_through_without_being_held_in_memory() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // An upstream that counts what it receives and answers with its length.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut body = req.into_body();
                        let mut n = 0u64;
                        while let Some(Ok(f)) = body.frame().await {
                            if let Ok(d) = f.into_data() {
                                n += d.len() as u64;
                            }
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from(n.to_string())),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let (_cfg, port, v) = proxy_gateway(&format!("http://127.0.0.1:{}", up.port()), "");
    let before = rss_kib(v.pid());
    // HTTP/2 client -> vane -> HTTP/1.1 upstream, 256 MiB in 1 MiB frames.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut send = h2_client(tcp).await;
    const MIB: usize = 1024 * 1024;
    let chunk = Bytes::from(vec![7u8; MIB]);
    let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..256)
        .map(|_| Ok(hyper::body::Frame::data(chunk.clone())))
        .collect();
    let peak = Arc::new(AtomicU64::new(0));
    let (p, pid) = (peak.clone(), v.pid());
    let sampler = tokio::spawn(async move {
        loop {
            p.fetch_max(rss_kib(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let resp = send
        .send_request(
            hyper::Request::post("http://big.test/upload")
                .body(http_body_util::StreamBody::new(futures_iter(frames)))
                .expect("request"),
        )
        .await
        .expect("response");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    sampler.abort();
    assert_eq!(String::from_utf8_lossy(&body), (256 * MIB).to_string());
    let grown = peak.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "vane grew {grown} KiB while streaming 256 MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_client_version_reaches_any_upstream_version() {
    use bytes::Buf;
    let up1 = upstream(None).await;
    let up2 = upstream(Some(h2_upstream_tls())).await;
    let up3 = h3_upstream().await;
    let cfg = ConfigDir::new();
    let (tcp_port, udp_port) = (free_port(), free_port());
    let cert = common::tls::write_cert(&cfg, "site.test", &["site.test"]);
    cfg.plain_http(tcp_port, "httpx");
    cfg.write(
        &format!("listener/[{udp_port}]/udp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: quic }\n",
    );
    cfg.write(
        "resolver/quic.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n",
    );
    let route = |prefix: &str, url: String, extra: &str, next: &str| {
        format!(
            r#"internal.common.match:
  input: {{ left: "{{{{req.path}}}}", operator: startswith, right: "{prefix}" }}
  output:
    "true":
      internal.driver.upstream:
        input: {{ url_prefix: "{url}"{extra} }}
        output:
          success: {{ internal.terminator.response: {{}} }}
          failure: {{ internal.terminator.response: {{ input: {{ status: 502, body: "{{{{plugin.internal_common_match.true.internal_driver_upstream.error}}}}" }} }} }}
    "false":
{next}"#
        )
    };
    let indent = |text: String, n: usize| {
        text.lines()
            .map(|l| format!("{}{l}", " ".repeat(n)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let last = route(
        "/h3/",
        format!("https://localhost:{}", up3.port()),
        ", version: h3, skip_verify: true",
        &indent(
            "internal.terminator.response: { input: { status: 404 } }".into(),
            6,
        ),
    );
    let middle = route(
        "/h2/",
        format!("https://localhost:{}", up2.addr.port()),
        ", skip_verify: true",
        &indent(last, 6),
    );
    let first = route(
        "/h1/",
        format!("http://127.0.0.1:{}", up1.addr.port()),
        "",
        &indent(middle, 6),
    );
    cfg.write(
        "application/httpx.yaml",
        &format!("pipeline:\n{}\n", indent(first, 2)),
    );
    let v = Vane::start(&cfg, &[tcp_port]);
    let udp = v.wait_udp(udp_port);
    // Every byte value, in an order no framing bug would reproduce by accident.
    let body = Bytes::from(
        (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
            .collect::<Vec<u8>>(),
    );
    let expect_version = |up: &str| match up {
        "h1" => "HTTP/1.1",
        "h2" => "HTTP/2.0",
        _ => "HTTP/3.0",
    };
    // HTTP/1.1 and HTTP/2 clients.
    for client in ["h1", "h2"] {
        for up in ["h1", "h2", "h3"] {
            let req = hyper::Request::post(format!("http://any.test/{up}/from-{client}"))
                .header("host", "any.test")
                .header("x-custom", format!("{client}-{up}"))
                .body(http_body_util::Full::new(body.clone()))
                .expect("request");
            let resp = if client == "h1" {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
                    .await
                    .expect("connect");
                let mut s = h1_client(tcp).await;
                s.send_request(req).await.expect("response")
            } else {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
                    .await
                    .expect("connect");
                let mut s = h2_client(tcp).await;
                s.send_request(req).await.expect("response")
            };
            let status = resp.status();
            let h = resp.headers().clone();
            let got = resp.into_body().collect().await.expect("body").to_bytes();
            assert!(status.is_success(), "{client}->{up}: {status} {got:?}");
            assert_eq!(h["x-seen-version"], expect_version(up), "{client}->{up}");
            assert_eq!(h["x-seen-custom"], format!("{client}-{up}").as_str());
            assert!(got == body, "{client}->{up}: the body arrived changed");
        }
    }
    // HTTP/3 client.
    let mut send = common::http3::client(udp, cert).await;
    for up in ["h1", "h2", "h3"] {
        let req = hyper::Request::post(format!("https://site.test/{up}/from-h3"))
            .header("x-custom", format!("h3-{up}"))
            .body(())
            .expect("request");
        let mut stream = send.send_request(req).await.expect("send");
        stream.send_data(body.clone()).await.expect("upload");
        stream.finish().await.expect("finish");
        let resp = stream.recv_response().await.expect("response");
        assert!(resp.status().is_success(), "h3->{up}: {}", resp.status());
        assert_eq!(
            resp.headers()["x-seen-version"],
            expect_version(up),
            "h3->{up}"
        );
        assert_eq!(resp.headers()["x-seen-custom"], format!("h3-{up}").as_str());
        let mut got = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.expect("data") {
            while chunk.has_remaining() {
                let c = chunk.chunk();
                got.extend_from_slice(c);
                let n = c.len();
                chunk.advance(n);
            }
        }
        assert!(got == body[..], "h3->{up}: the body arrived changed");
    }
}

#[test]
fn a_hanging_upstream_gets_a_502_at_the_flow_timeout_and_a_dying_one_cuts_only_its_response() {
    // Upstream 1 accepts and never answers; upstream 2 sends a head promising 1 MiB, part of
    // the body, then dies.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hang_port = hang.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hang.incoming().flatten().take(8) {
            held.push(s);
        }
    });
    let die = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let die_port = die.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in die.incoming().flatten().take(8) {
            let mut b = [0u8; 1024];
            let _ = s.read(&mut b);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\npartial body");
            drop(s);
        }
    });
    let (cfg, port) = app_dir(&split_app(
        "/hang",
        &format!("url_prefix: \"http://127.0.0.1:{hang_port}\""),
        &format!("url_prefix: \"http://127.0.0.1:{die_port}\""),
    ));
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("FLOW_EXECUTION_TIMEOUT_SECS", "1".into())],
            wait_ports: vec![port],
        },
    );
    let start = std::time::Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = h1(&mut s, &["GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert_eq!(r[0].0, 502, "{r:?}");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "no hang: {took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "not before the deadline: {took:?}"
    );
    // The dying upstream: the client gets the head and a short body, then the close.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /die HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let cut = std::time::Instant::now();
    let closed = s.read_to_end(&mut out);
    assert!(
        closed.is_ok(),
        "vane closes the client's connection when the upstream dies (not a read timeout): {closed:?}"
    );
    assert!(cut.elapsed() < Duration::from_secs(3), "closed at once");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &out[text.find("\r\n\r\n").expect("end of head") + 4..];
    assert_eq!(
        body, b"partial body",
        "what the upstream sent before dying arrives, and nothing of the promised rest"
    );
    // Others are served normally afterwards.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(
        h1(&mut s, &["GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"])[0].0,
        502
    );
    let mut v = v;
    assert!(v.alive());
}

/// A failed upstream call tells the flow where it failed and whether a retry may help: a
/// refused connection is `connect` and retryable; HTTP/3 to an `http://` URL is the flow's
/// own mistake (`request`, not retryable).
#[test]
fn failures_say_their_stage_and_whether_a_retry_may_help() {
    let dead = free_port();
    let answer = |prefix: &str, extra: &str| {
        let cfg = ConfigDir::new();
        let port = free_port();
        cfg.plain_http(port, "httpx");
        cfg.write(
            "application/httpx.yaml",
            &proxy_app_failing_with(
                prefix,
                extra,
                "{{plugin.internal_driver_upstream.error_kind}} {{plugin.internal_driver_upstream.retryable}}",
            ),
        );
        let _v = Vane::start(&cfg, &[port]);
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        h1(&mut s, &["GET /x HTTP/1.1\r\nHost: a\r\n\r\n"]).remove(0)
    };
    let (status, _, body) = answer(&format!("http://127.0.0.1:{dead}"), "");
    assert_eq!((status, body.as_str()), (502, "connect true"));
    let (status, _, body) = answer(&format!("http://127.0.0.1:{dead}"), ", version: h3");
    assert_eq!((status, body.as_str()), (502, "request false"));
}

/// Statuses an upstream answers are relayed as they are (204 without a body, 400 and 500 with
/// theirs), and `method` in the driver's input replaces the client's method upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_statuses_are_relayed_and_the_method_can_be_overridden() {
    let up = upstream(None).await;
    let (_cfg, port, _v) = proxy_gateway(&format!("http://127.0.0.1:{}", up.addr.port()), "");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut send = h1_client(tcp).await;
    for code in [204u16, 400, 500] {
        let req = hyper::Request::post(format!("/status/{code}"))
            .header("host", "front.test")
            .body(http_body_util::Full::new(Bytes::from_static(b"payload")))
            .expect("request");
        send.ready().await.expect("ready");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status().as_u16(), code);
        assert_eq!(
            resp.headers()["x-upstream"],
            "yes",
            "{code} came from the upstream"
        );
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let want: &[u8] = if code == 204 { b"" } else { b"payload" };
        assert_eq!(&body[..], want, "{code}");
    }

    let (_cfg2, port2, _v2) = proxy_gateway(
        &format!("http://127.0.0.1:{}", up.addr.port()),
        ", method: PUT",
    );
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port2))
        .await
        .expect("connect");
    let mut send = h1_client(tcp).await;
    let req = hyper::Request::get("/m")
        .header("host", "front.test")
        .body(http_body_util::Full::new(Bytes::new()))
        .expect("request");
    let resp = send.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-seen-method"],
        "PUT",
        "the driver's `method` input"
    );
}

/// An HTTPS upstream (hyper's client) answering with a `Content-Length` beside
/// `Transfer-Encoding: chunked`: the coding frames the body (RFC 9112 §6.3), so the client
/// gets the whole chunked body, not an answer cut to the stray length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstreams_length_beside_a_chunked_body_is_dropped() {
    let up = raw_tls_upstream(|_| {
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    })
    .await;
    let (cfg, port) = app_dir(&proxy_app(
        &format!("https://localhost:{up}"),
        ", skip_verify: true",
    ));
    let _v = Vane::start(&cfg, &[port]);
    let resp = get_front(port, "/both").await;
    assert_eq!(resp.status(), 200);
    assert_ne!(
        resp.headers().get("content-length").map(|v| v.as_bytes()),
        Some(&b"3"[..])
    );
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("whole body")
        .to_bytes();
    assert_eq!(&body[..], b"hello world");
}

/// `GET path` with `Host: front.test` over a new HTTP/1.1 connection to vane on `port`.
async fn get_front(port: u16, path: &str) -> hyper::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut send = h1_client(tcp).await;
    send.send_request(
        hyper::Request::get(path)
            .header("host", "front.test")
            .body(Empty::<Bytes>::new())
            .expect("request"),
    )
    .await
    .expect("response")
}
