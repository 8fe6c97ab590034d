//! Allocations per proxied keep-alive HTTP/1.1 request, counted by the global allocator.
//!
//! The gateway runs in this process (its `run` on a runtime of its own), so every allocation
//! it makes goes through [`vane_sys::alloc::Counting`], the production allocator with a
//! counter. The client and the upstream are plain sockets reading into fixed buffers: they
//! allocate nothing per request, so the count over many requests, divided by them, is the
//! proxy's. Each allocation costs the allocator's fast path and, more, memory the request
//! touches: the bound holds the path where it is.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{free_port, wait_until, ConfigDir};
use vane_sys::alloc::Counting;

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the path allocates per request today (measured: see the test's output), with room for
/// the odd allocation of the gateway's background threads during the counted requests.
const MAX_PER_REQUEST: f64 = 12.5;

const REQUEST: &[u8] = b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";

/// An upstream answering every request head on a kept connection, without allocating per
/// request.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_upstream(conn));
        }
    });
    port
}

fn serve_upstream(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 8192];
    let mut len = 0;
    loop {
        match conn.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
        // Answer each whole head; keep a partial one for the next read.
        while let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            if conn.write_all(RESPONSE).is_err() {
                return;
            }
            buf.copy_within(end + 4..len, 0);
            len -= end + 4;
        }
        if len == buf.len() {
            return;
        }
    }
}

/// One request on `conn`, its response read whole into `buf`.
fn exchange(conn: &mut TcpStream, buf: &mut [u8]) {
    conn.write_all(REQUEST).expect("send request");
    let mut len = 0;
    while !buf[..len].ends_with(b"\r\n\r\nok") {
        let n = conn.read(&mut buf[len..]).expect("read response");
        assert!(n > 0, "closed mid-response");
        len += n;
    }
    assert!(buf.starts_with(b"HTTP/1.1 200"), "not a 200");
}

#[test]
fn a_proxied_keep_alive_request_allocates_at_most_a_few_times() {
    let up = upstream();
    let port = free_port();
    let cfg = ConfigDir::new();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        &format!(
            "pipeline:\n  internal.driver.upstream:\n    input: {{ url_prefix: \"http://127.0.0.1:{up}\" }}\n    output:\n      success: {{ internal.terminator.response: {{}} }}\n      failure: {{ internal.terminator.response: {{ input: {{ status: 502 }} }} }}\n"
        ),
    );
    // The settings are read once, at the gateway's first look; nothing has looked yet.
    for (k, v) in [
        ("LISTEN_ADDR", "127.0.0.1"),
        ("METRICS_ADDR", "off"),
        ("ACCESS_LOG", "off"),
        ("DATA_PLANE_THREADS", "1"),
    ] {
        std::env::set_var(k, v);
    }
    let dir = cfg.path().to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(vane::boot::run(&dir, false));
    });

    assert!(
        wait_until(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "the gateway never listened"
    );
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 8192];
    // Warm: the upstream connection opened and pooled, lazily built state built.
    for _ in 0..300 {
        exchange(&mut conn, &mut buf);
    }
    const COUNTED: u64 = 2000;
    let before = Counting::allocations();
    for _ in 0..COUNTED {
        exchange(&mut conn, &mut buf);
    }
    let per_request = (Counting::allocations() - before) as f64 / COUNTED as f64;
    eprintln!("allocations per proxied keep-alive request: {per_request:.2}");
    assert!(
        per_request <= MAX_PER_REQUEST,
        "{per_request:.2} allocations per request (at most {MAX_PER_REQUEST})"
    );
}
