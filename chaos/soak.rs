//! Soak: mixed traffic for a while with metrics enabled and never scraped (or scraped every
//! `SOAK_SCRAPE_SECS`), and the process's RSS and open descriptors sampled every second. After
//! the warm-up the RSS must stay within `SOAK_MAX_GROWTH_MB` of where it was and must not climb
//! (at most `SOAK_MAX_DRIFT_MB` between the first and the last third of the samples); the
//! open descriptors must not climb either (at most `SOAK_MAX_FD_GROWTH` between the same
//! thirds). When the traffic
//! stops, every session ends: the live-connection and forwarded-QUIC gauges return to 0 and
//! the descriptors to within `SOAK_MAX_FD_GROWTH` of the idle process's.
//!
//! The traffic: keep-alive and new-connection HTTP/1.1, HTTP/2, HTTP/3, forwarded QUIC (a new
//! session per connection, routed by SNI), requests forwarded to a real upstream and to upstream authorities taken from a header (a new one per request, so
//! every capped map and label family is fed), L4 relays, UDP datagrams from new sockets,
//! config reloads every few seconds (file rewrites and `POST /reload`) and actor panics.
//!
//! CI runs the 60 s form (`SOAK_SECS`, default 60). The long form, as an operator would:
//! `SOAK_SECS=600 cargo test --release --test chaos_soak -- --nocapture` (and again with
//! `SOAK_SCRAPE_SECS=60`); the curves are printed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::quic;
use common::*;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A keep-alive HTTP/1.1 upstream answering `ok` to every request, until dropped.
struct HttpUpstream {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl HttpUpstream {
    fn start() -> HttpUpstream {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let port = l.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((s, _)) = l.accept() else {
                    thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let st = st.clone();
                thread::spawn(move || serve_ok(s, &st));
            }
        });
        HttpUpstream { port, stop }
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_ok(s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while !stop.load(Ordering::SeqCst) {
        // One request: its head up to the blank line (GETs only, no body).
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        if w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

/// The application of the HTTP, HTTP/2 and HTTP/3 ports.
fn app(upstream: u16) -> String {
    format!(
        r#"pipeline:
  internal.common.match:
    input: {{ left: "{{{{req.path}}}}", operator: "==", right: "/fwd" }}
    output:
      "true":
        internal.driver.upstream:
          input: {{ url_prefix: "http://{{{{req.header.x-target}}}}" }}
          output:
            success: {{ internal.terminator.response: {{}} }}
            failure: {{ internal.terminator.response: {{ input: {{ status: 502 }} }} }}
      "false":
        internal.common.match:
          input: {{ left: "{{{{req.path}}}}", operator: "==", right: "/up" }}
          output:
            "true":
              internal.driver.upstream:
                input: {{ url_prefix: "http://127.0.0.1:{upstream}" }}
                output:
                  success: {{ internal.terminator.response: {{}} }}
                  failure: {{ internal.terminator.response: {{ input: {{ status: 502 }} }} }}
            "false":
              internal.terminator.response:
                input: {{ status: 200, body: "hello {{{{req.path}}}} {{{{conn.ip}}}}" }}
"#
    )
}

/// A new upstream authority per call: distinct loopback addresses where nothing listens.
fn target(i: u64) -> String {
    format!(
        "127.{}.{}.{}:1",
        (i / 65_025) % 254 + 1,
        (i / 255) % 255,
        i % 255 + 1
    )
}

/// Reads one HTTP/1.1 response (head and Content-Length body); its status.
fn read_response(r: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(status)
}

struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    seq: AtomicU64,
}

impl Counts {
    fn record(&self, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn next_target(&self) -> String {
        target(self.seq.fetch_add(1, Ordering::Relaxed))
    }
}

fn keepalive_h1(port: u16, until: Instant, c: &Counts) {
    while Instant::now() < until {
        let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
            c.record(false);
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(mut w) = s.try_clone() else { continue };
        let mut r = BufReader::new(s);
        for i in 0..500u64 {
            if Instant::now() >= until {
                return;
            }
            let req = match i % 3 {
                0 => "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
                1 => "GET /up HTTP/1.1\r\nHost: a\r\n\r\n".to_string(),
                _ => format!(
                    "GET /fwd HTTP/1.1\r\nHost: a\r\nx-target: {}\r\n\r\n",
                    c.next_target()
                ),
            };
            if w.write_all(req.as_bytes()).is_err() {
                c.record(false);
                break;
            }
            match read_response(&mut r) {
                Some(200 | 502) => c.record(true),
                _ => {
                    c.record(false);
                    break;
                }
            }
        }
    }
}

fn new_conn_h1(port: u16, until: Instant, c: &Counts) {
    while Instant::now() < until {
        let (status, _) = http(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            "GET",
            "/up",
            None,
        );
        c.record(status == 200);
    }
}

fn h2(port: u16, until: Instant, c: &Counts) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        while Instant::now() < until {
            let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                c.record(false);
                continue;
            };
            let io = hyper_util::rt::TokioIo::new(tcp);
            let Ok((mut send, conn)) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
            else {
                c.record(false);
                continue;
            };
            tokio::spawn(conn);
            for i in 0..200u64 {
                if Instant::now() >= until {
                    return;
                }
                let mut req = hyper::Request::get(if i.is_multiple_of(2) {
                    "/hello"
                } else {
                    "/fwd"
                });
                if i % 2 == 1 {
                    req = req.header("x-target", c.next_target());
                }
                let req = req
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .expect("request");
                match send.send_request(req).await {
                    Ok(resp) => {
                        let ok = matches!(resp.status().as_u16(), 200 | 502);
                        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                        c.record(ok);
                    }
                    Err(_) => {
                        c.record(false);
                        break;
                    }
                }
            }
        }
    });
}

