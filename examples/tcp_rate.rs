//! Short-connection load for `bench/l4_rate.sh`: `tcp_rate ADDR SECS CLIENTS`.
//!
//! Each client thread connects, sends one line, reads the reply until EOF and closes, in a
//! loop. Prints completed connections per second.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: tcp_rate ADDR SECS CLIENTS");
        std::process::exit(2);
    }
    let addr = args[1].clone();
    let secs: u64 = args[2].parse().expect("seconds");
    let clients: usize = args[3].parse().expect("clients");
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, done, stop) = (addr.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(&addr) else {
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    if s.write_all(b"GET x\n").is_err() {
                        continue;
                    }
                    let mut n = 0;
                    while let Ok(k) = s.read(&mut buf) {
                        if k == 0 {
                            break;
                        }
                        n += k;
                    }
                    if n > 0 {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    println!("{:.0}", done.load(Ordering::Relaxed) as f64 / elapsed);
}
