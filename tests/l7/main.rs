//! L7 over real sockets: HTTP/1.1 and HTTP/2 (prior knowledge) on plaintext, HTTP/1.1 and
//! HTTP/2 after TLS termination with a certificate from `certs/`, application flows answering
//! with `internal.terminator.response`, and the error outcomes of the flow engine.

mod buffer;
mod cgi;
#[path = "../common/mod.rs"]
mod common;
mod h1_conformance;
mod h1_wire;
mod h2_conformance;
mod h2_random;
mod h2_raw;
mod h2_wire;
mod http3;
mod keys;
mod server;
mod static_files;
mod tls;
mod upstream;
mod websocket;

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

fn tls_client(
    roots: &[&rustls::pki_types::CertificateDer<'static>],
    alpn: &[&str],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).expect("root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(store)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

fn tls_port(cfg: &ConfigDir, port: u16) {
    cfg.tls_terminating(port, "httpx");
    cfg.write("application/httpx.yaml", ECHO_APP);
}

/// An HTTP upstream (HTTP/1.1 and HTTP/2, optionally over TLS with ALPN) that answers with
/// what it saw: `x-seen-*` headers, the request body echoed, status 418 for `/teapot` and NNN
/// for `.../status/NNN`.
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
                        // `/teapot` answers 418, `.../status/NNN` answers NNN.
                        let path = req.uri().path().to_string();
                        let status = match path.rsplit_once("/status/") {
                            Some((_, code)) => code.parse().unwrap_or(500),
                            None if path.ends_with("/teapot") => 418,
                            None => 200,
                        };
                        let mut resp = hyper::Response::builder()
                            .status(status)
                            .header("x-seen-method", req.method().as_str())
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
                        let body = if status == 204 { Bytes::new() } else { body };
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
    proxy_app_failing_with(
        prefix,
        extra,
        "upstream failed: {{plugin.internal_driver_upstream.error}}",
    )
}

/// [`proxy_app`] whose failure branch answers 502 with `body` (a template).
fn proxy_app_failing_with(prefix: &str, extra: &str, body: &str) -> String {
    format!(
        r#"pipeline:
  internal.driver.upstream:
    input: {{ url_prefix: "{prefix}"{extra} }}
    output:
      success:
        internal.terminator.response: {{}}
      failure:
        internal.terminator.response:
          input: {{ status: 502, body: "{body}" }}
"#
    )
}

/// A gateway serving plaintext HTTP whose application forwards everything to `prefix` (with
/// `extra` inputs): its config dir, its HTTP port and the running gateway (in that order, so
/// the gateway stops before its config dir goes away).
/// vane on a plaintext HTTP port serving [`ECHO_APP`], with `env`.
fn echo_gateway(env: &[(&str, &str)]) -> (ConfigDir, u16, Vane) {
    let (cfg, port) = app_dir(ECHO_APP);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            wait_ports: vec![port],
        },
    );
    (cfg, port, v)
}

/// A config dir whose plaintext HTTP port (returned) runs `app_yaml` as application `httpx`.
fn app_dir(app_yaml: &str) -> (ConfigDir, u16) {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write("application/httpx.yaml", app_yaml);
    (cfg, port)
}

/// An application serving one file, `/big.bin`, larger than the loopback's socket buffers
/// hold (up to about 10 MiB): a client that sleeps stops the server's write part-way. The
/// directory (kept for the test's life), the application and the file's bytes.
fn big_file_app() -> (tempfile::TempDir, String, Vec<u8>) {
    let www = tempfile::tempdir().expect("www");
    let data: Vec<u8> = (0..32u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(www.path().join("big.bin"), &data).expect("write");
    let app = format!(
        "pipeline:\n  internal.driver.static:\n    input: {{ root: \"{}\", uri: \"{{{{req.path}}}}\" }}\n    output:\n      success: {{ internal.terminator.response: {{}} }}\n",
        www.path().display()
    );
    (www, app, data)
}

fn proxy_gateway(prefix: &str, extra: &str) -> (ConfigDir, u16, Vane) {
    let (cfg, port) = app_dir(&proxy_app(prefix, extra));
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

/// An HTTPS upstream on a raw TLS socket (HTTP/1.1 by ALPN): reads a request head, writes
/// `answer(head)` as it is, and closes; for answers no server library would send.
async fn raw_tls_upstream(answer: fn(&str) -> &'static str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(common::tls::server_config(
        "localhost",
        &["http/1.1"],
        false,
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut t) = acceptor.accept(s).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match t.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let reply = answer(&String::from_utf8_lossy(&head));
                let _ = t.write_all(reply.as_bytes()).await;
                let _ = t.shutdown().await;
            });
        }
    });
    up
}

/// The end of a conformance suite: every failing case listed, not only the first.
fn all_cases_pass(failed: &[String], total: usize) {
    assert!(
        failed.is_empty(),
        "{} of {total} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
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

/// TLS config for an HTTP/2 upstream (ALPN h2).
fn h2_upstream_tls() -> Arc<rustls::ServerConfig> {
    Arc::new(common::tls::server_config("localhost", &["h2"], false))
}
