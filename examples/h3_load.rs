//! HTTP/3 and HTTP/2-over-TLS load for `bench/h3.sh`, one client for both so the two are
//! compared on equal terms: `h3_load h3|h2 ADDR SECS CONNS STREAMS PATH`.
//!
//! CONNS connections each keep STREAMS `GET PATH` requests in flight back to back for SECS
//! seconds (or until the first response when SECS is 0: one download), reading every body
//! whole. Prints requests per second and body megabytes (10^6) per second. Certificates are
//! not verified (vane's accept-any client configuration): this measures the server.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;

/// Requests completed and body bytes read, shared by the streams of this (single) thread.
#[derive(Default)]
struct Tally {
    requests: Cell<u64>,
    bytes: Cell<u64>,
}

impl Tally {
    fn add(&self, bytes: u64) {
        self.requests.set(self.requests.get() + 1);
        self.bytes.set(self.bytes.get() + bytes);
    }
}

fn tls(alpn: &[u8]) -> rustls::ClientConfig {
    let mut cfg = vane::certs::client::config(true, &[]).expect("TLS client");
    cfg.alpn_protocols = vec![alpn.to_vec()];
    cfg
}

fn request(path: &str) -> hyper::Request<()> {
    hyper::Request::get(format!("https://localhost{path}"))
        .body(())
        .expect("request")
}

type H3Send = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

async fn h3_connection(addr: SocketAddr) -> H3Send {
    let qc = quinn::crypto::rustls::QuicClientConfig::try_from(tls(b"h3")).expect("QUIC TLS");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(qc)));
    let conn = ep
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("HTTP/3");
    tokio::task::spawn_local(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        drop(ep);
    });
    send
}

async fn h3_get(send: &mut H3Send, path: &str) -> Option<u64> {
    let mut stream = send.send_request(request(path)).await.ok()?;
    stream.finish().await.ok()?;
    let resp = stream.recv_response().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut n = 0u64;
    while let Some(chunk) = stream.recv_data().await.ok()? {
        n += chunk.remaining() as u64;
    }
    Some(n)
}

type H2Send = hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>;

async fn h2_connection(addr: SocketAddr) -> H2Send {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls(b"h2")))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2");
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    send
}

async fn h2_get(send: &mut H2Send, path: &str) -> Option<u64> {
    let req = request(path).map(|()| http_body_util::Empty::new());
    let resp = send.send_request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            n += data.len() as u64;
        }
    }
    Some(n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 || !matches!(args[1].as_str(), "h3" | "h2") {
        eprintln!("usage: h3_load h3|h2 ADDR SECS CONNS STREAMS PATH");
        std::process::exit(2);
    }
    let h3 = args[1] == "h3";
    let addr: SocketAddr = args[2].parse().expect("address");
    let secs: u64 = args[3].parse().expect("seconds");
    let conns: usize = args[4].parse().expect("connections");
    let streams: usize = args[5].parse().expect("streams");
    let path = args[6].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tally = Rc::new(Tally::default());
    let local = tokio::task::LocalSet::new();
    let started = local.block_on(&rt, {
        let tally = tally.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let once = secs == 0;
            let mut workers = Vec::new();
            let mut started = None;
            for _ in 0..conns {
                // One connection, STREAMS request loops on it.
                let (h3s, h2s) = if h3 {
                    (Some(h3_connection(addr).await), None)
                } else {
                    (None, Some(h2_connection(addr).await))
                };
                started.get_or_insert_with(Instant::now);
                for _ in 0..streams {
                    let (mut h3s, mut h2s) = (h3s.clone(), h2s.clone());
                    let (tally, path) = (tally.clone(), path.clone());
                    workers.push(tokio::task::spawn_local(async move {
                        loop {
                            let got = match (&mut h3s, &mut h2s) {
                                (Some(s), _) => h3_get(s, &path).await,
                                (_, Some(s)) => h2_get(s, &path).await,
                                _ => None,
                            };
                            match got {
                                Some(n) => tally.add(n),
                                None => break,
                            }
                            if once || Instant::now() >= deadline {
                                break;
                            }
                        }
                    }));
                }
            }
            for w in workers {
                let _ = w.await;
            }
            started.unwrap_or_else(Instant::now)
        }
    });
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let (requests, bytes) = (tally.requests.get(), tally.bytes.get());
    if requests == 0 {
        eprintln!("no request completed");
        std::process::exit(1);
    }
    println!(
        "{:.0} {:.1}",
        requests as f64 / elapsed,
        bytes as f64 / 1e6 / elapsed
    );
}
