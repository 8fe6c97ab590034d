//! HTTP/3 clients for tests: a quinn + h3 connection trusting one certificate.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;

/// An HTTP/3 client connection to `addr` trusting `cert` for `site.test`.
pub async fn client(
    addr: std::net::SocketAddr,
    cert: rustls::pki_types::CertificateDer<'static>,
) -> h3::client::SendRequest<h3_quinn::OpenStreams, Bytes> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qc)));
    let conn = ep
        .connect(addr, "site.test")
        .expect("connect")
        .await
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

/// One HTTP/3 GET on `send`: (status, body length).
pub async fn get(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    path: &str,
) -> (hyper::StatusCode, usize) {
    use bytes::Buf;
    let req = hyper::Request::get(format!("https://site.test{path}"))
        .body(())
        .expect("request");
    let mut stream = send.send_request(req).await.expect("send");
    stream.finish().await.expect("finish");
    let resp = stream.recv_response().await.expect("response");
    let mut n = 0;
    while let Some(mut c) = stream.recv_data().await.expect("data") {
        n += c.remaining();
        c.advance(c.remaining());
    }
    (resp.status(), n)
}
