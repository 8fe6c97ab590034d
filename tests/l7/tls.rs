//! TLS termination (`src/l7/tls.rs`): the certificate for the name, ALPN picks the protocol.

use super::*;

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
