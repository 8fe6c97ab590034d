//! Hot reload: ports open and close with their directories, a changed flow applies to new
//! connections only, garbage keeps the last good version, identical content restarts nothing.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Settled changes must take effect within 2.5 s.
const SETTLE: Duration = Duration::from_millis(2500);

#[test]
fn add_change_break_and_remove_a_listener() {
    let a = Echo::start("A");
    let b = Echo::start("B");
    let cfg = ConfigDir::new();
    let base = free_port();
    cfg.tcp_proxy(base, a.addr);
    let v = Vane::start(&cfg, &[base]);

    // Add a port.
    let port = free_port();
    cfg.tcp_proxy(port, a.addr);
    assert!(
        wait_until(SETTLE, || ask_once(port, "x").as_deref() == Some("A:x")),
        "new port opens\n{}",
        v.logs()
    );
    assert!(v.logs().contains(&format!("PORT {port} TCP UP")));
    assert!(v
        .logs()
        .contains("Config change signal received for TCP Listener"));

    // Change its flow while a connection is open: the open one keeps its target.
    let mut open = Client::connect(port).expect("connect");
    assert_eq!(open.ask("old").as_deref(), Some("A:old"));
    cfg.tcp_proxy(port, b.addr);
    assert!(
        wait_until(SETTLE, || ask_once(port, "y").as_deref() == Some("B:y")),
        "new connections use the new flow\n{}",
        v.logs()
    );
    assert_eq!(
        open.ask("still").as_deref(),
        Some("A:still"),
        "the open connection survived the reload on its old flow"
    );
    assert!(v.logs().contains(&format!("PORT {port} TCP RELOAD")));

    // Garbage: refused, the last good version keeps serving; the 0.9.2 lines scripts wait
    // for are logged (the change signal too, although nothing was applied).
    let signals = v
        .logs()
        .matches("Config change signal received for TCP Listener")
        .count();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        "connection:\n  internal.transport.proxy: [ broken\n",
    );
    assert!(
        v.wait_log(
            &format!("New TCP config is invalid. Keeping last known good version. Error: [{port}]"),
            SETTLE + Duration::from_secs(1)
        ),
        "{}",
        v.logs()
    );
    // Logged by the loader, apart from the listener's line above: waited for, not read at once.
    assert!(
        v.wait_log("keeping last known good version", SETTLE),
        "{}",
        v.logs()
    );
    assert!(
        v.logs()
            .matches("Config change signal received for TCP Listener")
            .count()
            > signals,
        "{}",
        v.logs()
    );
    assert_eq!(ask_once(port, "z").as_deref(), Some("B:z"));
    assert!(
        v.metric("vane_config_reloads_total{result=\"rejected\"}")
            .unwrap_or(0.0)
            >= 1.0,
        "{}",
        v.metrics_text()
    );

    // Remove the port: it closes; the other port is untouched.
    cfg.remove(&format!("listener/[{port}]"));
    assert!(
        wait_until(SETTLE, || TcpStream::connect(("127.0.0.1", port)).is_err()),
        "port closes\n{}",
        v.logs()
    );
    assert!(v.logs().contains(&format!("PORT {port} TCP DOWN")));
    assert_eq!(ask_once(base, "base").as_deref(), Some("A:base"));
    assert_eq!(
        open.ask("after removal").as_deref(),
        Some("A:after removal"),
        "open connections outlive their listener"
    );
}

#[test]
fn identical_content_restarts_nothing_and_hidden_files_are_ignored() {
    let a = Echo::start("A");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, a.addr);
    let v = Vane::start(&cfg, &[port]);
    let ups = v.count_log(&format!("PORT {port} TCP UP"));
    std::thread::sleep(Duration::from_millis(300));
    let unchanged = v.count_log("config reloaded: nothing changed");
    cfg.tcp_proxy(port, a.addr);
    assert!(
        wait_until(SETTLE, || v.count_log("config reloaded: nothing changed")
            > unchanged),
        "{}",
        v.logs()
    );
    let before = v.count_log("config reloaded");
    cfg.write(&format!("listener/[{port}]/.tcp.yaml.swp"), "garbage");
    cfg.write(".reload", "x");
    std::thread::sleep(SETTLE);
    assert_eq!(
        v.count_log("config reloaded"),
        before,
        "hidden files trigger nothing\n{}",
        v.logs()
    );
    assert_eq!(
        v.count_log(&format!("PORT {port} TCP UP")),
        ups,
        "no rebind"
    );
    assert_eq!(ask_once(port, "ok").as_deref(), Some("A:ok"));
}

