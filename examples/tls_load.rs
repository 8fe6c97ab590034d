//! TLS connection-rate load for `bench/tls.sh`: `tls_load ADDR SNI SECS CLIENTS`.
//!
//! Each client thread repeatedly opens a TCP connection, completes a full TLS handshake (no
//! session resumption) with the given SNI, requests `/small` and reads the reply. Prints the
//! completed connections per second. Certificates are not verified: this measures proxies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

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
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (cfg, sni, addr, done, stop) = (
                cfg.clone(),
                sni.clone(),
                addr.clone(),
                done.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(tcp) = TcpStream::connect(&addr) else {
                        continue;
                    };
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                    let Ok(conn) = rustls::ClientConnection::new(cfg.clone(), sni.clone()) else {
                        continue;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    if tls
                        .write_all(b"GET /small HTTP/1.0\r\nHost: bench.test\r\n\r\n")
                        .is_err()
                    {
                        continue;
                    }
                    let mut out = Vec::new();
                    let _ = tls.read_to_end(&mut out);
                    if out.starts_with(b"HTTP/1.1 200") {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    println!("{:.0}", done.load(Ordering::Relaxed) as f64 / elapsed);
}
