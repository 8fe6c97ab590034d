//! HTTP/1.1 as it crosses the wire on the fast path (`src/l7/h1`): framing the server must get
//! right byte for byte, driven over raw sockets because client libraries never send most of
//! it (pipelines, chunk extensions and trailers, HTTP/1.0 keep-alive, smuggling shapes).

use super::*;

/// One response read off `s`: status, lowercased head, body. `head_only` for answers to HEAD.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Reads one whole response (framed by Content-Length, chunked, or the close) from `s`,
/// keeping bytes of the next one in `rest`.
fn read_reply(s: &mut TcpStream, rest: &mut Vec<u8>, head_only: bool) -> Option<Reply> {
    let mut chunk = [0u8; 16 * 1024];
    let fill = |s: &mut TcpStream, rest: &mut Vec<u8>, chunk: &mut [u8]| -> bool {
        match s.read(chunk) {
            Ok(n) if n > 0 => {
                rest.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    };
    let end = loop {
        if let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if !fill(s, rest, &mut chunk) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
    rest.drain(..end + 4);
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let field = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    let mut body = Vec::new();
    if head_only || status == 204 || status == 304 || status < 200 {
        // No body.
    } else if let Some(n) = field("content-length").and_then(|v| v.parse::<usize>().ok()) {
        while rest.len() < n {
            if !fill(s, rest, &mut chunk) {
                return None;
            }
        }
        body = rest.drain(..n).collect();
    } else if field("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !fill(s, rest, &mut chunk) {
                    return None;
                }
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?, 16).ok()?;
            rest.drain(..line_end + 2);
            while rest.len() < size + 2 {
                if !fill(s, rest, &mut chunk) {
                    return None;
                }
            }
            body.extend(rest.drain(..size));
            rest.drain(..2);
            if size == 0 {
                break;
            }
        }
    } else {
        while fill(s, rest, &mut chunk) {}
        body = std::mem::take(rest);
    }
    Some(Reply { status, head, body })
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// A client that stops reading in the middle of a large response and then reads again gets
/// all of it (the server's write stops part-way while it sleeps).
#[test]
fn a_client_that_pauses_reading_gets_the_whole_response() {
    let (_www, app, data) = big_file_app();
    let (cfg, port) = app_dir(&app);
    let _v = Vane::start(&cfg, &[port]);
    let mut s = connect(port);
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(700));
    let mut rest = Vec::new();
    let r = read_reply(&mut s, &mut rest, false).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body.len(), data.len(), "the response stopped early");
    assert!(r.body == data, "the response came back changed");
}

