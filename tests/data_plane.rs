//! The data-plane threads as the kernel sees them: their CPUs and their scheduler slice, read
//! from /proc for a running server.

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// `read` of each data-plane thread of `pid` (its /proc task directory), by thread name.
fn per_shard(pid: u32, read: impl Fn(&std::path::Path) -> Option<String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| {
                    let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
                    let name = name.trim().to_string();
                    if !name.starts_with("vane-shard-") {
                        return None;
                    }
                    Some((name, read(&t.path())?))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The CPUs each data-plane thread of `pid` may run on, by thread name.
fn shard_cpus(pid: u32) -> Vec<(String, String)> {
    per_shard(pid, |task| {
        proc_field(&task.join("status"), "Cpus_allowed_list")
    })
}

/// The scheduler slice of each data-plane thread of `pid` in nanoseconds, by thread name.
fn shard_slices(pid: u32) -> Vec<(String, String)> {
    per_shard(pid, |task| proc_field(&task.join("sched"), "se.slice"))
}

fn start(cfg: &ConfigDir, port: u16, env: Vec<(&'static str, String)>) -> Vane {
    Vane::start_with(
        cfg,
        Opts {
            env,
            wait_ports: vec![port],
        },
    )
}

#[test]
fn data_plane_threads_are_bound_to_a_cpu_each_only_when_asked() {
    let up = Echo::start("S");
    let all = proc_status(std::process::id(), "Cpus_allowed_list").expect("own mask");
    // How many CPUs the list names ("0-3,6" is five).
    let n: usize = all
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0),
            None => 1,
        })
        .sum();
    for pin in [false, true] {
        let cfg = ConfigDir::new();
        let port = free_port();
        cfg.tcp_proxy(port, up.addr);
        let mut env = vec![("DATA_PLANE_THREADS", n.to_string())];
        if pin {
            env.push(("DATA_PLANE_PIN", "true".to_string()));
        }
        let v = start(&cfg, port, env);
        let cpus = shard_cpus(v.pid());
        assert_eq!(cpus.len(), n, "{cpus:?}");
        let distinct: std::collections::BTreeSet<&str> =
            cpus.iter().map(|(_, c)| c.as_str()).collect();
        if pin && n >= 2 {
            // One CPU each (a single number), no two the same.
            assert!(
                cpus.iter().all(|(_, c)| c.parse::<usize>().is_ok()),
                "{cpus:?}"
            );
            assert_eq!(distinct.len(), n, "{cpus:?}");
        } else if !pin {
            assert!(
                cpus.iter().all(|(_, c)| *c == all),
                "{cpus:?} against {all}"
            );
        }
        let mut c = Client::connect(port).expect("connect");
        assert_eq!(c.ask("one").as_deref(), Some("S:one"));
    }
}

/// Each data-plane thread runs in the slice `DATA_PLANE_SLICE_US` asks for (500 µs unless
/// set), and in the kernel's own with 0. Kernels before 6.12 have no slice to ask for (and
/// no `se.slice` line): nothing to check there.
#[test]
fn data_plane_threads_run_in_the_slice_asked_for() {
    let own = proc_field(std::path::Path::new("/proc/thread-self/sched"), "se.slice");
    let Some(default) = own else {
        eprintln!("no se.slice in /proc: this kernel has no slice to ask for");
        return;
    };
    let up = Echo::start("S");
    for (asked, want) in [
        (None, "500000"),
        (Some("1500"), "1500000"),
        (Some("0"), default.as_str()),
    ] {
        let cfg = ConfigDir::new();
        let port = free_port();
        cfg.tcp_proxy(port, up.addr);
        let mut env = vec![("DATA_PLANE_THREADS", "2".to_string())];
        if let Some(us) = asked {
            env.push(("DATA_PLANE_SLICE_US", us.to_string()));
        }
        let v = start(&cfg, port, env);
        let slices = shard_slices(v.pid());
        assert_eq!(slices.len(), 2, "{slices:?}");
        assert!(
            slices.iter().all(|(_, s)| s == want),
            "DATA_PLANE_SLICE_US={asked:?}: {slices:?}, want {want}"
        );
        let mut c = Client::connect(port).expect("connect");
        assert_eq!(c.ask("one").as_deref(), Some("S:one"));
    }
}

