//! TLS peers for tests: self-signed certificates, a TLS line-echo upstream, a TLS client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

pub struct Cert {
    pub der: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Cert {
    pub fn new(name: &str) -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("cert");
        Cert {
            der: ck.cert.der().clone(),
            key: ck.signing_key.serialize_der(),
        }
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        self.key()
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS server answering each line with `<tag>:<line>`, on its own certificate.
pub struct TlsEcho {
    pub addr: SocketAddr,
    pub cert: Cert,
}

impl TlsEcho {
    pub fn start(name: &str, tag: &str) -> TlsEcho {
        let cert = Cert::new(name);
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der.clone()], cert.key())
            .expect("server config");
        let cfg = Arc::new(cfg);
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let tag = tag.to_string();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (cfg, tag) = (cfg.clone(), tag.clone());
                thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, s);
                    let mut line = String::new();
                    loop {
                        line.clear();
                        let mut r = BufReader::new(&mut tls);
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                        drop(r);
                        if tls.write_all(format!("{tag}:{line}").as_bytes()).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        TlsEcho { addr, cert }
    }
}

/// A TLS client session through `port` with `sni`, trusting `roots`.
pub struct TlsClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsClient {
    pub fn connect(
        port: u16,
        sni: &str,
        alpn: &[&str],
        roots: &[&CertificateDer<'static>],
    ) -> std::io::Result<TlsClient> {
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            store.add((*r).clone()).map_err(std::io::Error::other)?;
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(store)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        let name = ServerName::try_from(sni.to_string()).map_err(std::io::Error::other)?;
        let conn =
            rustls::ClientConnection::new(Arc::new(cfg), name).map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(("127.0.0.1", port))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient { tls })
    }

    /// The certificate the server presented (proves which upstream terminated TLS).
    pub fn peer_cert(&self) -> Option<CertificateDer<'static>> {
        self.tls
            .conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
    }

    pub fn ask(&mut self, line: &str) -> Option<String> {
        self.tls.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut r = BufReader::new(&mut self.tls);
        let mut out = String::new();
        match r.read_line(&mut out) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(out.trim_end().to_string()),
        }
    }
}

/// The TLS records of a real ClientHello for `sni` (as a rustls client would send them).
pub fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

/// A certificate pair `certs/<id>.crt|key` for `names` in `cfg`; returns the certificate.
pub fn write_cert(
    cfg: &super::ConfigDir,
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

/// A server configuration with a fresh self-signed certificate for `name`, offering `alpn`;
/// TLS 1.3 only when `tls13_only` (QUIC).
pub fn server_config(name: &str, alpn: &[&str], tls13_only: bool) -> rustls::ServerConfig {
    let cert = Cert::new(name);
    let builder = rustls::ServerConfig::builder_with_provider(provider());
    let builder = if tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .expect("versions");
    let mut cfg = builder
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], cert.key())
        .expect("server config");
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    cfg
}
