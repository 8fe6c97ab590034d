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

/// A TCP port upgraded to the plaintext resolver, which upgrades to `app`.
fn plain_http(cfg: &ConfigDir, port: u16, app: &str) {
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: http }\n",
    );
    cfg.write(
        "resolver/http.yaml",
        &format!(
            "connection:\n  internal.transport.upgrade:\n    input: {{ protocol: \"{app}\" }}\n"
        ),
    );
}

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
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn http1_requests_are_answered_by_the_application_flow_with_keep_alive() {
    let cfg = ConfigDir::new();
    let port = free_port();
    plain_http(&cfg, port, "httpx");
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
    plain_http(&cfg, port, "h2");
    cfg.write("application/h2.yaml", ECHO_APP);
    let _v = Vane::start(&cfg, &[port]);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
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

fn write_cert(
    cfg: &ConfigDir,
    id: &str,
    names: &[&str],
) -> rustls::pki_types::CertificateDer<'static> {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.self_signed(&key).expect("cert");
    cfg.write(&format!("certs/{id}.crt"), &cert.pem());
    cfg.write(&format!("certs/{id}.key"), &key.serialize_pem());
    cert.der().clone()
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
    let site = write_cert(&cfg, "site.test", &["site.test"]);
    let wild = write_cert(&cfg, "*.wild.test", &["*.wild.test"]);
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
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 over tls");
    tokio::spawn(conn);
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
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .expect("h1 over tls");
    tokio::spawn(conn);
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
    plain_http(&cfg, port, "httpx");
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
    plain_http(&cfg, port, "httpx");
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
