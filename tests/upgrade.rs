//! Hitless binary upgrade over real processes: `SIGUSR2` while keep-alive HTTP clients,
//! new-connection clients, a WebSocket, a long TCP connection and a forwarded QUIC connection
//! run. Nothing is refused or fails, the long-lived ones stay with the old process until they
//! end, and a new binary that fails or never becomes ready leaves the old one serving.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::ws::{ws_upgrade, ws_upstream};
use common::*;

/// Kills the processes upgrades started (they are not children of the test).
struct Reaper(Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// A copy of the vane binary the test may replace, as a package upgrade does.
fn installed(dir: &Path) -> PathBuf {
    let path = dir.join("vane");
    std::fs::copy(env!("CARGO_BIN_EXE_vane"), &path).expect("copy vane");
    path
}

/// Puts `bytes` at `path` the way package managers do (a new file renamed over the old).
fn replace(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename");
}

fn usr2(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-USR2", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -USR2 {pid}");
}

/// The PID the last upgrade started, from the old process's log.
fn started_pid(v: &Vane) -> Option<u32> {
    v.logs()
        .lines()
        .rev()
        .find_map(|l| l.split("upgrade: started ").nth(1))
        .and_then(|rest| rest.split(" as PID ").nth(1))
        .and_then(|rest| rest.split(';').next())
        .and_then(|pid| pid.trim().parse().ok())
}

/// A keep-alive HTTP/1.1 client as browsers and wrk behave: a request on a reused connection
/// that the server closed before answering is sent again on a new one (RFC 9112 9.3.1); any
/// other error counts as a failure.
fn keep_alive_client(
    port: u16,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) {
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        Some(BufReader::new(s))
    };
    let mut conn = connect();
    let mut reused = false;
    while !stop.load(Ordering::SeqCst) {
        let Some(r) = conn.as_mut() else {
            failed.fetch_add(1, Ordering::SeqCst);
            conn = connect();
            reused = false;
            continue;
        };
        let sent = r
            .get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: up.test\r\n\r\n")
            .is_ok();
        let mut status = String::new();
        let got = sent && r.read_line(&mut status).is_ok_and(|n| n > 0);
        if !got {
            if !reused {
                failed.fetch_add(1, Ordering::SeqCst);
            }
            conn = connect();
            reused = false;
            continue;
        }
        let (mut len, mut close) = (0usize, false);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let l = line.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            close |= l.starts_with("connection:") && l.contains("close");
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len];
        if status.starts_with("HTTP/1.1 200") && r.read_exact(&mut body).is_ok() {
            ok.fetch_add(1, Ordering::SeqCst);
        } else {
            failed.fetch_add(1, Ordering::SeqCst);
        }
        if close {
            conn = connect();
            reused = false;
        } else {
            reused = true;
        }
    }
}