/// A new connection's first request is acknowledged with its answer, as later ones are, not
/// by a bare ACK of its own at once (Linux's quick-ack mode for new connections): the client
/// receives nothing between its request and the answer of an upstream that takes 300 ms. A
/// delayed ACK would come no sooner than 40 ms; the client looks after 20.
#[test]
fn the_first_request_is_acknowledged_with_its_answer() {
    let up = raw_upstream(|_| {
        std::thread::sleep(Duration::from_millis(300));
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string()
    });
    let (_cfg, port, _v) = proxy_gateway(&format!("http://127.0.0.1:{up}"), "");
    let mut s = connect(port);
    // The server has taken the connection before the request comes.
    std::thread::sleep(Duration::from_millis(200));
    let before = tcp_info::segments_in(&s);
    s.write_all(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    std::thread::sleep(Duration::from_millis(20));
    let meanwhile = tcp_info::segments_in(&s) - before;
    let mut rest = Vec::new();
    let r = read_reply(&mut s, &mut rest, false).expect("an answer");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    assert_eq!(meanwhile, 0, "a bare ACK came before the answer");
}

/// A chunked upload with extensions and a trailer, a HEAD and a GET, all in one pipeline and
/// the upload split across writes: each answer comes back whole and in order, and the body
/// reaches the upstream intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_chunked_and_head_requests_are_framed_exactly() {
    let up = upstream(None).await;
    let (_cfg, port, _v) = proxy_gateway(&format!("http://127.0.0.1:{}", up.addr.port()), "");
    tokio::task::spawn_blocking(move || {
        let mut s = connect(port);
        s.write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel")
            .expect("write");
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(b"lo\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nHEAD /h HTTP/1.1\r\nHost: a\r\n\r\nGET /teapot HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("write");
        let mut rest = Vec::new();
        let a = read_reply(&mut s, &mut rest, false).expect("first answer");
        assert_eq!(a.status, 200, "{}", a.head);
        assert_eq!(a.body, b"hello world", "the chunked body arrived whole");
        assert!(a.head.contains("\r\ndate: "), "{}", a.head);
        let b = read_reply(&mut s, &mut rest, true).expect("answer to HEAD");
        assert_eq!(b.status, 200, "{}", b.head);
        let c = read_reply(&mut s, &mut rest, false).expect("third answer");
        assert_eq!(c.status, 418, "the pipeline kept its order: {}", c.head);
        assert!(rest.is_empty(), "no stray bytes: {:?}", String::from_utf8_lossy(&rest));
    })
    .await
    .expect("client");
    assert_eq!(up.conns.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// HTTP/1.0: answered in HTTP/1.0, kept open only when the client asked for keep-alive.
#[test]
fn http10_clients_get_http10_answers_and_keep_alive_only_on_request() {
    let (_cfg, port, _v) = echo_gateway(&[]);
    let mut s = connect(port);
    let mut rest = Vec::new();
    for i in 0..2 {
        s.write_all(format!("GET /k{i} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .expect("write");
        let r = read_reply(&mut s, &mut rest, false).expect("answer");
        assert!(r.head.starts_with("http/1.0 201"), "{}", r.head);
        assert!(r.head.contains("connection: keep-alive"), "{}", r.head);
        assert!(String::from_utf8_lossy(&r.body).starts_with(&format!("GET /k{i}")));
    }
    s.write_all(b"GET /last HTTP/1.0\r\n\r\n").expect("write");
    let r = read_reply(&mut s, &mut rest, false).expect("answer");
    assert_eq!(r.status, 201);
    let mut b = [0u8; 1];
    assert!(
        matches!(s.read(&mut b), Ok(0)),
        "closed after a plain HTTP/1.0 request"
    );
}

/// Heads that frame a body two ways (the request-smuggling shapes) are refused with 400 and
/// counted, and the connection closes instead of guessing where the next request starts.
#[test]
fn smuggling_shapes_are_refused_counted_and_closed() {
    if http1_on_hyper() {
        return; // hyper accepts Content-Length with Transfer-Encoding (docs/l7.md)
    }
    let (_cfg, port, v) = echo_gateway(&[]);
    for head in [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
    ] {
        let mut s = connect(port);
        s.write_all(format!("{head}GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{head:?}: {text}");
        assert!(!text.contains("/smuggled"), "nothing after the refusal was served: {text}");
    }
    let malformed = "vane_http_connection_errors_total{kind=\"malformed\"}";
    assert!(wait_until(Duration::from_secs(3), || v
        .metric(malformed)
        .is_some_and(|n| n >= 3.0)));
}

/// A request answered before its body was read (the echo application never reads it): the
/// answer says `connection: close` and the rest of the body is never taken for a request.
#[test]
fn an_answer_before_the_body_ends_closes_the_connection() {
    if http1_on_hyper() {
        return; // hyper reads the rest of the body instead (docs/l7.md)
    }
    let (_cfg, port, _v) = echo_gateway(&[]);
    let mut s = connect(port);
    s.write_all(b"POST /early HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nGET /inside-the-body HTTP/1.1\r\n\r\n")
        .expect("write");
    let mut rest = Vec::new();
    let r = read_reply(&mut s, &mut rest, false).expect("answer");
    assert_eq!(r.status, 201);
    assert!(r.head.contains("connection: close"), "{}", r.head);
    let mut more = Vec::new();
    let _ = s.read_to_end(&mut more);
    assert!(
        !String::from_utf8_lossy(&more).contains("inside-the-body"),
        "body bytes were served as a request"
    );
}

/// `Expect: 100-continue` (curl sends it for uploads over 1 KiB): the interim answer comes
/// before the client sends the body, then the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_gets_an_interim_answer_before_the_body() {
    let up = upstream(None).await;
    let (_cfg, port, _v) = proxy_gateway(&format!("http://127.0.0.1:{}", up.addr.port()), "");
    tokio::task::spawn_blocking(move || {
        let mut s = connect(port);
        s.write_all(
            b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .expect("write");
        let mut rest = Vec::new();
        let interim = read_reply(&mut s, &mut rest, false).expect("interim answer");
        assert_eq!(interim.status, 100, "{}", interim.head);
        s.write_all(b"hello").expect("body");
        let r = read_reply(&mut s, &mut rest, false).expect("answer");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    })
    .await
    .expect("client");
}

/// An upstream on a raw socket answering every request on a connection with `answer(path)`
/// (a whole response), until the client closes.
fn raw_upstream(answer: fn(&str) -> String) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().take(16) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = s.read(&mut chunk) {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        if s.write_all(answer(&path).as_bytes()).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// One whole answer with a `Content-Length` read off `s`: its head as sent (case kept) and
/// its body.
fn raw_reply(s: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    for _ in 0..100 {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .expect("a content-length");
            if got.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&got[end + 4..end + 4 + length]).into_owned();
                return (head, body);
            }
        }
        match s.read(&mut chunk) {
            Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    panic!("no whole answer: {}", String::from_utf8_lossy(&got));
}

/// A proxied answer the flow passes through goes out with the upstream's own fields (names in
/// their case on the fast path, repeated fields in order), without its hop-by-hop fields (and
/// those its `Connection` names), with this hop's framing and a `Date`; the flow reads the
/// same fields as keys, and a terminator that replaces the body keeps them; a length beside a
/// chunked body is dropped; a folded field is refused. (Fails with the
/// received fields forwarded whole, or their lookups answering nothing.)
#[test]
fn upstream_fields_go_out_as_received_less_the_hop_by_hop_ones() {
    let up = raw_upstream(|path| {
        if path == "/both" {
            // A length beside a chunked body: the coding decides (RFC 9112 §6.3).
            return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into();
        }
        if path == "/both-named" {
            return "HTTP/1.1 200 OK\r\nConnection: X-P\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n".into();
        }
        if path == "/folded" {
            return "HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n".into();
        }
        let named = if path == "/named" { ", X-Private" } else { "" };
        format!(
            "HTTP/1.1 200 OK\r\nX-Mixed-Case: One\r\nSet-Cookie: a=1\r\nConnection: keep-alive{named}\r\n\
             X-Private: secret\r\nKeep-Alive: timeout=5\r\nset-cookie: b=2\r\nContent-Length: 5\r\n\r\nhello"
        )
    });
    let app = format!(
        r#"pipeline:
  internal.driver.upstream:
    input: {{ url_prefix: "http://127.0.0.1:{up}" }}
    output:
      success:
        internal.common.match:
          input: {{ left: "{{{{req.path}}}}", operator: "==", right: "/keys" }}
          output:
            "true":
              internal.terminator.response:
                input: {{ body: "{{{{res.header.x-mixed-case}}}}|{{{{res.header.Content-Length}}}}|{{{{res.header.keep-alive}}}}|{{{{res.header.x-private}}}}" }}
            "false":
              internal.terminator.response: {{}}
      failure:
        internal.terminator.response:
          input: {{ status: 502, body: "failed" }}
"#
    );
    let (cfg, port) = app_dir(&app);
    let _v = Vane::start(&cfg, &[port]);
    let fast = !http1_on_hyper();
    let mut s = connect(port);
    for path in ["/plain", "/named", "/keys"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .expect("write");
        let (head, body) = raw_reply(&mut s);
        let lower = head.to_ascii_lowercase();
        if path == "/keys" {
            assert_eq!(body, "One|5||secret", "{head}");
            assert!(lower.contains("\r\nx-mixed-case: one"), "{head}");
            continue;
        }
        assert_eq!(body, "hello");
        if fast && path == "/plain" {
            assert!(head.contains("\r\nX-Mixed-Case: One\r\n"), "{head}");
        }
        let cookies: Vec<_> = lower
            .lines()
            .filter(|l| l.starts_with("set-cookie:"))
            .collect();
        assert_eq!(cookies, ["set-cookie: a=1", "set-cookie: b=2"], "{head}");
        assert_eq!(
            lower.contains("\r\nx-private: secret"),
            path == "/plain",
            "dropped only where `Connection` names it: {head}"
        );
        for gone in ["keep-alive:", "connection:"] {
            assert!(
                !lower.contains(&format!("\r\n{gone}")),
                "{path}: {gone} {head}"
            );
        }
        assert_eq!(lower.matches("\r\ncontent-length: 5").count(), 1, "{head}");
        assert!(lower.contains("\r\ndate: "), "{head}");
    }
    // A length beside a chunked body is dropped: the client gets the whole body, framed by
    // this hop, on either kind of fields.
    for path in ["/both", "/both-named"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .expect("write");
        let mut rest = Vec::new();
        let r = read_reply(&mut s, &mut rest, false).expect("answer");
        assert_eq!(r.status, 200, "{path}: {}", r.head);
        assert_eq!(r.body, b"hello", "{path}: {}", r.head);
        assert!(!r.head.contains("content-length: 3"), "{path}: {}", r.head);
        assert!(rest.is_empty(), "{path}: nothing past the answer");
    }
    // A folded (obsolete multi-line) field is refused: the failure branch answers.
    s.write_all(b"GET /folded HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    let (head, body) = raw_reply(&mut s);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert_eq!(body, "failed");
}
