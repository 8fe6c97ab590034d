//! TLS connection-rate load for `bench/tls.sh`: `tls_load ADDR SNI SECS CLIENTS`.
//!
//! Each client thread repeatedly opens a TCP connection, completes a full TLS handshake (no
//! session resumption) with the given SNI, requests `/small` and reads the reply. Prints the
//! completed connections per second. Certificates are not verified: this measures proxies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

mod support;

#[derive(Debug)]
struct AcceptAll(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAll {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: tls_load ADDR SNI SECS CLIENTS");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let sni = ServerName::try_from(args[2].clone()).expect("server name");
    let secs: u64 = args[3].parse().expect("seconds");
    let clients: usize = args[4].parse().expect("clients");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAll(provider)))
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    let cfg = Arc::new(cfg);
    support::run(clients, secs, move || {
        let Ok(tcp) = TcpStream::connect(&addr) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
        let Ok(conn) = rustls::ClientConnection::new(cfg.clone(), sni.clone()) else {
            return false;
        };
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        if tls
            .write_all(b"GET /small HTTP/1.0\r\nHost: bench.test\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        out.starts_with(b"HTTP/1.1 200")
    });
}
