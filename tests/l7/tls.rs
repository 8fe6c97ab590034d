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

/// vane terminating TLS with a certificate for `site.test` (its config dir, port, certificate
/// and the running gateway, which stops before its config dir goes away).
fn site_gateway() -> (
    ConfigDir,
    u16,
    rustls::pki_types::CertificateDer<'static>,
    Vane,
) {
    site_gateway_with(Vec::new())
}

/// [`site_gateway`] with these environment variables.
fn site_gateway_with(
    env: Vec<(&str, String)>,
) -> (
    ConfigDir,
    u16,
    rustls::pki_types::CertificateDer<'static>,
    Vane,
) {
    let cfg = ConfigDir::new();
    let port = free_port();
    tls_port(&cfg, port);
    let site = common::tls::write_cert(&cfg, "site.test", &["site.test"]);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env,
            wait_ports: vec![port],
        },
    );
    (cfg, port, site, v)
}

/// A TLS client of `site.test` on `port` (HTTP/1.1 by ALPN), handshake done.
async fn site_client(
    port: u16,
    site: &rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("site.test").expect("name");
    tokio_rustls::TlsConnector::from(tls_client(&[site], &["http/1.1"]))
        .connect(name, tcp)
        .await
        .expect("handshake")
}

/// Reads one response with a `Content-Length` body off `io` (buffering in `buf`) and returns
/// its head and body as text.
async fn read_response<IO: tokio::io::AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut Vec<u8>,
) -> (String, String) {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                buf.drain(..end + 4 + len);
                return (head, body);
            }
        }
        let mut chunk = [0u8; 8192];
        let n = io.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before a whole response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A keep-alive TLS client whose next request is already decrypted inside rustls when the
/// previous exchange ends (the socket has nothing more to read) is still answered; so is one
/// that pauses between requests. The idle wait looks at rustls's plaintext before the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_keep_alive_requests_held_by_rustls_or_after_a_pause_are_answered() {
    use tokio::io::AsyncWriteExt;
    let (_cfg, port, site, _v) = site_gateway();
    let mut tls = site_client(port, &site).await;
    // The first request is exactly as long as the server's first read (4 KiB), so the second,
    // sent in the same TLS record, stays in rustls after the first is parsed.
    let start = "GET /first HTTP/1.1\r\nHost: site.test\r\nX-Pad: ";
    let pad = 4096 - start.len() - "\r\n\r\n".len();
    let first = format!("{start}{}\r\n\r\n", "p".repeat(pad));
    assert_eq!(first.len(), 4096);
    let both = format!("{first}GET /second HTTP/1.1\r\nHost: site.test\r\n\r\n");
    tls.write_all(both.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let deadline = std::time::Duration::from_secs(5);
    for path in ["/first", "/second"] {
        let (head, body) = tokio::time::timeout(deadline, read_response(&mut tls, &mut buf))
            .await
            .unwrap_or_else(|_| panic!("no answer to {path} within 5 s"));
        assert!(head.starts_with("HTTP/1.1 201"), "{head}");
        assert!(body.starts_with(&format!("GET {path}?")), "{body}");
    }
    // Idle, then one more request on the same connection.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tls.write_all(b"GET /third HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("write");
    let (head, body) = tokio::time::timeout(deadline, read_response(&mut tls, &mut buf))
        .await
        .expect("no answer to /third within 5 s");
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert!(body.starts_with("GET /third?"), "{body}");
}

/// A keep-alive TLS client that has sent the first bytes of a record and no more is idle, not
/// inside a request: SIGTERM closes it at once instead of waiting out the header timeout
/// (30 s) within a grace of 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_a_tls_client_that_sent_part_of_a_record() {
    use tokio::io::AsyncWriteExt;
    let (_cfg, port, site, mut v) = site_gateway_with(vec![("SHUTDOWN_GRACE_SECS", "20".into())]);
    let mut tls = site_client(port, &site).await;
    tls.write_all(b"GET /one HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let (head, _) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut tls, &mut buf))
        .await
        .expect("no answer within 5 s");
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    // The header of an application-data record, without its length or payload.
    tls.get_mut()
        .0
        .write_all(&[0x17, 0x03, 0x03])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    let code = tokio::task::block_in_place(|| v.terminate(Duration::from_secs(15)));
    assert_eq!(code, Some(0), "{}", v.logs());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        start.elapsed()
    );
}

/// A last answer (`Connection: close`) ends with TLS's `close_notify` and then the socket's
/// end, so the client reads a clean end of the stream, not a truncation; a close after a
/// refused head (400) too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_answer_ends_with_close_notify() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_cfg, port, site, _v) = site_gateway();
    for request in [
        &b"GET /last HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n"[..],
        &b"GET /bad HTTP/1.1\r\nHost: site.test\r\nBad Header Line\r\n\r\n"[..],
    ] {
        let mut tls = site_client(port, &site).await;
        tls.write_all(request).await.expect("write");
        let mut out = Vec::new();
        // tokio-rustls reports an end without close_notify as UnexpectedEof.
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out))
            .await
            .expect("closed within 5 s");
        let text = String::from_utf8_lossy(&out);
        assert!(read.is_ok(), "{read:?} after {text}");
        assert!(text.starts_with("HTTP/1.1 "), "{text}");
    }
}

