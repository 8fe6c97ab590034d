//! HTTP/2 of our own, for the server side of L7 (in progress; hyper serves HTTP/2 until it is
//! whole). Why: hyper and the h2 crate cost 41,000 instructions per proxied h2c request
//! against HAProxy's 28,000, and hold an idle connection's buffers (16 KiB to write, 8 KiB to
//! read, 4 KiB for HPACK) for its whole life: 25 KiB per idle connection against HAProxy's 5.
//! The pieces so far are the wire format: frames ([`frame`]) and header compression
//! ([`hpack`], with its Huffman code in [`huffman`]).

pub mod frame;
pub mod hpack;
pub mod huffman;
