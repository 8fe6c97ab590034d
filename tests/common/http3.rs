//! HTTP/3 for tests: a config dir terminating QUIC on a UDP port, and quinn + h3 clients that
//! trust one certificate for `site.test`.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::{Buf, Bytes};

pub type Sender = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// UDP `port` detects QUIC and upgrades; the `quic` resolver terminates it as HTTP/3 and runs
/// `app_yaml` as `application/httpx.yaml`. Returns the certificate clients must trust.
pub fn terminating_config(
    cfg: &super::ConfigDir,
    port: u16,
    app_yaml: &str,
) -> rustls::pki_types::CertificateDer<'static> {
    let cert = super::tls::write_cert(cfg, "site.test", &["site.test"]);
    cfg.write(
        &format!("listener/[{port}]/udp.yaml"),
        r#"connection:
  internal.protocol.detect:
    input: { method: quic, payload: "{{req.peek_buffer_hex}}" }
    output:
      "true": { internal.transport.upgrade: { input: { protocol: quic } } }
      "false": { internal.transport.abort: {} }
"#,
    );
    cfg.write(
        "resolver/quic.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: httpx }\n",
    );
    cfg.write("application/httpx.yaml", app_yaml);
    cert
}

/// A client endpoint on loopback trusting `cert` (ALPN `h3`).
pub fn endpoint(cert: rustls::pki_types::CertificateDer<'static>) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qc)));
    ep
}

/// An HTTP/3 connection from `ep` to `addr` (`site.test`), its driver running in the
/// background (keeping the endpoint alive).
pub async fn connect(ep: quinn::Endpoint, addr: std::net::SocketAddr) -> Sender {
    let connecting = ep.connect(addr, "site.test").expect("connect");
    let conn = tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
        .await
        .expect("handshake in time")
        .expect("handshake");
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("h3");
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        drop(ep);
    });
    send
}

/// An HTTP/3 client connection to `addr` trusting `cert` for `site.test`.
pub async fn client(
    addr: std::net::SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
) -> Sender {
    connect(endpoint(cert), addr).await
}

/// One HTTP/3 GET on `send`: (status, body).
pub async fn get_body(send: &mut Sender, path: &str) -> (hyper::StatusCode, Vec<u8>) {
    let req = hyper::Request::get(format!("https://site.test{path}"))
        .body(())
        .expect("request");
    let mut stream = send.send_request(req).await.expect("send");
    stream.finish().await.expect("finish");
    let resp = stream.recv_response().await.expect("response");
    let mut out = Vec::new();
    while let Some(mut c) = stream.recv_data().await.expect("data") {
        out.extend_from_slice(&c.copy_to_bytes(c.remaining()));
    }
    (resp.status(), out)
}

/// One HTTP/3 GET on `send`: (status, body length).
pub async fn get(send: &mut Sender, path: &str) -> (hyper::StatusCode, usize) {
    let (status, body) = get_body(send, path).await;
    (status, body.len())
}
