//! Reload endurance: a hundred config versions applied through `POST /reload` while
//! keep-alive HTTP clients, a relayed TCP stream and a WebSocket tunnel run the whole time.
//! Not one request may fail, the stream and the tunnel stay intact, and the last version is
//! the one in force.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::ws::{ws_upgrade, ws_upstream};
use common::*;

/// The application: `/ws` is tunnelled to the WebSocket upstream, everything else is
/// answered with the config version.
fn app(version: usize, ws: std::net::SocketAddr) -> String {
    format!(
        r#"pipeline:
  internal.common.match:
    input: {{ left: "{{{{req.path}}}}", operator: "==", right: "/ws" }}
    output:
      "true":
        internal.driver.upstream:
          input: {{ url_prefix: "http://127.0.0.1:{}", websocket: true }}
          output:
            success: {{ internal.terminator.response: {{}} }}
            failure: {{ internal.terminator.response: {{ input: {{ status: 502 }} }} }}
      "false":
        internal.terminator.response:
          input: {{ status: 200, body: "v{version}" }}
"#,
        ws.port()
    )
}

/// One keep-alive client: requests until `stop`, checking every answer; returns (requests,
/// failures with their reasons).
fn keep_alive_client(port: u16, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut done = 0;
    let mut failures = Vec::new();
    let mut last = 0usize;
    while !stop.load(Ordering::SeqCst) && done < 200_000 {
        let r = h1(&mut s, &["GET /version HTTP/1.1\r\nHost: x\r\n\r\n"]);
        done += 1;
        match r.first() {
            Some((200, _, body)) => {
                let v: usize = body.trim_start_matches('v').parse().unwrap_or(0);
                if v < last {
                    failures.push(format!("version went back from {last} to {v}"));
                }
                last = v;
            }
            other => {
                failures.push(format!("request {done}: {other:?}"));
                break;
            }
        }
    }
    (done, failures)
}

#[test]
fn a_hundred_reloads_under_traffic_fail_nothing() {
    const RELOADS: usize = 100;
    let echo = Echo::start("T");
    let ws = ws_upstream();
    let cfg = ConfigDir::new();
    let (http, tcp) = (free_port(), free_port());
    cfg.plain_http(http, "httpx");
    cfg.write("application/httpx.yaml", &app(0, ws));
    cfg.tcp_proxy(tcp, echo.addr);
    let v = Vane::start(&cfg, &[http, tcp]);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || keep_alive_client(http, stop))
        })
        .collect();
    let mut stream = Client::connect(tcp).expect("tcp stream");
    let (mut tunnel, head) = ws_upgrade(http, "/ws");
    assert!(head.starts_with("http/1.1 101"), "{head}");

    let applied = Arc::new(AtomicUsize::new(0));
    for version in 1..=RELOADS {
        cfg.write("application/httpx.yaml", &app(version, ws));
        let (code, body) = v.post("/reload");
        assert_eq!(code, 200, "reload {version}: {body}");
        applied.fetch_add(1, Ordering::SeqCst);
        if version % 10 == 0 {
            let line = format!("stream {version}");
            assert_eq!(
                stream.ask(&line),
                Some(format!("T:{line}")),
                "the TCP stream broke at reload {version}"
            );
            let frame = format!("frame {version}");
            tunnel.write_all(frame.as_bytes()).expect("tunnel write");
            let mut got = vec![0u8; frame.len()];
            tunnel
                .read_exact(&mut got)
                .unwrap_or_else(|e| panic!("the WebSocket tunnel broke at reload {version}: {e}"));
            assert_eq!(got, frame.as_bytes());
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        let (done, failures) = c.join().expect("client");
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        total += done;
    }
    assert!(
        total >= RELOADS,
        "the clients ran through the reloads ({total} requests)"
    );

    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = h1(&mut s, &["GET /version HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert_eq!(
        (r[0].0, r[0].2.as_str()),
        (200, format!("v{RELOADS}").as_str()),
        "the last version is in force"
    );
    let reloads = v
        .metric("vane_config_reloads_total{result=\"applied\"}")
        .unwrap_or(0.0);
    assert!(
        reloads >= RELOADS as f64,
        "{reloads} reloads applied for {RELOADS} versions"
    );
    assert_eq!(
        stream.ask("end").as_deref(),
        Some("T:end"),
        "the stream outlived every reload"
    );
}
