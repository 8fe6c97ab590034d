//! Built-in ACME against a real CA: Debian's Pebble validates vane's own listeners (http-01 on
//! the plaintext port, tls-alpn-01 on the TLS port, also when that port passes TLS through),
//! and the pair it issues is what vane serves afterwards. Renewal happens while a client runs
//! without a failed request (also across a crash of the worker), and a CA that is down leaves
//! the old pair serving and is retried.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::pebble::{served_leaf, Pebble, PebbleTls};
use common::tls::TlsEcho;
use common::*;
use rustls::pki_types::CertificateDer;

/// `listener/[http]` upgrades to plaintext HTTP and `listener/[tls]` to TLS; the `tls`
/// resolver terminates (app `httpx`), or passes through to `pass_to` on `pass_port`.
fn gateway(cfg: &ConfigDir, http: u16, tls: u16, pass: Option<(u16, u16)>) {
    cfg.plain_http(http, "httpx");
    cfg.tls_listener(tls);
    let terminate = "internal.transport.upgrade: { input: { protocol: httpx } }";
    let resolver = match pass {
        None => format!("connection:\n  {terminate}\n"),
        Some((port, to)) => format!(
            "connection:\n  internal.common.match:\n    input: {{ left: \"{{{{server.port}}}}\", right: \"{port}\" }}\n    output:\n      \"true\": {{ internal.transport.proxy: {{ input: {{ target.ip: 127.0.0.1, target.port: {to} }} }} }}\n      \"false\": {{ {terminate} }}\n"
        ),
    };
    cfg.write("resolver/tls.yaml", &resolver);
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: \"app\" }\n",
    );
}

fn order(cfg: &ConfigDir, pebble: &Pebble, tls: &PebbleTls, names: &[&str], challenge: &str) {
    cfg.write(
        "acme.yaml",
        &format!(
            "directory: {}\nemail: ops@example.org\ndomains: [{}]\nchallenge: {challenge}\nca_bundle: {}\n",
            pebble.directory(),
            names.join(", "),
            tls.ca_pem.display()
        ),
    );
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("ACME_RETRY_MIN_SECS", "1".into()),
        ("ACME_RETRY_MAX_SECS", "2".into()),
        ("ACME_TIMEOUT_SECS", "20".into()),
    ]
}

fn issued(v: &Vane) -> f64 {
    v.metric("vane_acme_orders_total{result=\"issued\"}")
        .unwrap_or(0.0)
}

/// Waits (up to a minute) for the first certificate Pebble issues.
fn wait_issued(v: &Vane, pebble: &Pebble) {
    assert!(
        wait_until(Duration::from_secs(60), || issued(v) >= 1.0),
        "no certificate issued; vane:\n{}\npebble:\n{}",
        v.logs(),
        pebble.logs()
    );
}

/// Vane on `cfg` with the short ACME retries of [`env`], once `ports` accept.
fn start(cfg: &ConfigDir, ports: &[u16]) -> Vane {
    Vane::start_with(
        cfg,
        Opts {
            env: env(),
            wait_ports: ports.to_vec(),
        },
    )
}

fn names_of(leaf: &CertificateDer<'_>) -> Vec<String> {
    vane::certs::der::dns_names(leaf)
}

#[test]
fn http01_for_two_names_then_served_and_kept_over_a_restart() {
    let (http, tls_port) = (free_port(), free_port());
    let ptls = PebbleTls::new();
    let pebble = Pebble::start(&ptls, http, tls_port, None, None);
    let cfg = ConfigDir::new();
    gateway(&cfg, http, tls_port, None);
    order(&cfg, &pebble, &ptls, &["a.example", "b.example"], "http-01");
    let (code, out) = {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_vane"))
            .args(["check", "--config"])
            .arg(cfg.path())
            .output()
            .expect("vane check");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "vane check accepts acme.yaml: {out}");
    let mut v = start(&cfg, &[http, tls_port]);
    wait_issued(&v, &pebble);
    let root = pebble.root();
    for name in ["a.example", "b.example"] {
        let mut leaf = None;
        assert!(
            wait_until(Duration::from_secs(10), || {
                leaf = served_leaf(tls_port, name, std::slice::from_ref(&root)).ok();
                leaf.is_some()
            }),
            "{name}: the served certificate does not chain to Pebble's root; log:\n{}",
            v.logs()
        );
        let got = names_of(&leaf.expect("leaf"));
        assert!(
            got.contains(&"a.example".to_string()) && got.contains(&"b.example".to_string()),
            "{got:?}"
        );
    }
    let (_, certs) = v.get("/certs");
    assert!(certs.contains("\"source\":\"acme\""), "{certs}");
    assert!(v
        .metrics_text()
        .contains("vane_acme_renewal_timestamp_seconds{certificate=\"a.example\"}"));
    // A restart finds the valid pair on disk and orders nothing.
    v.terminate(Duration::from_secs(10));
    let v = start(&cfg, &[http, tls_port]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        issued(&v),
        0.0,
        "a valid pair was ordered again:\n{}",
        v.logs()
    );
    assert!(served_leaf(tls_port, "a.example", &[root]).is_ok());
}

