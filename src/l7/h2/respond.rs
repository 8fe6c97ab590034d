//! Response heads and trailers as HPACK blocks in HEADERS frames.

use std::cell::RefCell;

use hyper::body::Body as _;
use hyper::header::{HeaderMap, HeaderName, CONTENT_LENGTH, DATE};

use super::frame;
use super::hpack;
use crate::l7::h1::write::with_date;
use crate::l7::reply::{Headers, Reply};

thread_local! {
    /// The block being encoded, reused by every response of the thread.
    static BLOCK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Fields HTTP/2 does not carry, and `Content-Length`, which is given from the body.
fn left_out(name: &[u8]) -> bool {
    super::connection_specific(name) || name.eq_ignore_ascii_case(b"content-length")
}

/// Encodes into the thread's block and writes it as HEADERS (and CONTINUATION) frames.
fn with_block(out: &mut Vec<u8>, id: u32, end: bool, max_frame: u32, f: impl FnOnce(&mut Vec<u8>)) {
    BLOCK.with_borrow_mut(|block| {
        block.clear();
        f(block);
        frame::write_headers(out, id, block, end, max_frame);
        // A rare large head does not stay with the thread.
        if block.capacity() > 16 * 1024 {
            *block = Vec::new();
        }
    });
}

/// One field with its name in lowercase (an upstream's HTTP/1.1 fields come in any case:
/// nginx's `Server`, `Date` and `Content-Type` are in every proxied answer). The lowercase copy
/// is made on the stack, not allocated per field and request, for names up to 64 bytes.
fn field(block: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
    if !name.iter().any(u8::is_ascii_uppercase) {
        return hpack::encode_field(block, name, value, sensitive);
    }
    let mut stack = [0u8; 64];
    match stack.get_mut(..name.len()) {
        Some(lower) => {
            lower.copy_from_slice(name);
            lower.make_ascii_lowercase();
            hpack::encode_field(block, lower, value, sensitive);
        }
        None => hpack::encode_field(block, &name.to_ascii_lowercase(), value, sensitive),
    }
}

/// The response head: `:status`, the reply's fields less those HTTP/2 leaves out, a
/// `content-length` (the body's exact size, else the declared one; for an answer without a
/// body, the declared one) and a `date` unless the reply has one.
pub fn head(out: &mut Vec<u8>, id: u32, reply: &Reply, bodiless: bool, end: bool, max_frame: u32) {
    with_block(out, id, end, max_frame, |block| {
        hpack::encode_status(block, reply.status.as_u16());
        let mut has_date = false;
        let declared = match &reply.headers {
            Headers::Map(h) => {
                for (name, value) in h {
                    let n = name.as_str().as_bytes();
                    if left_out(n) {
                        continue;
                    }
                    has_date |= name == DATE;
                    hpack::encode_field(block, n, value.as_bytes(), value.is_sensitive());
                }
                h.get(CONTENT_LENGTH)
                    .and_then(crate::l7::h1::write::length_value)
            }
            Headers::Received(r) => {
                for (name, value) in r.iter() {
                    if left_out(name) {
                        continue;
                    }
                    field(block, name, value, false);
                }
                has_date = r.has_date();
                r.length()
            }
        };
        let length = if bodiless {
            declared.filter(|_| reply.status.as_u16() != 204)
        } else {
            reply.body.size_hint().exact().or(declared)
        };
        if let Some(n) = length {
            let mut digits = [0; 20];
            hpack::encode_field(
                block,
                b"content-length",
                crate::conn::digits(n, &mut digits),
                false,
            );
        }
        if !has_date {
            with_date(|d| hpack::encode_field(block, b"date", d, false));
        }
    });
}

/// A response's trailers: a last HEADERS frame that ends the stream.
pub fn trailers(out: &mut Vec<u8>, id: u32, t: &HeaderMap, max_frame: u32) {
    with_block(out, id, true, max_frame, |block| {
        for (name, value) in t {
            let n: &HeaderName = name;
            if !left_out(n.as_str().as_bytes()) {
                hpack::encode_field(block, n.as_str().as_bytes(), value.as_bytes(), false);
            }
        }
    });
}

/// An interim answer (`100 Continue`): the status alone, the stream left open.
pub fn interim(out: &mut Vec<u8>, id: u32, status: u16, max_frame: u32) {
    with_block(out, id, false, max_frame, |block| {
        hpack::encode_status(block, status)
    });
}

/// An answer of the connection itself (a refused request): the status alone, no body.
pub fn refusal(out: &mut Vec<u8>, id: u32, status: u16, max_frame: u32) {
    with_block(out, id, true, max_frame, |block| {
        hpack::encode_status(block, status);
        with_date(|d| hpack::encode_field(block, b"date", d, false));
    });
}
