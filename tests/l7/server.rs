//! The HTTP/1.1 and HTTP/2 server (`src/l7/server.rs`): answers from the application flow, keep-alive, errors, idle and shutdown.

use super::*;

/// A plain TCP client of the gateway on `port`, whose reads give up after 5 s.
fn client(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

#[test]
fn http1_requests_are_answered_by_the_application_flow_with_keep_alive() {
    let (_cfg, port, v) = echo_gateway(&[]);
    let mut s = client(port);
    let replies = h1(
        &mut s,
        &[
            "GET /hello?x=1 HTTP/1.1\r\nHost: site.test\r\nUser-Agent: probe/1\r\n\r\n",
            "POST /second HTTP/1.1\r\nHost: site.test\r\nContent-Length: 0\r\n\r\n",
        ],
    );
    let (status, head, body) = &replies[0];
    assert_eq!(*status, 201, "{head}");
    assert!(head.contains("x-client: 127.0.0.1"), "{head}");
    assert!(head.contains("x-version: http/1.1"), "{head}");
    assert!(head.contains("set-cookie: a=1") && head.contains("set-cookie: b=2"));
    assert!(head.contains("content-type: text/plain; charset=utf-8"));
    assert_eq!(body, "GET /hello?x=1 host=site.test ua=probe/1");
    // The same connection carries the next request.
    assert_eq!(replies[1].0, 201);
    assert!(
        replies[1].2.starts_with("POST /second?"),
        "{}",
        replies[1].2
    );
    let requests = "vane_requests_total{app=\"httpx\",status=\"201\"}";
    assert!(wait_until(Duration::from_secs(3), || v.metric(requests) == Some(2.0)));
    assert!(v.wait_log("\"GET /hello?x=1 HTTP/1.1\" 201", Duration::from_secs(3)));
    // The HTTP connection outlives its L4 session (it goes on in a task of its own): it is
    // counted as open until it closes.
    let active = format!("vane_connections_active{{listener=\"tcp:{port}\",protocol=\"tcp\"}}");
    assert!(
        wait_until(Duration::from_secs(3), || v.metric(&active) == Some(1.0)),
        "{}",
        v.metrics_text()
    );
    assert_eq!(
        h1(&mut s, &["GET /third HTTP/1.1\r\nHost: x\r\n\r\n"])[0].0,
        201
    );
    drop(s);
    assert!(wait_until(Duration::from_secs(3), || v.metric(&active) == Some(0.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_on_plaintext() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "h2");
    cfg.write("application/h2.yaml", ECHO_APP);
    let _v = Vane::start(&cfg, &[port]);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut send = h2_client(tcp).await;
    for i in 0..3 {
        let req = hyper::Request::get(format!("http://h2.test:{port}/s{i}"))
            .header("user-agent", "h2probe")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        assert_eq!(resp.headers()["x-version"], "HTTP/2.0");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        // req.host holds the HTTP/2 authority (0.9.2 left it empty).
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!("GET /s{i}?{{{{req.query}}}} host=h2.test:{port} ua=h2probe")
        );
    }
}

#[test]
fn flow_errors_missing_applications_and_aborts_never_hang() {
    let cfg = ConfigDir::new();
    let (port, no_app) = (free_port(), free_port());
    cfg.plain_http(port, "httpx");
    cfg.write("application/httpx.yaml", ECHO_APP);
    // A second plaintext port whose resolver names an application that does not exist.
    cfg.write(
        &format!("listener/[{no_app}]/tcp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: web }\n",
    );
    cfg.write(
        "resolver/web.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: h1 }\n",
    );
    let v = Vane::start(&cfg, &[port, no_app]);
    let ask = |p: u16, path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", p)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        h1(
            &mut s,
            &[&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")],
        )
        .remove(0)
    };
    // `/stall` takes the match's `true` branch, which the flow does not configure.
    let (status, _, body) = ask(port, "/stall");
    assert_eq!((status, body.as_str()), (502, "Bad Gateway (Flow Error)"));
    let (status, _, body) = ask(no_app, "/");
    assert_eq!((status, body.as_str()), (500, "Configuration Error"));
    // An explicit abort closes the connection without an answer.
    let (status, _, _) = ask(port, "/abort");
    assert_eq!(status, 0);
    let aborted = "vane_requests_total{app=\"httpx\",status=\"aborted\"}";
    assert!(wait_until(Duration::from_secs(3), || v.metric(aborted) == Some(1.0)));
}

#[test]
fn a_silent_connection_is_closed_when_idle() {
    let (_cfg, port, _v) = echo_gateway(&[
        ("HTTP_IDLE_TIMEOUT_SECS", "1"),
        ("TCP_PEEK_TIMEOUT_MS", "100"),
    ]);
    let start = std::time::Instant::now();
    let mut c = Client::connect(port).expect("connect");
    assert!(c.closed_within(Duration::from_secs(4)), "closed when idle");
    let after = start.elapsed();
    // Never before the timeout (counted from after the 100 ms peek), though the watchdog's
    // clock is shared and may tick just after the connection arrives.
    assert!(
        after >= Duration::from_millis(1000),
        "closed after {after:?}, before the 1 s idle timeout"
    );
    // A connection that keeps talking stays open past the timeout.
    let mut s = client(port);
    for i in 0..6 {
        let r = h1(&mut s, &[&format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n")]);
        assert_eq!(r[0].0, 201, "request {i} on a busy connection");
        std::thread::sleep(Duration::from_millis(400));
    }
}

#[test]
fn malformed_oversized_and_slow_requests_get_errors_or_closes_and_are_counted() {
    let (_cfg, port, v) = echo_gateway(&[("HTTP_HEADER_READ_TIMEOUT_SECS", "1")]);
    let send = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = s.write_all(bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    // A request line that is not HTTP: 400, then the connection closes.
    let r = send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // A head over 64 KiB: 431.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let r = send(big.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    // Half a head, then silence: closed after HTTP_HEADER_READ_TIMEOUT_SECS.
    let start = std::time::Instant::now();
    let mut s = client(port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "closed within the header timeout"
    );
    // The gateway still serves.
    let mut s = client(port);
    let ok = h1(&mut s, &["GET /fine HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert_eq!(ok[0].0, 201);
    let counted = |kind: &str| {
        v.metric(&format!(
            "vane_http_connection_errors_total{{kind=\"{kind}\"}}"
        ))
        .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(3), || counted("malformed") >= 1.0
            && counted("too_large") >= 1.0
            && counted("timeout") >= 1.0),
        "{}",
        v.metrics_text()
    );
}

/// The head cap stops reading at the cap: a head that never ends is answered 431 and the
/// connection is closed long before the client could send it all (a gateway that read
/// everything and then refused would take every byte).
#[test]
fn an_endless_head_is_cut_at_the_cap_not_read_to_the_end() {
    let (_cfg, port, _v) = echo_gateway(&[]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reader = s.try_clone().expect("clone");
    let answer = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    });
    const OFFER: usize = 256 * 1024 * 1024;
    let line = vec![b'a'; 64 * 1024];
    let mut written = s
        .write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        .unwrap_or(0);
    while written < OFFER {
        match s.write(&line) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    let r = answer.join().expect("reader");
    assert!(r.starts_with("HTTP/1.1 431"), "{r}");
    assert!(
        written < 32 * 1024 * 1024,
        "{written} bytes of a 64 KiB-capped head were taken: reading did not stop at the cap"
    );
}

/// A plaintext connection's first bytes are read once, by the L4+ stage, and the server goes
/// on from them: a head longer than that read (10 KiB; the stage reads 4 KiB) is answered, so
/// is the next request on the connection, and so is a head whose first piece came alone.
#[test]
fn a_first_request_read_by_the_resolver_is_served_whole() {
    let (_cfg, port, _v) = echo_gateway(&[]);
    let mut s = client(port);
    let long = format!(
        "GET /long HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(10 * 1024)
    );
    let r = h1(&mut s, &[&long, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert_eq!((r[0].0, r[1].0), (201, 201));
    assert!(r[0].2.starts_with("GET /long?"), "{}", r[0].2);
    assert!(r[1].2.starts_with("GET /after?"), "{}", r[1].2);

    let mut s = client(port);
    s.write_all(b"GET /pie").expect("write");
    std::thread::sleep(Duration::from_millis(100));
    let r = h1(&mut s, &["ces HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert_eq!(r[0].0, 201);
    assert!(r[0].2.starts_with("GET /pieces?"), "{}", r[0].2);
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_instead_of_waiting_out_the_grace() {
    let (_cfg, port, mut v) = echo_gateway(&[("SHUTDOWN_GRACE_SECS", "20")]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let r = h1(&mut s, &["GET /keep HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert_eq!(r[0].0, 201);
    // The connection stays open and idle; SIGTERM must not wait 20 s for it.
    let start = std::time::Instant::now();
    assert_eq!(v.terminate(Duration::from_secs(8)), Some(0), "{}", v.logs());
    assert!(start.elapsed() < Duration::from_secs(5));
    let mut b = [0u8; 1];
    assert!(
        matches!(s.read(&mut b), Ok(0) | Err(_)),
        "the client saw the close"
    );
}

/// At debug level each step logs 0.9.2's `Executing plugin <name>` line.
#[test]
fn debug_logs_name_each_plugin_executed() {
    let (_cfg, port, v) = echo_gateway(&[("LOG_LEVEL", "debug")]);
    let mut s = client(port);
    assert_eq!(
        h1(&mut s, &["GET /x HTTP/1.1\r\nHost: x\r\n\r\n"])[0].0,
        201
    );
    assert!(
        v.wait_log(
            "Executing plugin internal.terminator.response",
            Duration::from_secs(3)
        ),
        "{}",
        v.logs()
    );
    assert!(v.logs().contains("Executing plugin internal.common.match"));
}