#[test]
fn tls_alpn01_is_answered_on_a_port_that_passes_tls_through() {
    let echo = TlsEcho::start("upstream.test", "UP");
    let (http, pass, term) = (free_port(), free_port(), free_port());
    let ptls = PebbleTls::new();
    let pebble = Pebble::start(&ptls, http, pass, None, None);
    let cfg = ConfigDir::new();
    gateway(&cfg, http, term, Some((pass, echo.addr.port())));
    // The passthrough port has its own listener file with the same upgrade.
    cfg.tls_listener(pass);
    order(
        &cfg,
        &pebble,
        &ptls,
        &["c.example", "d.example"],
        "tls-alpn-01",
    );
    let v = start(&cfg, &[http, pass, term]);
    wait_issued(&v, &pebble);
    assert!(v
        .logs()
        .contains("ACME tls-alpn-01 validation: answered here"));
    let root = pebble.root();
    let leaf = served_leaf(term, "d.example", &[root]).expect("Pebble's pair served");
    assert!(names_of(&leaf).contains(&"c.example".to_string()));
    // Ordinary clients of the passthrough port still reach the upstream untouched.
    let mut c = common::tls::TlsClient::connect(pass, "upstream.test", &[], &[&echo.cert.der])
        .expect("passthrough handshake");
    assert_eq!(c.ask("hi").as_deref(), Some("UP:hi"));
}

