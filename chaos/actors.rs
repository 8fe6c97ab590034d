//! Chaos suite: panic every actor through the chaos routes while traffic flows through a
//! listener, and check that the actor restarts (status and `vane_actor_restarts_total`), that
//! the traffic lost nothing, and that the process never exits. Then panic one session and
//! check that only its connection closes.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

/// A connection that keeps exchanging numbered lines and records any loss.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(port: u16) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let lost = Arc::new(AtomicUsize::new(0));
        let (s, o, l) = (stop.clone(), ok.clone(), lost.clone());
        let handle = thread::spawn(move || {
            let mut c = Client::connect(port).expect("traffic connection");
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                let line = format!("seq-{i}");
                match c.ask(&line) {
                    Some(r) if r == format!("T:{line}") => o.fetch_add(1, Ordering::SeqCst),
                    _ => l.fetch_add(1, Ordering::SeqCst),
                };
                i += 1;
                thread::sleep(Duration::from_millis(5));
            }
        });
        Traffic {
            stop,
            ok,
            lost,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.lost.load(Ordering::SeqCst),
        )
    }
}

#[test]
fn every_actor_restarts_after_a_panic_while_traffic_flows() {
    let up = Echo::start("T");
    let cfg = ConfigDir::new();
    let (traffic_port, other_port) = (free_port(), free_port());
    cfg.tcp_proxy(traffic_port, up.addr);
    cfg.tcp_proxy(other_port, up.addr);
    let mut v = Vane::start(&cfg, &[traffic_port, other_port]);
    let traffic = Traffic::start(traffic_port);
    let actors = [
        "config".to_string(),
        "registries".into(),
        "registries/nodes".into(),
        "registries/certs".into(),
        "registries/plugins".into(),
        "registries/health".into(),
        "memory".into(),
        "quic".into(),
        format!("listeners/tcp:{other_port}"),
        format!("listeners/tcp:{traffic_port}"),
        "listeners".into(),
        "metrics".into(),
        "management".into(),
    ];
    for name in &actors {
        let before = v
            .actor(name)
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("{name} is listed in /actors"));
        let (code, body) = v.post(&format!("/chaos/panic/{name}"));
        assert_eq!(code, 202, "{name}: {body}");
        assert!(
            wait_until(Duration::from_secs(5), || v.actor(name)
                == Some(("running".into(), before + 1))),
            "{name} restarted: {:?}\n{}",
            v.actor(name),
            v.logs()
        );
        let metric = format!("vane_actor_restarts_total{{actor=\"{name}\"}}");
        assert!(
            wait_until(Duration::from_secs(3), || v.metric(&metric).unwrap_or(0.0)
                >= 1.0),
            "{metric}"
        );
        assert!(v.alive(), "process alive after panicking {name}");
    }
    // Listeners re-bound: new connections work on both ports.
    assert!(wait_until(Duration::from_secs(3), || ask_once(
        other_port, "new"
    )
    .as_deref()
        == Some("T:new")));
    assert!(wait_until(Duration::from_secs(3), || ask_once(
        traffic_port,
        "new"
    )
    .as_deref()
        == Some("T:new")));
    let (ok, lost) = traffic.finish();
    assert_eq!(lost, 0, "the open connection lost nothing ({ok} exchanges)");
    assert!(ok > 50, "traffic kept flowing: {ok}");
    // The restarted config actor still reloads.
    let third = free_port();
    cfg.tcp_proxy(third, up.addr);
    assert!(
        wait_until(Duration::from_millis(2500), || ask_once(third, "x")
            .as_deref()
            == Some("T:x")),
        "{}",
        v.logs()
    );
    assert!(v.alive());
}

#[test]
fn a_stalled_actor_recovers_and_traffic_does_not_wait_for_it() {
    let up = Echo::start("T");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let v = Vane::start(&cfg, &[port]);
    assert_eq!(v.post("/chaos/stall/listeners?ms=1500").0, 202);
    assert_eq!(v.post("/chaos/stall/config?ms=1500").0, 202);
    let start = std::time::Instant::now();
    // A reload needs the stalled actors: its answer shows they really were stalled...
    let mgmt = v.mgmt;
    let reload = std::thread::spawn(move || {
        let (code, _) = http(mgmt, "POST", "/reload", Some(TOKEN));
        (code, std::time::Instant::now())
    });
    // ...while a connection through the data plane is served at once.
    assert_eq!(ask_once(port, "fast").as_deref(), Some("T:fast"));
    let served = start.elapsed();
    let (code, reloaded_at) = reload.join().expect("reload thread");
    assert_eq!(code, 200);
    let stalled = reloaded_at.duration_since(start);
    assert!(
        stalled >= Duration::from_millis(1200),
        "the reload was answered after {stalled:?}: the actors were not stalled"
    );
    assert!(
        served < Duration::from_millis(1000),
        "the data plane waited on a mailbox ({served:?})"
    );
    assert!(wait_until(Duration::from_secs(4), || v
        .actor("listeners")
        .map(|a| a.0)
        == Some("running".into())));
}

