//! HTTP/2 of our own, for the server side of L7 (`HTTP2_SERVER=vane`; hyper's otherwise).
//! Why: hyper and the h2 crate cost 41,000 instructions per proxied h2c request
//! against HAProxy's 28,000, and hold an idle connection's buffers (16 KiB to write, 8 KiB to
//! read, 4 KiB for HPACK) for its whole life: 25 KiB per idle connection against HAProxy's 5.
//! The pieces: the wire format (frames in [`frame`], header compression in [`hpack`] with its
//! Huffman code in [`huffman`]), a request's head checked ([`request`]) and its body on the
//! way to the flow ([`inbox`]), response heads ([`respond`]), and the connection that drives
//! them ([`conn`]).

pub mod conn;
pub mod frame;
pub mod hpack;
pub mod huffman;
pub mod inbox;
pub mod request;
pub mod respond;
mod stream;
pub mod tunnel;

/// Bytes from hex digits (spaces ignored), as the RFCs print their examples.
#[cfg(test)]
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
