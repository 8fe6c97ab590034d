//! Keep-alive HTTP/1.1 load for `bench/l7.sh`: `http_load ADDR SECS CLIENTS PATH`.
//!
//! Each client thread keeps one connection and sends `GET PATH` requests back to back,
//! reading each response whole (Content-Length bodies). Prints completed requests per second.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod support;

/// One request/response on `conn`; false when the connection failed (it is then reopened).
fn exchange(conn: &mut BufReader<TcpStream>, req: &[u8]) -> bool {
    if conn.get_mut().write_all(req).is_err() {
        return false;
    }
    let mut len = 0usize;
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        match conn.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if first {
            if !line.starts_with("HTTP/1.1 200") {
                return false;
            }
            first = false;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).is_ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: http_load ADDR SECS CLIENTS PATH");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let secs: u64 = args[2].parse().expect("seconds");
    let clients: usize = args[3].parse().expect("clients");
    let req = format!("GET {} HTTP/1.1\r\nHost: bench.test\r\n\r\n", args[4]).into_bytes();
    thread_local! {
        static CONN: std::cell::RefCell<Option<BufReader<TcpStream>>> = const { std::cell::RefCell::new(None) };
    }
    support::run(clients, secs, move || {
        CONN.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                let Ok(s) = TcpStream::connect(&addr) else {
                    return false;
                };
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                *c = Some(BufReader::new(s));
            }
            let ok = c.as_mut().is_some_and(|conn| exchange(conn, &req));
            if !ok {
                *c = None;
            }
            ok
        })
    });
}