/// A client that sends its ClientHello and then nothing: the handshake ends after
/// `HTTP_HEADER_READ_TIMEOUT_SECS` (not before, and within a quarter more), counted as a
/// failed handshake, and the gateway serves the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_stalls_is_closed_after_the_header_timeout() {
    use std::io::{Read, Write};
    let (_cfg, port, site, v) =
        site_gateway_with(vec![("HTTP_HEADER_READ_TIMEOUT_SECS", "1".into())]);
    let name = rustls::pki_types::ServerName::try_from("site.test").expect("name");
    let mut client =
        rustls::ClientConnection::new(tls_client(&[&site], &["http/1.1"]), name).expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("ClientHello");
    let (elapsed, answered) = tokio::task::block_in_place(|| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(6)))
            .expect("timeout");
        let start = std::time::Instant::now();
        s.write_all(&hello).expect("write");
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        (start.elapsed(), answer.len())
    });
    assert!(answered > 0, "the server's flight came before the close");
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    assert!(
        wait_until(Duration::from_secs(3), || v
            .metric("vane_tls_handshake_failures_total")
            .unwrap_or(0.0)
            >= 1.0),
        "{}",
        v.metrics_text()
    );
    let mut tls = site_client(port, &site).await;
    let mut buf = Vec::new();
    use tokio::io::AsyncWriteExt;
    tls.write_all(b"GET /after HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .await
        .expect("write");
    let (head, _) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut tls, &mut buf))
        .await
        .expect("no answer within 5 s");
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
}

/// A client that asks for AES-256-GCM-SHA384 first (as OpenSSL's do) gets a SHA-256 suite, in
/// TLS 1.3 and 1.2; one that offers only SHA-384 suites still gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_prefers_sha256_suites_whatever_the_client_order() {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let (_cfg, port, site, _v) = site_gateway();
    let negotiated = |suites: Vec<rustls::SupportedCipherSuite>, version| {
        let site = site.clone();
        async move {
            let mut store = rustls::RootCertStore::empty();
            store.add(site).expect("root");
            let provider = rustls::crypto::CryptoProvider {
                cipher_suites: suites,
                ..rustls::crypto::aws_lc_rs::default_provider()
            };
            let c = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[version])
                .expect("versions")
                .with_root_certificates(store)
                .with_no_client_auth();
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let name = rustls::pki_types::ServerName::try_from("site.test").expect("name");
            let tls = tokio_rustls::TlsConnector::from(Arc::new(c))
                .connect(name, tcp)
                .await
                .expect("handshake");
            tls.get_ref()
                .1
                .negotiated_cipher_suite()
                .expect("a suite")
                .suite()
        }
    };
    let tls13 = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS13_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        negotiated(tls13, &rustls::version::TLS13).await,
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    let tls12 = vec![
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    assert_eq!(
        negotiated(tls12, &rustls::version::TLS12).await,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
    let only = vec![cs::TLS13_AES_256_GCM_SHA384];
    assert_eq!(
        negotiated(only, &rustls::version::TLS13).await,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
}

/// A client resumes its TLS session on a later connection after hundreds of other clients
/// have connected in between: TLS 1.3 by ticket, TLS 1.2 by session ID from the server's cache
/// (which the other clients fill). The first full handshake gives the session; no request is
/// needed for TLS 1.2, and for TLS 1.3 one request lets the client read the tickets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume_after_many_other_clients() {
    use rustls::client::{Resumption, Tls12Resumption};
    use rustls::HandshakeKind;
    let (_cfg, port, site, _v) = site_gateway();
    let name = || rustls::pki_types::ServerName::try_from("site.test").expect("name");
    let client = |versions: &[&'static rustls::SupportedProtocolVersion], resumption| {
        let mut store = rustls::RootCertStore::empty();
        store.add(site.clone()).expect("root");
        let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        c.resumption = resumption;
        tokio_rustls::TlsConnector::from(Arc::new(c))
    };
    let connect = |c: tokio_rustls::TlsConnector| async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        c.connect(name(), tcp).await.expect("handshake")
    };
    let ask = |mut tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>| async move {
        use tokio::io::AsyncWriteExt;
        tls.write_all(b"GET /t HTTP/1.1\r\nHost: site.test\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let (head, _) = read_response(&mut tls, &mut buf).await;
        assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    };
    let tls13 = client(
        &[&rustls::version::TLS13],
        Resumption::in_memory_sessions(4),
    );
    let tls12 = client(
        &[&rustls::version::TLS12],
        Resumption::in_memory_sessions(4).tls12_resumption(Tls12Resumption::SessionIdOnly),
    );
    for c in [&tls13, &tls12] {
        let tls = connect(c.clone()).await;
        assert_eq!(tls.get_ref().1.handshake_kind(), Some(HandshakeKind::Full));
        ask(tls).await;
    }
    // Others in between, each with a session the server's cache keeps (TLS 1.2, by ID).
    for _ in 0..300 {
        let other = client(
            &[&rustls::version::TLS12],
            Resumption::in_memory_sessions(1).tls12_resumption(Tls12Resumption::SessionIdOnly),
        );
        drop(connect(other).await);
    }
    for (c, what) in [
        (&tls13, "TLS 1.3 by ticket"),
        (&tls12, "TLS 1.2 by session ID"),
    ] {
        let tls = connect(c.clone()).await;
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Resumed),
            "{what}"
        );
        ask(tls).await;
    }
}