#[test]
fn an_emptied_listener_file_closes_the_port() {
    let a = Echo::start("A");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, a.addr);
    let _v = Vane::start(&cfg, &[port]);
    cfg.write(&format!("listener/[{port}]/tcp.yaml"), "");
    assert!(wait_until(SETTLE, || TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_err()));
}

#[test]
fn post_reload_answers_with_the_validation_result() {
    let a = Echo::start("A");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, a.addr);
    let v = Vane::start(&cfg, &[port]);
    let (code, body) = v.post("/reload");
    assert_eq!(code, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(j["data"]["valid"], true);
    // 0.9.2's route answers `reloaded` and `timestamp` too.
    let (code, body) = v.post("/config/reload");
    assert_eq!(code, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(j["data"]["reloaded"], serde_json::json!(["all"]));
    let stamp = j["data"]["timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "an RFC 3339 UTC timestamp: {stamp}"
    );
    cfg.write(
        "listener/[1]/tcp.yaml",
        "connection:\n  internal.nope: {}\n",
    );
    let (code, body) = v.post("/reload");
    assert_eq!(code, 422, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(j["data"]["valid"], false);
    let problems = j["data"]["problems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        problems.iter().any(|p| p.as_str().is_some_and(
            |s| s.contains("listener/[1]/tcp.yaml: connection.internal.nope: unknown plugin")
        )),
        "{body}"
    );
    assert_eq!(
        http(v.mgmt, "POST", "/reload", None).0,
        401,
        "token required"
    );
    assert_eq!(ask_once(port, "still").as_deref(), Some("A:still"));
}

/// `SIGHUP` reloads as `POST /reload` does (`systemctl reload`), and logs the outcome; a bad
/// file then keeps the running version. Without a handler the signal would end the process.
#[test]
fn sighup_reloads_and_keeps_the_process() {
    let a = Echo::start("A");
    let b = Echo::start("B");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, a.addr);
    let mut v = Vane::start(&cfg, &[port]);
    let hup = |pid: u32| {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    cfg.tcp_proxy(port, b.addr);
    hup(v.pid());
    assert!(
        v.wait_log("✓ reload (SIGHUP)", SETTLE),
        "the reload's outcome is logged\n{}",
        v.logs()
    );
    assert!(
        wait_until(SETTLE, || ask_once(port, "x").as_deref() == Some("B:x")),
        "the new version serves\n{}",
        v.logs()
    );
    assert!(v.alive(), "SIGHUP did not end the process");
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        "connection:\n  internal.transport.proxy: [ broken\n",
    );
    hup(v.pid());
    assert!(
        wait_until(SETTLE, || v.logs().matches("reload (SIGHUP)").count() >= 2),
        "{}",
        v.logs()
    );
    assert_eq!(
        ask_once(port, "y").as_deref(),
        Some("B:y"),
        "the last good version stays"
    );
    assert!(v.alive());
}

