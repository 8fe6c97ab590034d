//! A real ACME server for tests: Debian's Pebble with its challenge test server as the DNS
//! that points every name at 127.0.0.1, on loopback ports of their own.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::{ensure_tool, free_port, wait_until};

/// Pebble's own HTTPS identity (for its directory and management API), made once per test.
pub struct PebbleTls {
    pub dir: tempfile::TempDir,
    /// The CA that signed Pebble's certificate: vane's `ca_bundle`.
    pub ca_pem: PathBuf,
    ca_der: CertificateDer<'static>,
}

impl PebbleTls {
    pub fn new() -> PebbleTls {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "test CA for Pebble");
        let ca_cert = ca.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
        let p = dir.path();
        std::fs::write(p.join("ca.pem"), ca_cert.pem()).expect("write");
        std::fs::write(p.join("cert.pem"), leaf.pem()).expect("write");
        std::fs::write(p.join("key.pem"), key.serialize_pem()).expect("write");
        PebbleTls {
            ca_pem: p.join("ca.pem"),
            ca_der: ca_cert.der().clone(),
            dir,
        }
    }
}

/// A running Pebble (and its DNS); both stop when dropped.
pub struct Pebble {
    pub port: u16,
    pub mgmt: u16,
    children: Vec<Child>,
    log: PathBuf,
    ca_der: CertificateDer<'static>,
}

impl Pebble {
    /// Validates http-01 on `http_port` and tls-alpn-01 on `tls_port`; issues certificates
    /// valid for `validity` (Pebble's default is years). `port`: reuse a directory port.
    pub fn start(
        tls: &PebbleTls,
        http_port: u16,
        tls_port: u16,
        validity: Option<Duration>,
        port: Option<u16>,
    ) -> Pebble {
        let pebble = ensure_tool("pebble", "pebble");
        let challtestsrv = ensure_tool("pebble-challtestsrv", "pebble");
        let dir = tls.dir.path();
        let (port, mgmt, dns) = (port.unwrap_or_else(free_port), free_port(), free_port());
        let mut cfg = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt}"),
            "certificate": dir.join("cert.pem"),
            "privateKey": dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }});
        if let Some(v) = validity {
            cfg["pebble"]["certificateValidityPeriod"] = v.as_secs().into();
        }
        let cfg_path = dir.join(format!("pebble-{port}.json"));
        std::fs::write(&cfg_path, cfg.to_string()).expect("write config");
        let log = dir.join(format!("pebble-{port}.log"));
        let out = || std::fs::File::create(&log).expect("log");
        let dns_log = std::fs::File::create(dir.join(format!("dns-{dns}.log"))).expect("log");
        let dns_child = Command::new(challtestsrv)
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdin(Stdio::null())
            .stdout(dns_log.try_clone().expect("dup"))
            .stderr(dns_log)
            .spawn()
            .expect("spawn pebble-challtestsrv");
        let o = out();
        let child = Command::new(pebble)
            .arg("-config")
            .arg(&cfg_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(o.try_clone().expect("dup"))
            .stderr(o)
            .spawn()
            .expect("spawn pebble");
        let p = Pebble {
            port,
            mgmt,
            children: vec![child, dns_child],
            log,
            ca_der: tls.ca_der.clone(),
        };
        assert!(
            wait_until(Duration::from_secs(20), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()
                && TcpStream::connect(("127.0.0.1", mgmt)).is_ok()),
            "pebble never listened; log:\n{}",
            p.logs()
        );
        p
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The root this Pebble signs with (it makes a new one at every start).
    pub fn root(&self) -> CertificateDer<'static> {
        let pem = https_get(self.mgmt, "/roots/0", &self.ca_der);
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("root PEM")
    }

    pub fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// GET over HTTPS on 127.0.0.1:`port`, trusting `ca`; the body.
fn https_get(port: u16, path: &str, ca: &CertificateDer<'static>) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("conn");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The leaf certificate a TLS server on 127.0.0.1:`port` presents for `sni`, verified against
/// `roots` (an error when it does not chain to one of them).
pub fn served_leaf(
    port: u16,
    sni: &str,
    roots: &[CertificateDer<'static>],
) -> std::io::Result<CertificateDer<'static>> {
    let refs: Vec<&CertificateDer<'static>> = roots.iter().collect();
    let c = super::tls::TlsClient::connect(port, sni, &["http/1.1"], &refs)?;
    c.peer_cert()
        .ok_or_else(|| std::io::Error::other("no certificate"))
}

/// True when `path` exists and holds a certificate naming every one of `names`.
pub fn pair_for(path: &Path, names: &[&str]) -> bool {
    let Ok(pem) = std::fs::read(path) else {
        return false;
    };
    let Ok(leaf) = CertificateDer::from_pem_slice(&pem) else {
        return false;
    };
    let text = String::from_utf8_lossy(leaf.as_ref()).into_owned();
    names.iter().all(|n| text.contains(n))
}
