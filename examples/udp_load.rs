//! UDP load for `bench/udp.sh`, paced so that it measures the proxy, not the kernel's socket
//! buffers (a burst of new sockets loses datagrams in front of any proxy).
//!
//! - `udp_load echo PORT`: an echo server on 127.0.0.1:PORT (until killed).
//! - `udp_load hold ADDR N RATE SECS`: opens N client sockets at RATE per second, each sends
//!   one datagram and waits for its echo, then every socket sends again every 5 s (keeping its
//!   session alive) for SECS seconds. Prints the sessions that got an answer, then `holding`
//!   once all are open (the bench measures memory then).
//! - `udp_load rate ADDR SECS RATE`: a new socket per datagram at RATE per second; prints the
//!   answered new sessions per second.
//! - `udp_load pps ADDR SECS CLIENTS`: CLIENTS sockets ping-pong one datagram at a time;
//!   prints the answered datagrams per second.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

mod support;

fn usage() -> ! {
    eprintln!("usage: udp_load echo PORT | hold ADDR N RATE SECS | rate ADDR SECS RATE | pps ADDR SECS CLIENTS");
    std::process::exit(2)
}

fn num<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn addr(args: &[String]) -> &str {
    args.get(2).map_or_else(|| usage(), String::as_str)
}

fn client(timeout: Duration) -> Option<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    Some(s)
}

fn ask(s: &UdpSocket, addr: &str, msg: &[u8]) -> bool {
    let mut buf = [0u8; 2048];
    s.send_to(msg, addr).is_ok() && s.recv(&mut buf).is_ok_and(|n| buf[..n] == *msg)
}

fn echo(port: u16) {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("bind: {e}");
        std::process::exit(1)
    });
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let s = s.try_clone().expect("clone");
            std::thread::spawn(move || {
                let mut buf = [0u8; 65_535];
                while let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Sleeps until the `i`-th event of a `rate`-per-second schedule that began at `start`.
fn pace(start: Instant, i: u64, rate: u64) {
    let due = start + Duration::from_micros(i * 1_000_000 / rate.max(1));
    if let Some(wait) = due.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

fn hold(addr: &str, n: u64, rate: u64, secs: u64) {
    let start = Instant::now();
    let mut socks = Vec::new();
    let mut answered = 0u64;
    for i in 0..n {
        pace(start, i, rate);
        let Some(s) = client(Duration::from_secs(2)) else {
            continue;
        };
        if ask(&s, addr, format!("hello {i}").as_bytes()) {
            answered += 1;
        }
        socks.push(s);
    }
    println!("{answered}");
    println!("holding");
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(
            Duration::from_secs(5).min(end.saturating_duration_since(Instant::now())),
        );
        let again = Instant::now();
        for (i, s) in socks.iter().enumerate() {
            pace(again, i as u64, rate.max(1000) * 4);
            let _ = s.send_to(b"keep", addr);
        }
        // Drain the echoes so the client's buffers do not fill.
        for s in &socks {
            let _ = s.set_nonblocking(true);
            let mut buf = [0u8; 64];
            while s.recv(&mut buf).is_ok() {}
            let _ = s.set_nonblocking(false);
        }
    }
}

fn rate(addr: &str, secs: u64, per_sec: u64) {
    let start = Instant::now();
    let total = secs * per_sec;
    let mut answered = 0u64;
    let mut waiting: Vec<(UdpSocket, Instant)> = Vec::new();
    let mut done: Vec<UdpSocket> = Vec::new();
    let mut buf = [0u8; 2048];
    for i in 0..total {
        pace(start, i, per_sec);
        if let Some(s) = client(Duration::from_millis(1)) {
            let _ = s.set_nonblocking(true);
            if s.send_to(b"new session", addr).is_ok() {
                waiting.push((s, Instant::now()));
            }
        }
        // Collect answers without blocking the schedule; give up on one after 1 s. Answered
        // sockets stay open to the end, so no client port is reused: every datagram is a new
        // session (keep SECS * RATE under the open-files limit).
        let mut i = 0;
        while i < waiting.len() {
            if waiting[i].0.recv(&mut buf).is_ok() {
                answered += 1;
                done.push(waiting.swap_remove(i).0);
            } else if waiting[i].1.elapsed() >= Duration::from_secs(1) {
                waiting.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(|(s, _)| {
            if s.recv(&mut buf).is_ok() {
                answered += 1;
                return false;
            }
            true
        });
        std::thread::sleep(Duration::from_millis(1));
    }
    println!("{:.0}", answered as f64 / secs as f64);
}

fn pps(addr: String, secs: u64, clients: usize) {
    support::run(clients, secs, move || {
        thread_local! {
            static SOCK: Option<UdpSocket> = client(Duration::from_secs(1));
        }
        SOCK.with(|s| s.as_ref().is_some_and(|s| ask(s, &addr, b"ping")))
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("echo") => echo(num(&args, 2)),
        Some("hold") => hold(addr(&args), num(&args, 3), num(&args, 4), num(&args, 5)),
        Some("rate") => rate(addr(&args), num(&args, 3), num(&args, 4)),
        Some("pps") => pps(addr(&args).to_string(), num(&args, 3), num(&args, 4)),
        _ => usage(),
    }
}
