//! L7 over real sockets: HTTP/1.1 and HTTP/2 (prior knowledge) on plaintext, HTTP/1.1 and
//! HTTP/2 after TLS termination with a certificate from `certs/`, application flows answering
//! with `internal.terminator.response`, and the error outcomes of the flow engine.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};

const ECHO_APP: &str = r#"pipeline:
  internal.common.match:
    input: { left: "{{req.path}}", operator: "==", right: "/abort" }
    output:
      "true":
        internal.transport.abort: {}
      "false":
        internal.common.match:
          input: { left: "{{req.path}}", operator: "==", right: "/stall" }
          output:
            "false":
              internal.terminator.response:
                input:
                  status: 201
                  headers:
                    x-client: "{{conn.ip}}"
                    x-version: "{{req.version}}"
                    set-cookie: [ "a=1", "b=2" ]
                  body: "{{req.method}} {{req.path}}?{{req.query}} host={{req.host}} ua={{req.header.user-agent}}"
"#;

/// Sends raw HTTP/1.1 requests on one connection; returns (status, headers, body) per request.
fn h1(stream: &mut dyn ReadWrite, requests: &[&str]) -> Vec<(u16, String, String)> {
    let mut out = Vec::new();
    for req in requests {
        stream.write_all(req.as_bytes()).expect("write");
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        // Read until the head and Content-Length bytes of body are in.
        loop {
            let n = stream.read(&mut b).unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&b[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            out.push((0, String::new(), String::new()));
            break;
        };
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        out.push((status, head.to_ascii_lowercase(), body.to_string()));
    }
    out
}

trait ReadWrite: Read + Write {}

/// An HTTP/1.1 client connection over `io`, driven in the background.
async fn h1_client<IO, B>(io: IO) -> hyper::client::conn::http1::SendRequest<B>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    send
}

