//! QUIC peers for tests: quinn servers that answer streams, clients with small or big
//! ClientHellos.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::tls::Cert;

/// Classic key exchange only (X25519, P-256): the tests count the datagrams a ClientHello
/// spans, and a post-quantum key share (1,216 bytes) would change that count.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    Arc::new(rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        ..default_provider()
    })
}

/// A QUIC server answering each bidirectional stream with `<tag>:<request>`.
pub fn server(name: &str, tag: &'static str) -> (SocketAddr, Cert, quinn::Endpoint) {
    let cert = Cert::new(name);
    let crypto = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], cert.key_der())
        .expect("server crypto");
    let mut crypto = crypto;
    crypto.alpn_protocols = vec![big_alpn(0), b"test".to_vec()];
    let cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(crypto).expect("quic server crypto"),
    ));
    let ep = quinn::Endpoint::server(cfg, "127.0.0.1:0".parse().expect("addr"))
        .expect("server endpoint");
    let addr = ep.local_addr().expect("addr");
    let e2 = ep.clone();
    tokio::spawn(async move {
        while let Some(inc) = e2.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let Ok(req) = recv.read_to_end(64 * 1024).await else {
                        return;
                    };
                    let mut reply = format!("{tag}:").into_bytes();
                    reply.extend_from_slice(&req);
                    let _ = send.write_all(&reply).await;
                    let _ = send.finish();
                }
            });
        }
    });
    (addr, cert, ep)
}

pub fn big_alpn(i: usize) -> Vec<u8> {
    format!("proto-{i}-{}", "x".repeat(190)).into_bytes()
}

pub fn client(roots: &[&Cert], big_hello: bool) -> quinn::Endpoint {
    client_with(roots, big_hello, provider())
}

/// A client that offers X25519MLKEM768 first, as current browsers do: its key share alone
/// pushes the ClientHello past one datagram.
pub fn post_quantum_client(roots: &[&Cert]) -> quinn::Endpoint {
    client_with(
        roots,
        false,
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    )
}

fn client_with(
    roots: &[&Cert],
    big_hello: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> quinn::Endpoint {
    let mut store = rustls::RootCertStore::empty();
    for c in roots {
        store.add(c.der.clone()).expect("root");
    }
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(store)
        .with_no_client_auth();
    crypto.alpn_protocols = if big_hello {
        // Ten 200-byte ALPN names push the ClientHello past one datagram.
        (0..10).map(big_alpn).collect()
    } else {
        vec![b"test".to_vec()]
    };
    let cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("quic client crypto"),
    ));
    let mut ep =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    ep.set_default_client_config(cfg);
    ep
}

pub async fn ask(conn: &quinn::Connection, msg: &str) -> Option<String> {
    let (mut send, mut recv) = conn.open_bi().await.ok()?;
    send.write_all(msg.as_bytes()).await.ok()?;
    send.finish().ok()?;
    let r = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(64 * 1024))
        .await
        .ok()?
        .ok()?;
    String::from_utf8(r).ok()
}

/// Connects through `to` with `sni`, within 10 s.
pub async fn connect(ep: &quinn::Endpoint, to: SocketAddr, sni: &str) -> quinn::Connection {
    tokio::time::timeout(
        Duration::from_secs(10),
        ep.connect(to, sni).expect("connect"),
    )
    .await
    .expect("handshake in time")
    .expect("QUIC handshake")
}
