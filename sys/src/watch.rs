//! Readiness of a listening socket from tokio's reactor, without tokio's `TcpListener`:
//! that one registers every socket it accepts with the reactor at once, and the data plane
//! registers a connection only when it first has to wait (`vane::conn::Socket`).

use std::io;
use std::net::TcpListener;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `listener` (non-blocking) watched for readability by the current runtime's reactor.
pub fn listener(listener: TcpListener) -> io::Result<AsyncFd<TcpListener>> {
    // SAFETY: `register_with_interest` asks that the value own its descriptor and keep it
    // open while registered. A `TcpListener` owns its descriptor, and the `AsyncFd` owns the
    // listener until it deregisters it (on drop, or `into_inner`).
    unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection makes the watched listener readable, and what it accepts is the socket
    /// of that connection.
    #[tokio::test]
    async fn a_connection_makes_the_listener_readable() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("non-blocking");
        let addr = l.local_addr().expect("addr");
        let watched = listener(l).expect("register");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let accepted = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                let mut ready = watched.readable().await.expect("readable");
                if let Ok(r) = ready.try_io(|l| l.get_ref().accept()) {
                    break r;
                }
            }
        })
        .await
        .expect("never readable")
        .expect("accept");
        assert_eq!(accepted.1, client.local_addr().expect("addr"));
    }
}
