//! Chaos from the client side and from the config dir: clients that never read, handshakes
//! dribbled a byte at a time, and a config dir rewritten with garbage while traffic flows.
//! Each test checks that memory and connection slots stay bounded, that the offenders are cut
//! or contained, and that everyone else is served as if nothing happened.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// An upstream that pours bytes into every connection until the peer stops taking them.
fn firehose() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    thread::spawn(move || {
        for s in l.incoming().flatten().take(64) {
            let w = w.clone();
            thread::spawn(move || {
                let mut s = s;
                let _ = s.set_write_timeout(Some(Duration::from_secs(8)));
                let chunk = vec![b'x'; 64 * 1024];
                // Bounded: 64 MiB at most per connection.
                for _ in 0..1024 {
                    match s.write(&chunk) {
                        Ok(n) => {
                            w.fetch_add(n, Ordering::SeqCst);
                        }
                        Err(_) => return,
                    }
                }
            });
        }
    });
    (addr, written)
}

#[test]
fn clients_that_never_read_cost_bounded_memory() {
    let (hose, written) = firehose();
    let echo = Echo::start("E");
    let cfg = ConfigDir::new();
    let (p_hose, p_echo) = (free_port(), free_port());
    cfg.tcp_proxy(p_hose, hose);
    cfg.tcp_proxy(p_echo, echo.addr);
    let mut v = Vane::start(&cfg, &[p_hose, p_echo]);
    let before = rss_kib(v.pid());
    // 20 clients connect, say hello and then never read.
    let stuck: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", p_hose)).expect("connect");
            s.write_all(b"go\n").expect("write");
            s
        })
        .collect();
    // Wait until the upstream side is blocked too (its writes stop making progress).
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(300));
        let now = written.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let grown = rss_kib(v.pid()).saturating_sub(before);
    // Each stuck relay may hold at most one 256 KiB burst buffer per direction; the rest of
    // the data waits in the kernel's socket buffers, not in vane.
    assert!(
        grown < 20 * 2 * 256 + 8 * 1024,
        "RSS grew {grown} KiB with 20 stuck readers ({} bytes written upstream)",
        written.load(Ordering::SeqCst)
    );
    assert_eq!(ask_once(p_echo, "ok").as_deref(), Some("E:ok"));
    drop(stuck);
    assert!(v.alive());
}

#[test]
fn a_dribbled_client_hello_is_cut_at_the_peek_timeout_and_frees_its_slot() {
    let up = Echo::start("T");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        "connection:\n  internal.transport.upgrade:\n    input: { protocol: tls }\n",
    );
    cfg.write(
        "resolver/tls.yaml",
        &format!(
            "connection:\n  internal.transport.proxy:\n    input: {{ target.ip: 127.0.0.1, target.port: {} }}\n",
            up.addr.port()
        ),
    );
    let echo_port = free_port();
    cfg.tcp_proxy(echo_port, up.addr);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("TLS_HANDSHAKE_PEEK_TIMEOUT_MS", "600".into()),
                ("MAX_CONNECTIONS", "40".into()),
            ],
            wait_ports: vec![port, echo_port],
        },
    );
    // 30 slowloris clients: a valid record header, then one byte every 200 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let dribblers: Vec<_> = (0..30)
        .map(|_| {
            let (stop, closed) = (stop.clone(), closed.clone());
            thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
                let mut b = [0u8; 16];
                while !stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(6) {
                    if matches!(s.read(&mut b), Ok(0))
                        || s.write_all(&[0]).is_err()
                        || matches!(s.read(&mut b), Ok(0))
                    {
                        closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(4), || closed.load(Ordering::SeqCst)
            == 30),
        "only {} of 30 dribbling clients were cut",
        closed.load(Ordering::SeqCst)
    );
    assert!(start.elapsed() < Duration::from_secs(4));
    stop.store(true, Ordering::SeqCst);
    for d in dribblers {
        let _ = d.join();
    }
    // Their slots are free again: more than MAX_CONNECTIONS - 30 clients fit at once.
    let mut held: Vec<Client> = (0..25)
        .map(|_| Client::connect(echo_port).expect("connect"))
        .collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert_eq!(
            c.ask(&format!("{i}")).as_deref(),
            Some(format!("T:{i}").as_str())
        );
    }
    let failures = v
        .metric("vane_l4p_parse_failures_total{protocol=\"tls\",error=\"timeout\"}")
        .unwrap_or(0.0);
    assert!(failures >= 30.0, "{}", v.metrics_text());
}

#[test]
fn garbage_written_into_the_config_dir_under_traffic_changes_nothing() {
    let up = Echo::start("G");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let mut v = Vane::start(&cfg, &[port]);
    let mut steady = Client::connect(port).expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let (served, lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (stop, served, lost) = (stop.clone(), served.clone(), lost.clone());
        thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 2000 {
                n += 1;
                match ask_once(port, &format!("q{n}")) {
                    Some(r) if r == format!("G:q{n}") => served.fetch_add(1, Ordering::SeqCst),
                    _ => lost.fetch_add(1, Ordering::SeqCst),
                };
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let garbage = [
        "connection:\n  internal.transport.proxy: [unclosed",
        "{\"connection\": 42}",
        "connection:\n  no.such.plugin: {}\n",
        "\u{0}\u{1}\u{2}binary\u{ff}",
        "connection:\n  internal.transport.proxy:\n    input: { target.ip: 300.1.1.1, target.port: 99999 }\n",
    ];
    // (An emptied listener file is not garbage: it means "remove the listener".)
    for (i, g) in garbage.iter().cycle().take(15).enumerate() {
        cfg.write(&format!("listener/[{port}]/tcp.yaml"), g);
        // Parallel-format files and files in unknown places join the churn.
        cfg.write(&format!("listener/[{port}]/udp.toml"), g);
        cfg.write(&format!("resolver/x{}.json", i % 3), g);
        thread::sleep(Duration::from_millis(150));
    }
    // Back to a valid file: the last good config was serving all along.
    cfg.tcp_proxy(port, up.addr);
    thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    let _ = traffic.join();
    assert_eq!(steady.ask("still").as_deref(), Some("G:still"));
    assert_eq!(
        lost.load(Ordering::SeqCst),
        0,
        "requests lost during the churn"
    );
    assert!(served.load(Ordering::SeqCst) > 50);
    assert!(v.alive());
    let refused = v
        .metric("vane_config_reloads_total{result=\"rejected\"}")
        .unwrap_or(0.0);
    assert!(refused >= 1.0, "{}", v.metrics_text());
}
