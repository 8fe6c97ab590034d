//! vane's HTTP/2 server, the default for HTTP/2 (`HTTP2_SERVER=hyper` serves it on hyper's).
//! Why: hyper and the h2 crate cost 41,000 instructions per proxied h2c request against
//! HAProxy's 28,000 (this server: 23,000), and held an idle connection's buffers (16 KiB to
//! write, 8 KiB to read, 4 KiB for HPACK) for its whole life: 25 KiB per idle connection
//! against HAProxy's 5 (this server: 2.2).
//! The pieces: the wire format (frames in [`frame`], header compression in [`hpack`] with its
//! Huffman code in [`huffman`]), a request's head checked ([`request`]) and its body on the
//! way to the flow ([`inbox`]), response heads ([`respond`]), a stream's state, the
//! connection that drives them ([`conn`]), and a stream made a WebSocket tunnel ([`tunnel`]).

mod closed;
pub mod conn;
pub mod frame;
pub mod hpack;
pub mod huffman;
pub mod inbox;
pub mod request;
pub mod respond;
mod stream;
pub mod tunnel;

/// Fields of one HTTP/1.1 connection, which HTTP/2 does not carry (RFC 9113, 8.2.2): a
/// request with one is malformed, a response loses them. Any case (an upstream's HTTP/1.1
/// names come as they were written).
fn connection_specific(name: &[u8]) -> bool {
    [
        &b"connection"[..],
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    ]
    .iter()
    .any(|n| name.eq_ignore_ascii_case(n))
}

/// Bytes from hex digits (spaces ignored), as the RFCs print their examples.
#[cfg(test)]
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