fn h3(port: u16, cert: rustls::pki_types::CertificateDer<'static>, until: Instant, c: &Counts) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    rt.block_on(async {
        while Instant::now() < until {
            let connected =
                tokio::time::timeout(Duration::from_secs(5), http3::client(addr, cert.clone()))
                    .await;
            let Ok(mut send) = connected else {
                c.record(false);
                continue;
            };
            for _ in 0..50 {
                if Instant::now() >= until {
                    return;
                }
                let got =
                    tokio::time::timeout(Duration::from_secs(5), http3::get(&mut send, "/hello"))
                        .await;
                c.record(matches!(got, Ok((s, _)) if s == 200));
            }
        }
    });
}

/// Forwarded QUIC: a new client endpoint (a new UDP session in vane) per connection, routed by
/// SNI to a QUIC echo server, 20 round trips each.
fn quic_forward(port: u16, cert: common::tls::Cert, until: Instant, c: &Counts) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    rt.block_on(async {
        while Instant::now() < until {
            let ep = quic::client(&[&cert], false);
            let Ok(connecting) = ep.connect(to, "fwd.test") else {
                c.record(false);
                continue;
            };
            let conn = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                Ok(Ok(conn)) => conn,
                _ => {
                    c.record(false);
                    continue;
                }
            };
            for i in 0..20 {
                if Instant::now() >= until {
                    break;
                }
                let msg = format!("q{i}");
                c.record(quic::ask(&conn, &msg).await.as_deref() == Some(&*format!("F:{msg}")));
            }
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
        }
    });
}

fn l4_relay(port: u16, until: Instant, c: &Counts) {
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        c.record(ask_once(port, &format!("m{i}")).as_deref() == Some(&*format!("T:m{i}")));
    }
}

fn udp(port: u16, until: Instant, c: &Counts) {
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        // A new client address per datagram: a new session each time.
        let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let got = udp_ask(&s, port, &format!("d{i}"), Duration::from_secs(2));
        c.record(got.as_deref() == Some(&*format!("U:d{i}")));
        thread::sleep(Duration::from_millis(2));
    }
}

