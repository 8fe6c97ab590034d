//! Read buffers kept per thread between uses.
//!
//! A connection between two requests holds no buffer (an idle client costs a few hundred
//! bytes, not a buffer), so each request used to allocate its head buffer, and the first
//! split of a head out of it allocated again (`bytes` moves a buffer to shared storage the
//! first time part of it is split off). A buffer handed back here when its owner goes idle
//! is taken by the next request on the same thread, already shared and with its room
//! reclaimed: neither allocation happens again.
//!
//! A buffer may come back while pieces of it still live elsewhere (a response head's fields
//! until the response is written). It is reclaimed only when taken, and only when nobody else
//! holds any of its bytes by then; otherwise it is dropped, and its memory goes when its last
//! piece does. What a thread keeps is bounded: [`KEPT`] buffers of at most [`LARGEST`] bytes.

use std::cell::RefCell;

use bytes::BytesMut;

/// The room a taken buffer has at least: one read of a request or response head.
pub const SIZE: usize = 4096;
/// Buffers kept per thread at most (256 KiB of 4 KiB buffers): enough for the exchanges one
/// thread has in flight at once under load; more are freed.
const KEPT: usize = 64;
/// A buffer grown past this (a large head, a body read) is freed, not kept.
const LARGEST: usize = 16 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least [`SIZE`] bytes: a spare one of this thread when one
/// is free again, else a new one.
pub fn take() -> BytesMut {
    let reused = SPARE
        .try_with(|spare| {
            let mut spare = spare.borrow_mut();
            while let Some(mut buf) = spare.pop() {
                if buf.try_reclaim(SIZE) && buf.capacity() <= LARGEST {
                    return Some(buf);
                }
            }
            None
        })
        .ok()
        .flatten();
    reused.unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Keeps `buf`, emptied, for a later [`take`] on this thread (or frees it when the thread
/// keeps enough already).
pub fn give(mut buf: BytesMut) {
    if buf.capacity() == 0 || buf.capacity() > LARGEST {
        return;
    }
    buf.clear();
    // A thread being torn down keeps nothing.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(buf);
        }
    });
}

/// Buffers this thread keeps now (for tests).
#[cfg(test)]
fn kept() -> usize {
    SPARE.with_borrow(Vec::len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer given back is the one taken next, with its room back and without a new
    /// allocation; one whose bytes are still held elsewhere is not reused until they go.
    #[test]
    fn a_buffer_comes_back_when_nobody_holds_its_bytes() {
        std::thread::spawn(|| {
            let mut buf = take();
            assert!(buf.capacity() >= SIZE);
            buf.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            let head = buf.split_to(18).freeze();
            let at = head.as_ptr();
            give(buf);
            assert_eq!(kept(), 1);

            // The head still lives: the buffer cannot be reclaimed, a new one comes.
            let other = take();
            assert_eq!(kept(), 0);
            assert_ne!(other.as_ptr(), at);
            assert!(other.capacity() >= SIZE);
            drop(head);

            let mut buf = other;
            buf.extend_from_slice(b"abc");
            let piece = buf.split_to(3).freeze();
            let at = piece.as_ptr();
            give(buf);
            drop(piece);
            let again = take();
            assert_eq!(again.as_ptr(), at, "the same memory, from its start");
            assert!(again.is_empty() && again.capacity() >= SIZE);

            // Grown past the largest kept: freed, not kept.
            let mut big = BytesMut::with_capacity(LARGEST + 1);
            big.extend_from_slice(b"x");
            give(big);
            assert_eq!(kept(), 0);

            for _ in 0..KEPT + 5 {
                give(BytesMut::with_capacity(SIZE));
            }
            assert_eq!(kept(), KEPT, "bounded");
        })
        .join()
        .expect("test thread");
    }
}
