//! Peers that say nothing.

/// An upstream that takes connections and never answers (a request sent there stays open).
pub fn hanging_upstream() -> std::net::SocketAddr {
    let hang = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = hang.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept() {
            held.push(s);
        }
    });
    at
}
