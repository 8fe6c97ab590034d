//! Bodies buffered for templates (`req.body`, `res.body` and their `_hex` forms), bounded by
//! `L7_MAX_BUFFER_SIZE` per body and by the global L7 budget. The cap is checked while reading
//! (0.9.2 read a whole chunked body first), and a refused body is not lost: the bytes already
//! read go back in front of the rest of the stream, so it can still be forwarded.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use vane_actors::memory::{BufferGuard, MemoryBudget};

use super::body::{self, Body, BoxError};

/// A body held in memory, charged to the L7 budget while it lives.
pub struct Buffered {
    pub bytes: Bytes,
    _guard: BufferGuard,
}

/// Why a body was not buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TooLarge,
    Budget,
    Broken,
}

/// Reads `body` into memory unless it is larger than `max` (declared or actual) or the
/// budget refuses; returns the body to send on (the buffered copy, or the original stream with
/// what was read put back) and the buffer.
pub async fn buffer(
    mut body: Body,
    declared: Option<u64>,
    max: usize,
    budget: &Arc<MemoryBudget>,
) -> (Body, Result<Buffered, Refused>) {
    if declared.is_some_and(|n| n > max as u64) {
        return (body, Err(Refused::TooLarge));
    }
    let Some(mut guard) = budget.try_reserve(0) else {
        return (body, Err(Refused::Budget));
    };
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut total = 0usize;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                tracing::debug!("body ended with an error while buffering: {e}");
                return (prefixed(chunks, body::empty()), Err(Refused::Broken));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: not kept
        };
        total += data.len();
        let refused = if total > max {
            Some(Refused::TooLarge)
        } else if !guard.grow(data.len() as u64) {
            tracing::warn!("L7 Global Buffer Limit reached!");
            Some(Refused::Budget)
        } else {
            None
        };
        chunks.push_back(data);
        if let Some(why) = refused {
            metrics::counter!("vane_l7_buffer_refused_total", "reason" => match why {
                Refused::TooLarge => "too_large",
                Refused::Budget => "budget",
                Refused::Broken => "broken",
            })
            .increment(1);
            return (prefixed(chunks, body), Err(why));
        }
    }
    let mut all = BytesMut::with_capacity(total);
    for c in chunks {
        all.extend_from_slice(&c);
    }
    let bytes = all.freeze();
    (
        body::full(bytes.clone()),
        Ok(Buffered {
            bytes,
            _guard: guard,
        }),
    )
}

fn prefixed(head: VecDeque<Bytes>, rest: Body) -> Body {
    BodyExt::boxed(Prefixed { head, rest })
}

/// `head` chunks, then whatever `rest` still yields.
struct Prefixed {
    head: VecDeque<Bytes>,
    rest: Body,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(c) = self.head.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(c))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let head: u64 = self.head.iter().map(|c| c.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut h = SizeHint::new();
        h.set_lower(head + rest.lower());
        if let Some(u) = rest.upper() {
            h.set_upper(head + u);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&'static [u8]]) -> Body {
        let head = parts.iter().map(|p| Bytes::from_static(p)).collect();
        prefixed(head, body::empty())
    }

    async fn all(b: Body) -> Vec<u8> {
        b.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn buffers_within_the_caps_and_gives_back_what_it_refused() {
        let budget = MemoryBudget::new(1 << 20);
        let (b, buf) = buffer(chunked(&[b"ab", b"cd"]), None, 10, &budget).await;
        let buf = buf.expect("buffered");
        assert_eq!(&buf.bytes[..], b"abcd");
        assert_eq!(budget.used(), 4);
        assert_eq!(all(b).await, b"abcd");
        drop(buf);
        assert_eq!(budget.used(), 0, "released with the buffer");

        // Over the per-body cap while reading: refused, and nothing is lost.
        let (b, buf) = buffer(chunked(&[b"abc", b"def", b"ghi"]), None, 5, &budget).await;
        assert_eq!(buf.err(), Some(Refused::TooLarge));
        assert_eq!(all(b).await, b"abcdefghi");
        assert_eq!(budget.used(), 0);

        // Declared too large: not even read.
        let (b, buf) = buffer(chunked(&[b"xyz"]), Some(100), 5, &budget).await;
        assert_eq!(buf.err(), Some(Refused::TooLarge));
        assert_eq!(all(b).await, b"xyz");

        // Over the global budget.
        let small = MemoryBudget::new(4);
        let (b, buf) = buffer(chunked(&[b"abc", b"def"]), None, 100, &small).await;
        assert_eq!(buf.err(), Some(Refused::Budget));
        assert_eq!(all(b).await, b"abcdef");
        assert_eq!(small.used(), 0);
    }
}