#[test]
fn renews_under_load_and_rides_out_a_ca_that_is_down() {
    let (http, tls_port) = (free_port(), free_port());
    let ptls = PebbleTls::new();
    let life = Duration::from_secs(30);
    let mut pebble = Pebble::start(&ptls, http, tls_port, Some(life), None);
    let cfg = ConfigDir::new();
    gateway(&cfg, http, tls_port, None);
    order(&cfg, &pebble, &ptls, &["r.example"], "http-01");
    let v = start(&cfg, &[http, tls_port]);
    wait_issued(&v, &pebble);
    // A client that connects, verifies and asks, over and over, for the whole test.
    let roots = Arc::new(Mutex::new(vec![pebble.root()]));
    let seen: Arc<Mutex<Vec<CertificateDer<'static>>>> = Arc::default();
    let (failures, requests, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let client = {
        let (roots, seen, failures, requests, stop) = (
            roots.clone(),
            seen.clone(),
            failures.clone(),
            requests.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            let mut last_error = String::new();
            while !stop.load(Ordering::SeqCst) {
                let trusted = roots.lock().expect("roots").clone();
                let refs: Vec<&CertificateDer<'static>> = trusted.iter().collect();
                match common::tls::TlsClient::connect(tls_port, "r.example", &["http/1.1"], &refs) {
                    Ok(mut c) => {
                        let leaf = c.peer_cert();
                        let answer = c.ask("GET / HTTP/1.1\r\nHost: r.example\r\n\r");
                        if answer.as_deref() == Some("HTTP/1.1 200 OK") {
                            requests.fetch_add(1, Ordering::SeqCst);
                            let mut s = seen.lock().expect("seen");
                            if let Some(l) = leaf.filter(|l| !s.contains(l)) {
                                s.push(l);
                            }
                        } else {
                            failures.fetch_add(1, Ordering::SeqCst);
                            last_error = format!("answer {answer:?}");
                        }
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::SeqCst);
                        last_error = e.to_string();
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last_error
        })
    };
    let distinct = |n: usize| seen.lock().expect("seen").len() >= n;
    assert!(
        wait_until(Duration::from_secs(60), || distinct(2)),
        "no renewal reached the client; log:\n{}",
        v.logs()
    );
    // The worker crashes: its supervisor restarts it, traffic does not notice (the client
    // keeps counting), and the restarted worker is the one that carries on below.
    assert_eq!(v.post("/chaos/panic/registries/acme").0, 202);
    assert!(
        wait_until(Duration::from_secs(10), || v
            .actor("registries/acme")
            .is_some_and(|(_, restarts)| restarts >= 1)),
        "registries/acme was not restarted; log:\n{}",
        v.logs()
    );
    // The CA goes away right after a renewal: the attempts fail, the pair keeps serving.
    let before_fail = v
        .metric("vane_acme_orders_total{result=\"failed\"}")
        .unwrap_or(0.0);
    let port = pebble.port;
    pebble.stop();
    assert!(
        wait_until(Duration::from_secs(40), || v
            .metric("vane_acme_orders_total{result=\"failed\"}")
            .unwrap_or(0.0)
            > before_fail),
        "no failed attempt while the CA was down; log:\n{}",
        v.logs()
    );
    let served_while_down = seen.lock().expect("seen").len();
    assert!(v.logs().contains("the current pair keeps serving"));
    // A new CA on the same address (new state, new root): a new account, a new pair.
    let pebble = Pebble::start(&ptls, http, tls_port, Some(life), Some(port));
    roots.lock().expect("roots").push(pebble.root());
    assert!(
        wait_until(Duration::from_secs(40), || distinct(served_while_down + 1)),
        "no certificate from the restarted CA; vane:\n{}\npebble:\n{}",
        v.logs(),
        pebble.logs()
    );
    stop.store(true, Ordering::SeqCst);
    let last_error = client.join().expect("client");
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "requests failed during renewals (last: {last_error}); log:\n{}",
        v.logs()
    );
    assert!(requests.load(Ordering::SeqCst) > 50);
}

#[test]
fn vane_check_names_the_place_of_a_bad_order() {
    let cfg = ConfigDir::new();
    cfg.write(
        "acme.yaml",
        "orders:\n  - directory: https://ca.test/dir\n    domains: [ok.example, \"*.wild.example\"]\n",
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(["check", "--config"])
        .arg(cfg.path())
        .output()
        .expect("vane check");
    let out = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("acme.yaml: orders.0.domains.1: `*.wild.example`: wildcard"),
        "{out}"
    );
}

#[test]
fn a_rate_limited_answer_is_honoured_over_the_backoff() {
    // A CA that answers everything with 429, `Retry-After: 3600` and a rateLimited problem.
    let ca = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let ca_port = ca.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    {
        let hits = hits.clone();
        std::thread::spawn(move || {
            for s in ca.incoming().flatten() {
                hits.fetch_add(1, Ordering::SeqCst);
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 4096];
                let _ = std::io::Read::read(&mut s, &mut buf);
                let body = r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"slow down","status":429}"#;
                let head = format!("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3600\r\nContent-Type: application/problem+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = std::io::Write::write_all(&mut s, (head + body).as_bytes());
            }
        });
    }
    let (cfg, http) = plain_app();
    cfg.write(
        "acme.yaml",
        &format!("directory: http://127.0.0.1:{ca_port}/dir\ndomains: [rl.example]\n"),
    );
    let v = start(&cfg, &[http]);
    let failed = || {
        v.metric("vane_acme_orders_total{result=\"failed\"}")
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(20), || failed() >= 1.0),
        "{}",
        v.logs()
    );
    // ACME_RETRY_MAX_SECS is 2 s; the CA said an hour, and it is asked nothing more.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "{}", v.logs());
    assert_eq!(failed(), 1.0);
    let next = v
        .metric("vane_acme_renewal_timestamp_seconds{certificate=\"rl.example\"}")
        .expect("next renewal published");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    assert!(next > now + 3000.0, "next attempt in {} s", next - now);
}

/// Vane 0.9.2's LazyCert integration: a LazyCert service (here a stand-in speaking its API on
/// loopback) lists http-01 challenges; vane answers them on its plaintext port before the
/// application, reports each as solved, and stops answering once the challenge is gone.
#[test]
fn lazycert_challenges_are_answered_reported_and_withdrawn() {
    let lazycert = LazyCert::start();
    let (cfg, http) = plain_app();
    let (v, addr, path) = answered_once_listed(&cfg, &lazycert, http, "TOK1", "app");
    assert_eq!(
        lazycert.solved.lock().expect("solved").as_slice(),
        ["TOK1-id"]
    );
    assert!(v.logs().contains(&format!(
        "LazyCert at http://127.0.0.1:{} is reachable",
        lazycert.port
    )));
    lazycert.listed.lock().expect("listed").clear();
    assert!(
        wait_until(Duration::from_secs(10), || common::http(
            addr, "GET", &path, None
        )
        .1 == "app"),
        "a challenge LazyCert no longer lists is withdrawn:\n{}",
        v.logs()
    );
}

