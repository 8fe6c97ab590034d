//! Forwarded-QUIC load for `bench/udp.sh`: live QUIC connections through a proxy that routes
//! them by SNI, each from its own UDP socket (so each is its own session in the proxy).
//!
//! - `quic_hold server PORT CERT_FILE`: a QUIC echo server on 127.0.0.1:PORT for `q.test`
//!   (self-signed; the certificate is written to CERT_FILE for the clients).
//! - `quic_hold hold ADDR CERT_FILE N RATE SECS`: opens N connections at RATE per second, one
//!   round trip each, keeps them alive for SECS seconds; prints the answered ones, then
//!   `holding` once all are open.

use std::sync::Arc;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!("usage: quic_hold server PORT CERT_FILE | hold ADDR CERT_FILE N RATE SECS");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    Arc::new(t)
}

async fn server(port: u16, cert_file: String) {
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
    let params = rcgen::CertificateParams::new(vec!["q.test".to_string()])
        .unwrap_or_else(|e| panic!("params: {e}"));
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("cert: {e}"));
    std::fs::write(&cert_file, cert.der()).unwrap_or_else(|e| panic!("{cert_file}: {e}"));
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| panic!("tls: {e}"))
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .unwrap_or_else(|e| panic!("tls: {e}"));
    crypto.alpn_protocols = vec![b"echo".to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(crypto)
        .unwrap_or_else(|e| panic!("quic: {e}"));
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport());
    let ep = quinn::Endpoint::server(cfg, ([127, 0, 0, 1], port).into())
        .unwrap_or_else(|e| panic!("bind: {e}"));
    while let Some(inc) = ep.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = inc.await else { return };
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let Ok(req) = recv.read_to_end(1024).await else {
                    return;
                };
                let _ = send.write_all(&req).await;
                let _ = send.finish();
            }
        });
    }
}

async fn hold(addr: std::net::SocketAddr, cert_file: String, n: u64, rate: u64, secs: u64) {
    let der = std::fs::read(&cert_file).unwrap_or_else(|e| panic!("{cert_file}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .unwrap_or_else(|e| panic!("root: {e}"));
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| panic!("tls: {e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![b"echo".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto)
        .unwrap_or_else(|e| panic!("quic: {e}"));
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport());
    let start = Instant::now();
    let mut live = Vec::new();
    let mut answered = 0u64;
    for i in 0..n {
        let due = start + Duration::from_micros(i * 1_000_000 / rate.max(1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        // Its own endpoint, so its own UDP socket: a session of its own in the proxy.
        let Ok(mut ep) = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()) else {
            continue;
        };
        ep.set_default_client_config(cfg.clone());
        let Ok(connecting) = ep.connect(addr, "q.test") else {
            continue;
        };
        let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await else {
            continue;
        };
        if let Ok((mut send, mut recv)) = conn.open_bi().await {
            let _ = send.write_all(b"hello").await;
            let _ = send.finish();
            if tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(64))
                .await
                .is_ok_and(|r| r.is_ok_and(|b| b == b"hello"))
            {
                answered += 1;
            }
        }
        live.push((ep, conn));
    }
    println!("{answered}");
    println!("holding");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    drop(live);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    match args.get(1).map(String::as_str) {
        Some("server") => rt.block_on(server(arg(&args, 2), arg(&args, 3))),
        Some("hold") => rt.block_on(hold(
            arg(&args, 2),
            arg(&args, 3),
            arg(&args, 4),
            arg(&args, 5),
            arg(&args, 6),
        )),
        _ => usage(),
    }
}