/// An HTTP/2 (prior knowledge) client connection over `io`, driven in the background.
async fn h2_client<IO, B>(io: IO) -> hyper::client::conn::http2::SendRequest<B>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    send
}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn http1_requests_are_answered_by_the_application_flow_with_keep_alive() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write("application/httpx.yaml", ECHO_APP);
    let v = Vane::start(&cfg, &[port]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
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

fn tls_client(
    roots: &[&rustls::pki_types::CertificateDer<'static>],
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).expect("root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

fn tls_port(cfg: &ConfigDir, port: u16) {
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: tls }\n",
    );
    cfg.write(
        "resolver/tls.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n",
    );
    cfg.write("application/httpx.yaml", ECHO_APP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_terminated_with_the_certificate_for_the_name_and_alpn_picks_the_protocol() {
    let cfg = ConfigDir::new();
    let port = free_port();
    tls_port(&cfg, port);
    let site = common::tls::write_cert(&cfg, "site.test", &["site.test"]);
    let wild = common::tls::write_cert(&cfg, "*.wild.test", &["*.wild.test"]);
    let _v = Vane::start(&cfg, &[port]);
    let connector =
        |alpn: &[&str]| tokio_rustls::TlsConnector::from(tls_client(&[&site, &wild], alpn));
    // HTTP/2 by ALPN, certificate by exact name.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("site.test").expect("name");
    let tls = connector(&["h2", "http/1.1"])
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        tls.get_ref().1.peer_certificates().and_then(|c| c.first()),
        Some(&site)
    );
    let mut send = h2_client(tls).await;
    let resp = send
        .send_request(
            hyper::Request::get("https://site.test/secure")
                .body(Empty::<Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    // HTTP/1.1 by ALPN, certificate by wildcard.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("a.wild.test").expect("name");
    let tls = connector(&["http/1.1"])
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert_eq!(
        tls.get_ref().1.peer_certificates().and_then(|c| c.first()),
        Some(&wild)
    );
    let mut send = h1_client(tls).await;
    let resp = send
        .send_request(
            hyper::Request::get("/one")
                .header("host", "a.wild.test")
                .body(Empty::<Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 201);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("host=a.wild.test"));
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
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write("application/httpx.yaml", ECHO_APP);
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("HTTP_IDLE_TIMEOUT_SECS", "1".into()),
                ("TCP_PEEK_TIMEOUT_MS", "100".into()),
            ],
            wait_ports: vec![port],
        },
    );
    let mut c = Client::connect(port).expect("connect");
    assert!(c.closed_within(Duration::from_secs(4)));
}

/// An HTTP upstream (HTTP/1.1 and HTTP/2, optionally over TLS with ALPN) that answers with
/// what it saw: `x-seen-*` headers, the request body echoed, status 418 for `/teapot`.
struct Upstream {
    addr: std::net::SocketAddr,
    conns: Arc<std::sync::atomic::AtomicUsize>,
}

async fn upstream(tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let seen = |name: &str| {
                            req.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-")
                                .to_string()
                        };
                        let mut resp = hyper::Response::builder()
                            .status(if req.uri().path().ends_with("/teapot") {
                                418
                            } else {
                                200
                            })
                            .header("x-upstream", "yes")
                            .header("x-seen-version", format!("{:?}", req.version()))
                            .header("x-seen-uri", req.uri().to_string())
                            .header("x-seen-xff", seen("x-forwarded-for"))
                            .header("x-seen-xfh", seen("x-forwarded-host"))
                            .header("x-seen-vane", seen("x-vane-proxy"))
                            .header("x-seen-custom", seen("x-custom"))
                            .header("x-seen-private", seen("x-private"));
                        if let Some(h) = resp.headers_mut() {
                            h.insert("connection", "x-drop-me".parse().expect("value"));
                            h.insert("x-drop-me", "1".parse().expect("value"));
                        }
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(
                            resp.body(http_body_util::Full::new(body))
                                .expect("response"),
                        )
                    },
                );
                let b = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                match tls {
                    Some(cfg) => {
                        if let Ok(t) = tokio_rustls::TlsAcceptor::from(cfg).accept(s).await {
                            let _ = b
                                .serve_connection(hyper_util::rt::TokioIo::new(t), svc)
                                .await;
                        }
                    }
                    None => {
                        let _ = b
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                    }
                }
            });
        }
    });
    Upstream { addr, conns }
}

fn proxy_app(prefix: &str, extra: &str) -> String {
    format!(
        r#"pipeline:
  internal.driver.upstream:
    input: {{ url_prefix: "{prefix}"{extra} }}
    output:
      success:
        internal.terminator.response: {{}}
      failure:
        internal.terminator.response:
          input: {{ status: 502, body: "upstream failed: {{{{plugin.internal_driver_upstream.error}}}}" }}
"#
    )
}

/// A gateway serving plaintext HTTP whose application forwards everything to `prefix` (with
/// `extra` inputs): its config dir, its HTTP port and the running gateway (in that order, so
/// the gateway stops before its config dir goes away).
fn proxy_gateway(prefix: &str, extra: &str) -> (ConfigDir, u16, Vane) {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write("application/httpx.yaml", &proxy_app(prefix, extra));
    let v = Vane::start(&cfg, &[port]);
    (cfg, port, v)
}