/// A broken resolver or application keeps its last good version with 0.9.2's lines.
#[test]
fn broken_resolvers_and_applications_log_what_scripts_wait_for() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: v1 }\n",
    );
    let v = Vane::start(&cfg, &[port]);
    cfg.write("application/httpx.yaml", "pipeline:\n  internal.nope: {}\n");
    assert!(
        v.wait_log(
            "Application config reload failed: [httpx]",
            SETTLE + Duration::from_secs(1)
        ),
        "{}",
        v.logs()
    );
    assert!(v
        .logs()
        .contains("Config change signal received for Application"));
    cfg.write("resolver/http.yaml", "connection: [ broken\n");
    assert!(
        v.wait_log(
            "Resolver config reload failed: [http]",
            SETTLE + Duration::from_secs(1)
        ),
        "{}",
        v.logs()
    );
    assert!(v
        .logs()
        .contains("Config change signal received for Resolver"));
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = h1(&mut s, &["GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
    assert_eq!(
        (r[0].0, r[0].2.as_str()),
        (200, "v1"),
        "the last good versions serve"
    );
}

/// Under systemd (`Type=notify`): a socket standing in for systemd hears `READY=1` once the
/// gateway serves, watchdog pings at half of `WATCHDOG_USEC`, `RELOADING=1` (with the
/// monotonic time) then `READY=1` around a `SIGHUP` reload, and `STOPPING=1` on `SIGTERM`.
#[test]
fn systemd_hears_readiness_reloads_watchdog_pings_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let systemd = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
    systemd
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let listening = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (h, l) = (heard.clone(), listening.clone());
    let listener = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while l.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(n) = systemd.recv(&mut buf) {
                h.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    });
    let said = |what: &str| {
        heard
            .lock()
            .expect("lock")
            .iter()
            .filter(|m| m.contains(what))
            .count()
    };
    let a = Echo::start("A");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, a.addr);
    let mut v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("NOTIFY_SOCKET", path.display().to_string()),
                ("WATCHDOG_USEC", "200000".into()),
            ],
            wait_ports: vec![port],
        },
    );
    assert!(
        wait_until(SETTLE, || said("READY=1") == 1),
        "{:?}",
        heard.lock().expect("lock")
    );
    assert!(
        heard
            .lock()
            .expect("lock")
            .iter()
            .any(|m| m.contains(&format!("MAINPID={}", v.pid()))),
        "readiness names the main process"
    );
    assert!(
        wait_until(SETTLE, || said("WATCHDOG=1") >= 3),
        "pings every 100 ms: {:?}",
        heard.lock().expect("lock")
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &v.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert!(
        wait_until(SETTLE, || said("READY=1") == 2),
        "{:?}",
        heard.lock().expect("lock")
    );
    {
        let heard = heard.lock().expect("lock");
        let reloading = heard.iter().position(|m| m.starts_with("RELOADING=1"));
        let ready_again = heard.iter().rposition(|m| m.starts_with("READY=1"));
        assert!(
            matches!((reloading, ready_again), (Some(r), Some(a)) if r < a),
            "RELOADING=1 before READY=1: {heard:?}"
        );
        let usec = heard
            .iter()
            .find_map(|m| m.lines().find_map(|l| l.strip_prefix("MONOTONIC_USEC=")))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(usec.is_some_and(|u| u > 0), "{heard:?}");
    }
    assert_eq!(v.terminate(Duration::from_secs(10)), Some(0));
    assert!(
        wait_until(SETTLE, || said("STOPPING=1") == 1),
        "{:?}",
        heard.lock().expect("lock")
    );
    listening.store(false, std::sync::atomic::Ordering::SeqCst);
    listener.join().expect("listener");
}

/// A resolver file and an application file edited in place take effect without a restart.
#[test]
fn edited_resolvers_and_applications_apply_to_the_next_connection() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    let app = |body: &str| {
        format!("pipeline:\n  internal.terminator.response:\n    input: {{ status: 200, body: {body} }}\n")
    };
    cfg.write("application/httpx.yaml", &app("one"));
    cfg.write("application/h1.yaml", &app("other"));
    let v = Vane::start(&cfg, &[port]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let body = || http(addr, "GET", "/", None).1;
    assert_eq!(body(), "one");
    cfg.write("application/httpx.yaml", &app("two"));
    assert!(
        wait_until(Duration::from_secs(10), || body() == "two"),
        "the application reloaded:\n{}",
        v.logs()
    );
    cfg.write(
        "resolver/http.yaml",
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: h1 }\n",
    );
    assert!(
        wait_until(Duration::from_secs(10), || body() == "other"),
        "the resolver reloaded:\n{}",
        v.logs()
    );
}