/// A challenge is answered at L4+, before a resolver that passes plaintext HTTP through to
/// another server: the head is looked at for it even though no flow reads `http.*`.
#[test]
fn http01_is_answered_before_a_resolver_that_passes_http_through() {
    let lazycert = LazyCert::start();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up_port = upstream.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in upstream.incoming().flatten() {
            let mut s = s;
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut s, &mut buf);
            let _ = std::io::Write::write_all(
                &mut s,
                b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nupstream",
            );
        }
    });
    let http = free_port();
    let cfg = ConfigDir::new();
    cfg.write(
        &format!("listener/[{http}]/tcp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: http }\n",
    );
    cfg.write(
        "resolver/http.yaml",
        &format!("connection:\n  internal.transport.proxy:\n    input: {{ target.ip: 127.0.0.1, target.port: {up_port} }}\n"),
    );
    let (_v, addr, _) = answered_once_listed(&cfg, &lazycert, http, "TOK2", "upstream");
    assert_eq!(common::http(addr, "GET", "/other", None).1, "upstream");
}

/// Points `cfg` at `lazycert` and starts vane on `http`: the challenge path of `token` answers
/// `before` while nothing is listed, then (listed) its key authorization.
fn answered_once_listed(
    cfg: &ConfigDir,
    lazycert: &LazyCert,
    http: u16,
    token: &str,
    before: &str,
) -> (Vane, std::net::SocketAddr, String) {
    cfg.write(
        "lazycert.yaml",
        &format!(
            "enabled: true\nurl: http://127.0.0.1:{}/\ntoken: tok\npoll_interval: 1\n",
            lazycert.port
        ),
    );
    let v = Vane::start(cfg, &[http]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], http));
    let path = format!("/.well-known/acme-challenge/{token}");
    assert_eq!(
        common::http(addr, "GET", &path, None).1,
        before,
        "nothing listed yet"
    );
    lazycert
        .listed
        .lock()
        .expect("listed")
        .push(serde_json::json!({
            "id": format!("{token}-id"), "domain": "a.example", "type": "http-01",
            "token": token, "key_authorization": format!("{token}.thumbprint")
        }));
    let answer = format!("{token}.thumbprint");
    assert!(
        wait_until(Duration::from_secs(10), || common::http(
            addr, "GET", &path, None
        )
        .1 == answer),
        "{}",
        v.logs()
    );
    (v, addr, path)
}

/// A LazyCert service on loopback: lists what `listed` holds as its challenges and records
/// the ids reported solved in `solved`.
struct LazyCert {
    listed: Arc<Mutex<Vec<serde_json::Value>>>,
    solved: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl LazyCert {
    fn start() -> Self {
        let listed: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        let solved: Arc<Mutex<Vec<String>>> = Arc::default();
        let port = serve_lazycert(&listed, &solved);
        Self {
            listed,
            solved,
            port,
        }
    }
}

/// Serves LazyCert's API on loopback for [`LazyCert`]; its port.
fn serve_lazycert(
    listed: &Arc<Mutex<Vec<serde_json::Value>>>,
    solved: &Arc<Mutex<Vec<String>>>,
) -> u16 {
    let api = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let api_port = api.local_addr().expect("addr").port();
    {
        let (listed, solved) = (listed.clone(), solved.clone());
        std::thread::spawn(move || {
            for s in api.incoming().flatten() {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = vec![0u8; 8192];
                let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let line = head.lines().next().unwrap_or_default().to_string();
                let authorized = head.contains("authorization: Bearer tok")
                    || head.contains("Authorization: Bearer tok");
                let (status, body) = if line.starts_with("GET /health") {
                    ("200 OK", r#"{"status":"success"}"#.to_string())
                } else if !authorized {
                    ("401 Unauthorized", "{}".to_string())
                } else if line.starts_with("GET /challenges") {
                    let l = listed.lock().expect("listed").clone();
                    (
                        "200 OK",
                        serde_json::json!({"status": "success", "data": {"challenges": l}})
                            .to_string(),
                    )
                } else if let Some(rest) = line.strip_prefix("POST /challenges/") {
                    let id = rest.split('/').next().unwrap_or_default().to_string();
                    solved.lock().expect("solved").push(id);
                    ("200 OK", r#"{"status":"success"}"#.to_string())
                } else {
                    ("404 Not Found", "{}".to_string())
                };
                let _ = std::io::Write::write_all(
                    &mut s,
                    format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
                );
            }
        });
    }
    api_port
}

/// A config dir whose plaintext HTTP port (returned) answers `app` from its application.
fn plain_app() -> (ConfigDir, u16) {
    let http = free_port();
    let cfg = ConfigDir::new();
    cfg.plain_http(http, "httpx");
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: app }\n",
    );
    (cfg, http)
}