/// Least-squares slope of `ys` (one sample per second), in units per second.
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in ys.iter().enumerate() {
        let dx = i as f64 - mx;
        num += dx * (y - my);
        den += dx * dx;
    }
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[test]
fn mixed_traffic_leaves_memory_flat() {
    let secs = env_num("SOAK_SECS", 60).max(8);
    let max_fd_growth = env_num("SOAK_MAX_FD_GROWTH", 128) as f64;
    let scrape = env_num("SOAK_SCRAPE_SECS", 0);
    let max_growth_kib = env_num("SOAK_MAX_GROWTH_MB", 24) * 1024;
    let upstream = HttpUpstream::start();
    let echo = Echo::start("T");
    let uecho = UdpEcho::start("U", Duration::ZERO);
    let cfg = ConfigDir::new();
    let (http_port, relay_port, udp_port, quic_port, fwd_port) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let cert = http3::terminating_config(&cfg, quic_port, &app(upstream.port));
    // The `quic` resolver forwards `fwd.test` to a QUIC echo server (routed by the SNI of its
    // Initial packets) and terminates the rest as HTTP/3. Forwarded clients use a port of their
    // own: a client port the kernel hands out again would otherwise meet the session of an
    // earlier connection on it (a new Initial on an old session: see issue 8).
    let quic_upstream = tokio::runtime::Runtime::new().expect("runtime");
    let (fwd, fwd_cert, _fwd_ep) = quic_upstream.block_on(async { quic::server("fwd.test", "F") });
    cfg.write(
        "resolver/quic.yaml",
        &format!(
            r#"connection:
  internal.common.match:
    input: {{ left: "{{{{quic.sni}}}}", right: fwd.test }}
    output:
      "true": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {} }} }} }}
      "false": {{ internal.transport.upgrade: {{ input: {{ protocol: httpx }} }} }}