/// The server runs under valgrind (`bench/l7_instructions.sh` counts instructions with
/// callgrind): no clock read through rustix's own vDSO parser, which valgrind does not map
/// and which ended the process with SIGSEGV at a shard's first park.
#[test]
fn data_plane_runs_under_valgrind() {
    let valgrind = ensure_tool("valgrind", "valgrind");
    let up = Echo::start("S");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    // exec: the process the test watches is the one valgrind runs vane in.
    let scratch = ConfigDir::new();
    scratch.write_exec(
        "vane-under-valgrind",
        &format!(
            "#!/bin/sh\nexec {valgrind} --tool=none -q {} \"$@\"\n",
            vane_bin().display()
        ),
    );
    let wrapper = scratch.path().join("vane-under-valgrind");
    let mut v = Vane::spawn_bin(&cfg, &[("DATA_PLANE_THREADS", "2".to_string())], &wrapper);
    let mut answered = false;
    wait_until(Duration::from_secs(60), || {
        answered =
            Client::connect(port).is_ok_and(|mut c| c.ask("one").as_deref() == Some("S:one"));
        answered || !v.alive()
    });
    assert!(
        answered,
        "no answer through vane under valgrind; log:\n{}",
        v.logs()
    );
    // Every shard has parked by now (the first park read the clock that crashed).
    let mut c = Client::connect(port).expect("connect");
    assert_eq!(c.ask("two").as_deref(), Some("S:two"));
    let logs = v.logs();
    assert!(!logs.contains("Process terminating"), "{logs}");
}

/// An upstream that answers each request only when the test says so: each request head it
/// reads is reported on the channel it returns, and each `()` sent on the other answers one.
fn held_upstream() -> (
    SocketAddr,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (got_tx, got) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
    std::thread::spawn(move || {
        for s in l.incoming().take(8) {
            let Ok(mut s) = s else { return };
            let (got_tx, release_rx) = (got_tx.clone(), release_rx.clone());
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                loop {
                    let Ok(n) = s.read(&mut b) else { return };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&b[..n]);
                    if !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        continue;
                    }
                    head.clear();
                    if got_tx.send(()).is_err() {
                        return;
                    }
                    let released = release_rx
                        .lock()
                        .map(|r| r.recv_timeout(Duration::from_secs(20)).is_ok())
                        .unwrap_or(false);
                    if !released
                        || s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, got, release)
}

/// Whether every thread of `pid` is stopped (state `T` in its /proc stat).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // The state follows the command name, which is in parentheses.
                let after = &stat[stat.rfind(')')? + 1..];
                after.split_whitespace().next().map(|state| state == "T")
            })
            .unwrap_or(false)
    })
}

/// Reads one response with a 2-byte body from `c`.
fn read_ok(c: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok") {
        match c.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A connection whose request is there when it is accepted is served without its socket
/// ever joining an epoll set (tokio's `TcpStream` registered every accepted socket: an
/// `epoll_ctl` to add it and one to remove it, per connection); it joins when the server
/// waits for its next request, and that wait is woken by the request.
#[test]
fn a_socket_joins_epoll_only_when_it_waits() {
    use std::io::Write;
    let (up, got, release) = held_upstream();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        &format!(
            "pipeline:\n  internal.driver.upstream:\n    input: {{ url_prefix: \"http://{up}\" }}\n    output:\n      success: {{ internal.terminator.response: {{}} }}\n      failure: {{ internal.terminator.response: {{ input: {{ status: 502 }} }} }}\n"
        ),
    );
    let v = start(&cfg, port, vec![]);
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &v.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    };
    // Stopped, the server cannot accept before the request is in the socket. Every thread
    // must have stopped first: a signal reaches a busy thread on another CPU a little later.
    signal("-STOP");
    let stopped = wait_until(Duration::from_secs(10), || all_threads_stopped(v.pid()));
    if !stopped {
        signal("-CONT");
        panic!("the server's threads did not all stop");
    }
    let connected = std::net::TcpStream::connect(("127.0.0.1", port));
    let sent = connected.and_then(|mut c| {
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n")?;
        Ok(c)
    });
    signal("-CONT");
    let mut c = sent.expect("connect and send");
    got.recv_timeout(Duration::from_secs(10))
        .expect("the request never reached the upstream");
    let local = c.peer_addr().expect("addr");
    let remote = c.local_addr().expect("addr");
    let fd = epoll::socket_fd(v.pid(), local, remote).expect("the server's socket of the client");
    let watched = epoll::watched_fds(v.pid());
    assert!(!watched.is_empty(), "no epoll set found");
    assert!(
        !watched.contains(&fd),
        "fd {fd} joined an epoll set though its request was there at accept: {watched:?}"
    );
    release.send(()).expect("release");
    let first = read_ok(&mut c);
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("ok"),
        "{first}"
    );
    // Now the server waits for the next request, on epoll.
    assert!(
        wait_until(Duration::from_secs(5), || epoll::watched_fds(v.pid())
            .contains(&fd)),
        "fd {fd} never joined an epoll set while its connection waited"
    );
    c.write_all(b"GET /b HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("second request");
    got.recv_timeout(Duration::from_secs(10))
        .expect("the second request never reached the upstream: the wait was not woken");
    release.send(()).expect("release");
    let second = read_ok(&mut c);
    assert!(
        second.starts_with("HTTP/1.1 200") && second.ends_with("ok"),
        "{second}"
    );
}