fn gateway(
    cfg: &ConfigDir,
    echo: std::net::SocketAddr,
    quic_up: std::net::SocketAddr,
) -> (u16, u16, u16) {
    let (tcp, http, udp) = (free_port(), free_port(), free_port());
    cfg.tcp_proxy(tcp, echo);
    cfg.plain_http(http, "httpx");
    let ws = ws_upstream();
    cfg.write(
        "application/httpx.yaml",
        &format!(
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
          input: {{ status: 200, body: "ok" }}
"#,
            ws.port()
        ),
    );
    cfg.write(
        &format!("listener/[{udp}]/udp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: quic }\n",
    );
    cfg.write(
        "resolver/quic.yaml",
        &format!(
            "connection:\n  internal.transport.proxy:\n    input: {{ target.ip: 127.0.0.1, target.port: {} }}\n",
            quic_up.port()
        ),
    );
    (tcp, http, udp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_under_load_refuses_nothing_and_keeps_long_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = installed(dir.path());
    let echo = Echo::start("E");
    let (quic_up, quic_cert, _quic_ep) = common::quic::server("q.test", "Q");
    let cfg = ConfigDir::new();
    let (tcp, http, udp) = gateway(&cfg, echo.addr, quic_up);
    let mut v = Vane::start_bin(
        &cfg,
        Opts {
            env: vec![("UDP_SESSION_TIMEOUT_SECS", "3".into())],
            wait_ports: vec![tcp, http],
        },
        &bin,
    );
    let vane_udp = v.wait_udp(udp);
    let mut reaper = Reaper(Vec::new());

    // The long-lived ones, opened before the upgrade.
    let (mut ws, head) = ws_upgrade(http, "/ws");
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let mut held = Client::connect(tcp).expect("held connection");
    assert_eq!(held.ask("before").as_deref(), Some("E:before"));
    let qep = common::quic::client(&[&quic_cert], false);
    let quic = common::quic::connect(&qep, vane_udp, "q.test").await;
    assert_eq!(
        common::quic::ask(&quic, "before").await.as_deref(),
        Some("Q:before")
    );

    // The load: keep-alive HTTP clients and a new connection per request.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (fresh_ok, fresh_failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(std::thread::spawn(move || {
            keep_alive_client(http, stop, ok, failed)
        }));
    }
    {
        let (stop, ok, failed) = (stop.clone(), fresh_ok.clone(), fresh_failed.clone());
        load.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                if ask_once(tcp, &format!("n{i}")) == Some(format!("E:n{i}")) {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // The QUIC connection is in use throughout (a real one has keep-alives): its session must
    // not go idle in the old process.
    let pings = {
        let (stop, quic) = (stop.clone(), quic.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            while !stop.load(Ordering::SeqCst) {
                match tokio::time::timeout(Duration::from_secs(2), common::quic::ask(&quic, "ping"))
                    .await
                {
                    Ok(Some(a)) if a == "Q:ping" => ok += 1,
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;

    // A new package puts a new binary at the same path; SIGUSR2.
    replace(
        &bin,
        &std::fs::read(env!("CARGO_BIN_EXE_vane")).expect("read vane"),
    );
    let old_pid = v.pid();
    usr2(old_pid);
    assert!(
        v.wait_log(
            "this process stops accepting and drains",
            Duration::from_secs(30)
        ),
        "the upgrade did not complete:\n{}",
        v.logs()
    );
    let new_pid = started_pid(&v).expect("the new PID is logged");
    reaper.0.push(new_pid);
    assert_ne!(new_pid, old_pid);
    assert!(v.logs().contains("upgrade: took over"), "{}", v.logs());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join().expect("load thread");
    }
    let (pings_ok, pings_failed) = pings.await.expect("pinger");
    assert_eq!(
        pings_failed,
        0,
        "QUIC requests failed across the upgrade ({pings_ok} ok):\n{}",
        v.logs()
    );
    assert!(pings_ok >= 5, "{pings_ok}");

    // Long-lived connections stayed with the old process and still work.
    ws.write_all(b"after").expect("ws write");
    let mut got = [0u8; 5];
    ws.read_exact(&mut got)
        .expect("the WebSocket survives the upgrade");
    assert_eq!(&got, b"after");
    assert_eq!(held.ask("after").as_deref(), Some("E:after"));
    assert_eq!(
        common::quic::ask(&quic, "after").await.as_deref(),
        Some("Q:after"),
        "the forwarded QUIC connection survives the upgrade:\n{}",
        v.logs()
    );
    // New connections and the management API are the new process's.
    assert_eq!(ask_once(tcp, "fresh"), Some("E:fresh".into()));
    assert_eq!(v.get("/health").0, 200);

    let (k_ok, k_failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    let (n_ok, n_failed) = (
        fresh_ok.load(Ordering::SeqCst),
        fresh_failed.load(Ordering::SeqCst),
    );
    assert_eq!(
        k_failed,
        0,
        "keep-alive requests failed ({k_ok} ok):\n{}",
        v.logs()
    );
    assert_eq!(
        n_failed,
        0,
        "new connections failed ({n_ok} ok):\n{}",
        v.logs()
    );
    assert!(
        k_ok > 100 && n_ok > 50,
        "load ran: {k_ok} keep-alive, {n_ok} new"
    );

    // The old process ends once its last connections do.
    assert!(v.alive(), "the old process waits for its connections");
    drop(ws);
    drop(held);
    quic.close(0u32.into(), b"done");
    assert_eq!(
        v.wait_exit(Duration::from_secs(30)),
        Some(0),
        "the old process drains and exits 0:\n{}",
        v.logs()
    );
    assert_eq!(ask_once(tcp, "still"), Some("E:still".into()));
}

#[test]
fn a_failing_or_silent_new_binary_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = installed(dir.path());
    let echo = Echo::start("E");
    let cfg = ConfigDir::new();
    let tcp = free_port();
    cfg.tcp_proxy(tcp, echo.addr);
    let mut v = Vane::start_bin(
        &cfg,
        Opts {
            env: vec![("UPGRADE_TIMEOUT_SECS", "2".into())],
            wait_ports: vec![tcp],
        },
        &bin,
    );
    let _reaper = Reaper(Vec::new());
    replace(&bin, b"#!/bin/sh\necho 'broken build' >&2\nexit 3\n");
    usr2(v.pid());
    assert!(
        v.wait_log("upgrade failed", Duration::from_secs(10)),
        "{}",
        v.logs()
    );
    assert!(
        v.logs()
            .contains("exited (exit status: 3) before it was ready"),
        "{}",
        v.logs()
    );
    assert_eq!(ask_once(tcp, "a"), Some("E:a".into()));

    replace(&bin, b"#!/bin/sh\nsleep 30\n");
    usr2(v.pid());
    assert!(
        v.wait_log("did not become ready within 2s", Duration::from_secs(10)),
        "{}",
        v.logs()
    );
    assert!(v.alive());
    assert_eq!(ask_once(tcp, "b"), Some("E:b".into()));
    assert_eq!(v.count_log("this process carries on"), 2);
}