#[test]
fn a_session_panic_closes_only_its_connection() {
    let up = Echo::start("T");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let mut v = Vane::start(&cfg, &[port]);
    let mut survivor = Client::connect(port).expect("connect");
    assert_eq!(survivor.ask("before").as_deref(), Some("T:before"));
    let (code, body) = v.post(&format!("/chaos/panic/listeners/tcp:{port}/sessions"));
    assert_eq!(code, 202, "{body}");
    let mut victim = Client::connect(port).expect("connect");
    assert_eq!(
        victim.ask("doomed"),
        None,
        "the panicking session's connection is closed"
    );
    assert_eq!(
        survivor.ask("after").as_deref(),
        Some("T:after"),
        "other connections carry on"
    );
    assert_eq!(
        ask_once(port, "new").as_deref(),
        Some("T:new"),
        "the listener carries on"
    );
    let metric = format!("vane_session_panics_total{{listener=\"tcp:{port}\"}}");
    assert!(
        wait_until(Duration::from_secs(3), || v.metric(&metric) == Some(1.0)),
        "{}",
        v.metrics_text()
    );
    assert!(v.logs().contains("session panicked"));
    assert!(v.alive());
}

#[test]
fn chaos_routes_need_the_flag_and_the_token() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, "127.0.0.1:9".parse().expect("addr"));
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("CHAOS_ENDPOINTS", "false".into())],
            wait_ports: vec![port],
        },
    );
    assert_eq!(v.post("/chaos/panic/memory").0, 404);
    assert_eq!(http(v.mgmt, "GET", "/actors", None).0, 401);
    assert_eq!(
        http(v.mgmt, "GET", "/actors", Some("wrong-token-0123456789")).0,
        401
    );
    assert_eq!(v.actor("memory").map(|a| a.1), Some(0));
}

#[test]
fn an_actor_that_keeps_crashing_exhausts_the_root_budget_and_the_process_exits_non_zero() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, "127.0.0.1:9".parse().expect("addr"));
    let mut v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("RESTART_MAX", "3".into())],
            wait_ports: vec![port],
        },
    );
    // 3 restarts per window are absorbed; the 4th crash of a root child ends the process.
    for i in 0..10 {
        if !v.alive() {
            break;
        }
        let _ = v.post("/chaos/panic/memory");
        let _ = wait_until(Duration::from_secs(2), || {
            v.actor("memory").map(|a| a.1) == Some(i + 1) || !v.alive()
        });
    }
    assert_eq!(v.wait_exit(Duration::from_secs(5)), Some(1), "{}", v.logs());
    assert!(v.logs().contains("restart budget exhausted"));
}

#[test]
fn a_panic_inside_an_http_request_closes_only_its_connection() {
    use std::io::{Read, Write};
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: fine }\n",
    );
    let mut v = Vane::start(&cfg, &[port]);
    let get = |s: &mut std::net::TcpStream| -> Option<String> {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).to_string())
    };
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    };
    let mut survivor = connect();
    assert!(get(&mut survivor).is_some_and(|r| r.ends_with("fine")));
    let (code, body) = v.post(&format!("/chaos/panic/listeners/tcp:{port}/sessions"));
    assert_eq!(code, 202, "{body}");
    let mut victim = connect();
    assert_eq!(
        get(&mut victim),
        None,
        "the panicking request's connection is closed"
    );
    assert!(
        get(&mut survivor).is_some_and(|r| r.ends_with("fine")),
        "a keep-alive connection opened before carries on"
    );
    assert!(get(&mut connect()).is_some_and(|r| r.ends_with("fine")));
    let metric = format!("vane_session_panics_total{{listener=\"tcp:{port}\"}}");
    assert!(wait_until(Duration::from_secs(3), || v.metric(&metric) == Some(1.0)));
    assert!(v.alive());
}

/// The config has one writer: `POST /reload` is answered by the `config` actor, so a stalled
/// actor delays the answer (a second writer beside it would answer at once).
#[test]
fn an_api_reload_goes_through_the_config_actor() {
    let up = Echo::start("T");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let v = Vane::start(&cfg, &[port]);
    assert_eq!(v.post("/chaos/stall/config?ms=1500").0, 202);
    let start = std::time::Instant::now();
    let (code, body) = v.post("/reload");
    assert_eq!(code, 200, "{body}");
    assert!(
        start.elapsed() >= Duration::from_millis(1200),
        "answered after {:?}, before the stalled actor could run the reload",
        start.elapsed()
    );
    assert_eq!(ask_once(port, "after").as_deref(), Some("T:after"));
}