/// An application sending requests for `path` to the upstream with input `when` and the rest to
/// the one with `otherwise` (`url_prefix: ..., ...`); a failed call answers 502 with the error.
fn split_app(path: &str, when: &str, otherwise: &str) -> String {
    let branch = |name: &str, input: &str| {
        format!(
            r#"      "{name}":
        internal.driver.upstream:
          input: {{ {input} }}
          output:
            success: {{ internal.terminator.response: {{}} }}
            failure:
              internal.terminator.response:
                input: {{ status: 502, body: "upstream failed: {{{{plugin.internal_common_match.{name}.internal_driver_upstream.error}}}}" }}
"#
        )
    };
    format!(
        "pipeline:\n  internal.common.match:\n    input: {{ left: \"{{{{req.path}}}}\", operator: \"==\", right: \"{path}\" }}\n    output:\n{}{}",
        branch("true", when),
        branch("false", otherwise)
    )
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_speaks_http2_by_alpn_and_a_dead_one_takes_the_failure_branch() {
    let up = upstream(Some(Arc::new(common::tls::server_config(
        "localhost",
        &["h2", "http/1.1"],
        false,
    ))))
    .await;
    let dead = free_port();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    // `/dead` goes to a port nobody listens on, the rest to the TLS upstream.
    cfg.write(
        "application/httpx.yaml",
        &split_app(
            "/dead",
            &format!("url_prefix: \"http://127.0.0.1:{dead}\""),
            &format!(
                "url_prefix: \"https://localhost:{}\", skip_verify: true",
                up.addr.port()
            ),
        ),
    );
    let _v = Vane::start(&cfg, &[port]);
    let get = |path: &'static str| async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut send = h1_client(tcp).await;
        let resp = send
            .send_request(
                hyper::Request::get(path)
                    .header("host", "front.test")
                    .body(Empty::<Bytes>::new())
                    .expect("request"),
            )
            .await
            .expect("response");
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
async fn bodies_are_buffered_for_templates_within_the_limits_and_still_forwarded() {
    let up = upstream(None).await;
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    // Requests whose body mentions "go" are forwarded (the buffered body goes up) and the
    // upstream's answer is wrapped; others are answered from the body itself.
    cfg.write(
        "application/httpx.yaml",
        &format!(
            r#"pipeline:
  internal.common.match:
    input: {{ left: "{{{{req.body}}}}", operator: contains, right: "go" }}
    output:
      "true":
        internal.driver.upstream:
          input: {{ url_prefix: "http://127.0.0.1:{}" }}
          output:
            success:
              internal.terminator.response:
                input: {{ body: "wrapped[{{{{res.body}}}}] {{{{res.header.x-upstream}}}}" }}
            failure:
              internal.terminator.response: {{ input: {{ status: 502 }} }}
      "false":
        internal.terminator.response:
          input: {{ body: "text={{{{req.body}}}} hex={{{{req.body_hex}}}}" }}
"#,
            up.addr.port()
        ),
    );
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("L7_MAX_BUFFER_SIZE", "32".into())],
            wait_ports: vec![port],
        },
    );
    let post = |body: &'static str, chunked: bool| async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut send = h1_client(tcp).await;
        let frames = vec![Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
            Bytes::from_static(body.as_bytes()),
        ))];
        let mut req = hyper::Request::post("/").header("host", "b.test");
        if !chunked {
            // Without it the body goes chunked, and the cap is checked while reading.
            req = req.header("content-length", body.len());
        }
        let resp = send
            .send_request(
                req.body(http_body_util::StreamBody::new(futures_iter(frames)))
                    .expect("req"),
            )
            .await
            .expect("response");
        let b = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&b).to_string()
    };
    assert_eq!(post("hi", false).await, "text=hi hex=6869");
    assert_eq!(post("please go", false).await, "wrapped[please go] yes");
    // Over L7_MAX_BUFFER_SIZE (declared or streamed): the placeholders stay literal.
    let long = "this body is longer than thirty-two bytes";
    assert_eq!(
        post(long, false).await,
        "text={{req.body}} hex={{req.body_hex}}"
    );
    assert_eq!(
        post(long, true).await,
        "text={{req.body}} hex={{req.body_hex}}"
    );
}

/// A stream over prepared items (no futures crate needed).
fn futures_iter<T: Unpin>(items: Vec<T>) -> IterStream<T> {
    IterStream(items.into_iter())
}

struct IterStream<T>(std::vec::IntoIter<T>);

impl<T: Unpin> futures_core::Stream for IterStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// A WebSocket-ish upstream: answers the upgrade with 101, then echoes raw bytes.
fn ws_upstream() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten().take(4) {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !head.contains("upgrade: websocket") || !head.contains("sec-websocket-key: ") {
                    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
                    return;
                }
                let _ = s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: from-upstream\r\n\r\n",
                );
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

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
    let upgrade = |path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .expect("write");
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => break,
            }
        }
        (s, String::from_utf8_lossy(&head).to_ascii_lowercase())
    };
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

