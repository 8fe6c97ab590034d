//! TLS connection-rate load for `bench/tls.sh`: `tls_load ADDR SNI SECS CLIENTS`.
//!
//! Each client thread repeatedly opens a TCP connection, completes a full TLS handshake (no
//! session resumption) with the given SNI, requests `/small` and reads the reply. Prints the
//! completed connections per second. Certificates are not verified: this measures proxies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

mod support;

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
    // vane's own "accept any certificate" client configuration (signatures still checked).
    let mut cfg = vane::certs::client::config(true, &[]).expect("TLS client");
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
