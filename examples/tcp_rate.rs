//! Short-connection load for `bench/l4_rate.sh`: `tcp_rate ADDR SECS CLIENTS`.
//!
//! Each client thread connects, sends one line, reads the reply until EOF and closes, in a
//! loop. Prints completed connections per second.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod support;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: tcp_rate ADDR SECS CLIENTS");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let secs: u64 = args[2].parse().expect("seconds");
    let clients: usize = args[3].parse().expect("clients");
    support::run(clients, secs, move || {
        let Ok(mut s) = TcpStream::connect(&addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"GET x\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut n = 0;
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n > 0
    });
}