#[test]
fn malformed_oversized_and_slow_requests_get_errors_or_closes_and_are_counted() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write("application/httpx.yaml", ECHO_APP);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("HTTP_HEADER_READ_TIMEOUT_SECS", "1".into())],
            wait_ports: vec![port],
        },
    );
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
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "closed within the header timeout"
    );
    // The gateway still serves.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
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

#[test]
fn static_files_indexes_ranges_spa_listings_gzip_and_conditional_requests() {
    let www = tempfile::tempdir().expect("www");
    let w = |rel: &str, bytes: &[u8]| {
        let p = www.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    };
    w("index.html", b"<!doctype html><p>home</p>");
    let hundred: Vec<u8> = (0..100u8).collect();
    w("data.bin", &hundred);
    w("app.js", b"console.log(1)");
    w("app.js.gz", b"\x1f\x8bgzipped-bytes");
    w("docs/a<b>.txt", b"x");
    w(".secret", b"hidden");
    let cfg = ConfigDir::new();
    let (site, spa) = (free_port(), free_port());
    // Two plaintext resolvers: `http` serves with listings, `spa` with the SPA fallback.
    cfg.write(
        &format!("listener/[{site}]/tcp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: http }\n",
    );
    cfg.write(
        &format!("listener/[{spa}]/tcp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: spa }\n",
    );
    cfg.write(
        "resolver/http.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n",
    );
    cfg.write(
        "resolver/spa.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n",
    );
    let root = www.path().display();
    cfg.write(
        "application/httpx.yaml",
        &format!(
            r#"pipeline:
  internal.common.match:
    input: {{ left: "{{{{server.port}}}}", operator: "==", right: "{spa}" }}
    output:
      "true":
        internal.driver.static:
          input: {{ root: "{root}", uri: "{{{{req.path}}}}", spa: true }}
          output:
            success: {{ internal.terminator.response: {{}} }}
            not_found: {{ internal.terminator.response: {{ input: {{ status: 404, body: nope }} }} }}
            failure: {{ internal.terminator.response: {{ input: {{ status: 403, body: "{{{{res.error}}}}" }} }} }}
      "false":
        internal.driver.static:
          input: {{ root: "{root}", uri: "{{{{req.path}}}}", browse: true, precompress: true }}
          output:
            success: {{ internal.terminator.response: {{}} }}
            not_found: {{ internal.terminator.response: {{ input: {{ status: 404, body: nope }} }} }}
            failure: {{ internal.terminator.response: {{ input: {{ status: 403, body: "{{{{res.error}}}}" }} }} }}
"#
        ),
    );
    let _v = Vane::start(&cfg, &[site, spa]);
    let get = |port: u16, path: &str, extra: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        h1(
            &mut s,
            &[&format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")],
        )
        .remove(0)
    };
    let (st, head, body) = get(site, "/", "");
    assert_eq!((st, body.as_str()), (200, "<!doctype html><p>home</p>"));
    assert!(head.contains("content-type: text/html"), "{head}");
    let (st, head, body) = get(site, "/data.bin", "");
    assert_eq!((st, body.len()), (200, 100));
    assert!(head.contains("accept-ranges: bytes"));
    let (st, head, body) = get(site, "/data.bin", "Range: bytes=10-19\r\n");
    assert_eq!(st, 206);
    assert!(head.contains("content-range: bytes 10-19/100"), "{head}");
    assert_eq!(body.as_bytes(), &hundred[10..20]);
    let (st, head, _) = get(site, "/data.bin", "Range: bytes=200-\r\n");
    assert_eq!(st, 416);
    assert!(head.contains("content-range: bytes */100"));
    // Conditional requests (beyond 0.9.2): the ETag comes back as 304.
    let (_, head, _) = get(site, "/data.bin", "");
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("etag")
        .replacen("w/", "W/", 1); // the helper lower-cases heads
    let (st, _, body) = get(site, "/data.bin", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!((st, body.as_str()), (304, ""));
    // Precompressed only for clients that accept gzip.
    let (_, head, body) = get(site, "/app.js", "Accept-Encoding: gzip, br\r\n");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(body.contains("gzipped-bytes"));
    assert!(head.contains("content-type: text/javascript"));
    let (_, head, body) = get(site, "/app.js", "");
    assert!(!head.contains("content-encoding"));
    assert_eq!(body, "console.log(1)");
    // Listings are escaped; dotfiles are never served or listed.
    let (st, _, body) = get(site, "/docs/", "");
    assert_eq!(st, 200);
    assert!(
        body.contains("Index of /docs/") && body.contains("a&lt;b&gt;.txt"),
        "{body}"
    );
    let (_, _, body) = get(site, "/", "").clone();
    assert!(!body.contains(".secret"));
    assert_eq!(get(site, "/.secret", "").0, 404);
    // Traversal never leaves the root.
    let (st, _, body) = get(site, "/../../etc/passwd", "");
    assert_eq!(st, 404, "{body}");
    assert!(!body.contains("root:"));
    let (st, _, _) = get(site, "/%2e%2e/%2e%2e/etc/passwd", "");
    assert_eq!(st, 404);
    // SPA: unknown routes get the index.
    let (st, _, body) = get(spa, "/some/missing/route", "");
    assert_eq!((st, body.as_str()), (200, "<!doctype html><p>home</p>"));
    assert_eq!(get(site, "/some/missing/route", "").0, 404);
}

#[test]
fn cgi_programs_answer_with_their_own_status_headers_and_body() {
    let bin = tempfile::tempdir().expect("bin");
    let script = bin.path().join("app.sh");
    std::fs::write(
        &script,
        r#"body=$(cat)
if [ "$REQUEST_METHOD" = "POST" ] && [ "$body" = "user=admin" ]; then
  printf 'Status: 302 Found\nSet-Cookie: session_id=abc; path=/; HttpOnly\nSet-Cookie: theme=dark\nLocation: /dashboard\n\n'
  exit 0
fi
if [ "$REQUEST_METHOD" = "POST" ]; then
  printf 'Status: 401 Unauthorized\r\nContent-Type: text/plain\r\n\r\nno'
  exit 0
fi
printf 'Content-Type: text/plain\n\n'
printf 'method=%s query=%s token=%s path_info=%s script=%s ua=%s' "$REQUEST_METHOD" "$QUERY_STRING" "${ACCESS_TOKEN:-none}" "$PATH_INFO" "$SCRIPT_NAME" "$HTTP_USER_AGENT"
"#,
    )
    .expect("script");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        &format!(
            r#"pipeline:
  internal.driver.cgi:
    input:
      command: /bin/sh
      script: "{}"
      method: "{{{{req.method}}}}"
      uri: "{{{{req.path}}}}?{{{{req.query}}}}"
      script_name: /cgi
      timeout: 5
    output:
      success: {{ internal.terminator.response: {{}} }}
      failure: {{ internal.terminator.response: {{ input: {{ status: 504, body: "cgi: {{{{plugin.internal_driver_cgi.error}}}}" }} }} }}
"#,
            script.display()
        ),
    );
    let _v = Vane::start(&cfg, &[port]);
    let ask = |req: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(req.as_bytes()).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    };
    let r = ask("GET /cgi/extra/path?x=1 HTTP/1.1\r\nHost: c\r\nUser-Agent: probe\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A `\n\n` header block keeps the whole body (0.9.2 lost its first two bytes); the child
    // does not inherit Vane's environment (its ACCESS_TOKEN).
    assert!(
        r.contains(
            "\r\nmethod=GET query=x=1 token=none path_info=/extra/path script=/cgi ua=probe\r\n"
        ),
        "{r}"
    );
    let r = ask("POST /cgi?x=1 HTTP/1.1\r\nHost: c\r\nContent-Length: 10\r\nConnection: close\r\n\r\nuser=admin");
    let lower = r.to_ascii_lowercase();
    assert!(r.starts_with("HTTP/1.1 302"), "{r}");
    assert!(lower.contains("location: /dashboard"));
    assert!(lower.contains("set-cookie: session_id=abc; path=/; httponly"));
    assert!(
        lower.contains("set-cookie: theme=dark"),
        "both cookies kept: {r}"
    );
    let r = ask(
        "POST /cgi?x=1 HTTP/1.1\r\nHost: c\r\nContent-Length: 5\r\nConnection: close\r\n\r\nguest",
    );
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    assert!(r.contains("\r\nno\r\n"), "{r}");
}

#[test]
fn sigterm_closes_idle_keep_alive_connections_instead_of_waiting_out_the_grace() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write("application/httpx.yaml", ECHO_APP);
    let mut v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("SHUTDOWN_GRACE_SECS", "20".into())],
            wait_ports: vec![port],
        },
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_h2c_speaks_http2_to_a_plaintext_upstream() {
    let up = upstream(None).await;
    let (_cfg, port, _v) = proxy_gateway(
        &format!("http://127.0.0.1:{}", up.addr.port()),
        ", version: h2c",
    );
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut send = h1_client(tcp).await;
    let resp = send
        .send_request(
            hyper::Request::get("/x")
                .header("host", "front.test")
                .body(Empty::<Bytes>::new())
                .expect("request"),
        )
        .await
        .expect("response");
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

/// An HTTP/3 upstream on a QUIC endpoint: echoes the request body, says which version it saw.
async fn h3_upstream() -> std::net::SocketAddr {
    use bytes::Buf;
    let tls = common::tls::server_config("localhost", &["h3"], true);
    let qsc = quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic tls");
    let ep = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(qsc)),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .expect("endpoint");
    let addr = ep.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok(mut h3c) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3c.accept().await {
                    tokio::spawn(async move {
                        let Ok((req, mut stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        let mut body = Vec::new();
                        while let Ok(Some(mut chunk)) = stream.recv_data().await {
                            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
                        }
                        let resp = hyper::Response::builder()
                            .status(202)
                            .header("x-seen-version", format!("{:?}", req.version()))
                            .header("x-seen-path", req.uri().path())
                            .header(
                                "x-seen-custom",
                                req.headers()
                                    .get("x-custom")
                                    .cloned()
                                    .unwrap_or(hyper::header::HeaderValue::from_static("-")),
                            )
                            .body(())
                            .expect("response");
                        let _ = stream.send_response(resp).await;
                        let _ = stream.send_data(Bytes::from(body)).await;
                        let _ = stream.finish().await;
                    });
                }
            });
        }
    });
    addr
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

/// TLS config for an HTTP/2 upstream (ALPN h2).
fn h2_upstream_tls() -> Arc<rustls::ServerConfig> {
    Arc::new(common::tls::server_config("localhost", &["h2"], false))
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
    let body = Bytes::from(vec![b'm'; 64 * 1024]);
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
            assert_eq!(got.len(), body.len(), "{client}->{up}");
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
        let mut n = 0;
        while let Some(mut chunk) = stream.recv_data().await.expect("data") {
            n += chunk.remaining();
            chunk.advance(chunk.remaining());
        }
        assert_eq!(n, body.len(), "h3->{up}");
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
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        &split_app(
            "/hang",
            &format!("url_prefix: \"http://127.0.0.1:{hang_port}\""),
            &format!("url_prefix: \"http://127.0.0.1:{die_port}\""),
        ),
    );
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
    assert!(start.elapsed() < Duration::from_secs(3), "no hang");
    // The dying upstream: the client gets the head and a short body, then the close.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /die HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(out.len() < 1024 * 1024, "the promised body never completes");
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