"#,
            fwd.port()
        ),
    );
    cfg.write(
        &format!("listener/[{fwd_port}]/udp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: quic }\n",
    );
    cfg.plain_http(http_port, "httpx");
    cfg.tcp_proxy(relay_port, echo.addr);
    cfg.write(
        &format!("listener/[{udp_port}]/udp.yaml"),
        &proxy_flow(uecho.addr),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("LOG_LEVEL", "info".into()),
                ("ACCESS_LOG", "off".into()),
                ("UDP_SESSION_TIMEOUT_SECS", "2".into()),
                ("MAX_CONNECTIONS_PER_IP", "100000".into()),
                // Small caps, so the bounded maps fill during the warm-up and what follows
                // shows whether anything else grows.
                ("METRICS_MAX_LABEL_VALUES", "100".into()),
                ("UPSTREAM_MAX_TRACKED", "500".into()),
            ],
            wait_ports: vec![http_port, relay_port],
        },
    );
    v.wait_udp(udp_port);
    v.wait_udp(fwd_port);
    let pid = v.pid();
    let idle_fds = open_fds(pid) as f64;
    let counts: Vec<Arc<Counts>> = (0..8)
        .map(|_| {
            Arc::new(Counts {
                ok: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                seq: AtomicU64::new(0),
            })
        })
        .collect();
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut workers = Vec::new();
    let spawn = |f: Box<dyn FnOnce() + Send>| thread::spawn(f);
    let c = counts.clone();
    workers.push(spawn(Box::new(move || {
        keepalive_h1(http_port, until, &c[0])
    })));
    let c = counts.clone();
    workers.push(spawn(Box::new(move || {
        keepalive_h1(http_port, until, &c[1])
    })));
    let c = counts.clone();
    workers.push(spawn(Box::new(move || {
        new_conn_h1(http_port, until, &c[2])
    })));
    let c = counts.clone();
    workers.push(spawn(Box::new(move || h2(http_port, until, &c[3]))));
    let c = counts.clone();
    let cert2 = cert.clone();
    workers.push(spawn(Box::new(move || h3(quic_port, cert2, until, &c[4]))));
    let c = counts.clone();
    workers.push(spawn(Box::new(move || l4_relay(relay_port, until, &c[5]))));
    let c = counts.clone();
    workers.push(spawn(Box::new(move || udp(udp_port, until, &c[6]))));
    let c = counts.clone();
    workers.push(spawn(Box::new(move || {
        quic_forward(fwd_port, fwd_cert, until, &c[7])
    })));

    let mut rss = Vec::new();
    let mut fds = Vec::new();
    let mut tick = 0u64;
    while Instant::now() < until {
        thread::sleep(Duration::from_secs(1));
        tick += 1;
        rss.push(rss_kib(pid) as f64);
        fds.push(open_fds(pid) as f64);
        if tick.is_multiple_of(3) {
            // A reload by the watcher (the file changes) and one through the API.
            cfg.write(
                "application/httpx.yaml",
                &format!("# reload {tick}\n{}", app(upstream.port)),
            );
            assert_eq!(v.post("/reload").0, 200);
        }
        if tick.is_multiple_of(5) {
            let actor = match tick % 15 {
                0 => "quic",
                10 => "memory",
                _ => "registries/health",
            };
            assert_eq!(v.post(&format!("/chaos/panic/{actor}")).0, 202);
        }
        if scrape > 0 && tick.is_multiple_of(scrape) {
            assert!(!v.metrics_text().is_empty());
        }
    }
    for w in workers {
        w.join().expect("worker");
    }
    let names = [
        "h1 keep-alive",
        "h1 keep-alive",
        "h1 new conn",
        "h2",
        "h3",
        "l4 relay",
        "udp",
        "quic forwarded",
    ];
    let mut total = 0;
    for (name, c) in names.iter().zip(&counts) {
        let (ok, failed) = (
            c.ok.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        );
        eprintln!("{name}: {ok} ok, {failed} failed");
        assert!(ok > 0, "{name}: nothing served");
        total += ok;
    }
    let warm = rss.len() * 2 / 5;
    let after = &rss[warm..];
    let base = rss[warm.saturating_sub(1)];
    let peak = after.iter().cloned().fold(0.0, f64::max);
    let trend = slope(after);
    eprintln!(
        "soak {secs}s, {total} exchanges, scrape every {scrape}s (0: never); RSS KiB per second: {:?}",
        rss.iter().map(|k| *k as u64).collect::<Vec<_>>()
    );
    eprintln!("after warm-up: base {base} KiB, peak {peak} KiB, trend {trend:.1} KiB/s");
    assert!(
        peak - base <= max_growth_kib as f64,
        "RSS grew by {} KiB after warm-up (bound {max_growth_kib} KiB)",
        peak - base
    );
    // A leak shows as a climb: the last third of the samples after warm-up against the first
    // third (means, so a single noisy second does not decide).
    let third = (after.len() / 3).max(1);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let drift = mean(&after[after.len() - third..]) - mean(&after[..third]);
    let max_drift = env_num("SOAK_MAX_DRIFT_MB", 6) as f64 * 1024.0;
    eprintln!("drift (last third - first third): {drift:.0} KiB");
    assert!(
        drift <= max_drift,
        "RSS climbed by {drift:.0} KiB after warm-up (bound {max_drift} KiB)"
    );
    // Descriptors follow the traffic in flight (new connections, UDP sessions waiting out
    // their timeout), so one sample says little; a leak shows as a climb of the mean.
    let fds_after = &fds[warm..];
    let fd_third = (fds_after.len() / 3).max(1);
    let fd_drift = mean(&fds_after[fds_after.len() - fd_third..]) - mean(&fds_after[..fd_third]);
    eprintln!(
        "open descriptors per second (idle {idle_fds}): {:?}",
        fds.iter().map(|k| *k as u64).collect::<Vec<_>>()
    );
    eprintln!("descriptor drift (last third - first third): {fd_drift:.0}");
    assert!(
        fd_drift <= max_fd_growth,
        "open descriptors climbed by {fd_drift:.0} after warm-up (bound {max_fd_growth})"
    );
    // The traffic has stopped: every session ends (UDP ones after their 2 s idle timeout),
    // and with them their tasks, sockets and gauges.
    let settled = wait_until(Duration::from_secs(15), || {
        v.metric_sum("vane_connections_active") == 0.0
            && v.metric("vane_quic_sessions ").unwrap_or(0.0) == 0.0
            && (open_fds(pid) as f64) <= idle_fds + max_fd_growth
    });
    assert!(
        settled,
        "after the traffic: {} live connections, {:?} forwarded QUIC connections, {} descriptors (idle {idle_fds})\n{}",
        v.metric_sum("vane_connections_active"),
        v.metric("vane_quic_sessions "),
        open_fds(pid),
        v.metrics_text()
    );
    eprintln!(
        "after the traffic: 0 live connections, descriptors {} (idle {idle_fds})",
        open_fds(pid)
    );
    let mut v = v;
    assert!(v.alive(), "vane survived the soak");
}
