//! A request body read by the connection and handed to the flow one chunk at a time: the
//! connection decodes the framing (`Content-Length` or chunked) out of its read buffer and
//! fills a one-chunk slot whenever the reader (usually the upstream client) has taken the
//! last one, so a slow upstream slows the client instead of filling memory.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

use super::decode::Decoder;
pub use super::decode::{Framing, Step};
use crate::l7::body::BoxError;

/// Why a request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection before the end of the request body")]
    Incomplete,
    #[error("the client sent a malformed chunked request body: {0}")]
    Malformed(&'static str),
    #[error("reading the request body from the client: {0}")]
    Io(#[from] io::Error),
    #[error("the request was answered before its body was read to the end")]
    Abandoned,
}

#[derive(Default)]
struct Slot {
    chunk: Option<Result<Bytes, BodyError>>,
    /// The connection sent the last chunk (or gave up: then `chunk` holds the error).
    ended: bool,
    /// The body was dropped: nobody will read further chunks.
    dropped: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

fn lock(s: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The flow's side: an [`hyper::body::Body`] with the exact length when the client declared
/// one.
pub struct RequestBody {
    slot: Arc<Mutex<Slot>>,
    length: Option<u64>,
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut s = lock(&self.slot);
        match s.chunk.take() {
            Some(chunk) => {
                if let Some(w) = s.writer.take() {
                    w.wake();
                }
                Poll::Ready(Some(chunk.map(Frame::data).map_err(Into::into)))
            }
            None if s.ended => Poll::Ready(None),
            None => {
                s.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.slot);
        s.ended && s.chunk.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut s = lock(&self.slot);
        s.dropped = true;
        if let Some(w) = s.writer.take() {
            w.wake();
        }
    }
}

/// The connection's side: decodes the body out of the read buffer into the slot.
pub struct Feed {
    slot: Arc<Mutex<Slot>>,
    decoder: Decoder,
    /// Why the body could not be read to its end, once it could not.
    failed: Option<Failed>,
}

/// How a request body failed, as far as the connection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// The client broke the body's framing: the request is answered 400.
    Malformed,
    /// Cut short or unreadable: the client is gone or going.
    Lost,
}

impl Feed {
    pub fn new(framing: Framing) -> (Feed, RequestBody) {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let length = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        let feed = Feed {
            slot: slot.clone(),
            decoder: Decoder::new(framing),
            failed: None,
        };
        (feed, RequestBody { slot, length })
    }

    /// The whole body has been handed over.
    pub fn done(&self) -> bool {
        self.decoder.done()
    }

    /// Ready when the reader took the last chunk; `Err` when the body was dropped.
    pub fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), BodyError>> {
        let mut s = lock(&self.slot);
        if s.dropped {
            return Poll::Ready(Err(BodyError::Abandoned));
        }
        if s.chunk.is_none() {
            return Poll::Ready(Ok(()));
        }
        s.writer = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Hands `chunk` to the reader (after [`Feed::poll_room`] said there is room).
    pub fn send(&self, chunk: Bytes) {
        let mut s = lock(&self.slot);
        s.chunk = Some(Ok(chunk));
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// The end of the body: the reader sees the end once it took the last chunk.
    pub fn finish(&mut self) {
        self.decoder.finish();
        let mut s = lock(&self.slot);
        s.ended = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Why the body ended before its end, if it did; where the next request would start is
    /// then unknown.
    pub fn failed(&self) -> Option<Failed> {
        self.failed
    }

    /// The body cannot be completed: the reader's next frame is `e`.
    pub fn fail(&mut self, e: BodyError) {
        self.failed = Some(match e {
            BodyError::Malformed(_) => Failed::Malformed,
            _ => Failed::Lost,
        });
        self.decoder.finish();
        let mut s = lock(&self.slot);
        s.chunk = Some(Err(e));
        s.ended = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Decodes the next piece of the body out of `buf` (see [`Decoder::decode`]).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, BodyError> {
        self.decoder
            .decode(buf)
            .map_err(|e| BodyError::Malformed(e.0))
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if !self.decoder.done() {
            // The connection stopped feeding (the request was answered early, or the
            // connection ended): the reader must not take a cut body for a whole one.
            self.fail(BodyError::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abandoned_feed_fails_the_reader_instead_of_ending_it() {
        use http_body_util::BodyExt;
        let (feed, body) = Feed::new(Framing::Length(10));
        feed.send(Bytes::from_static(b"abc"));
        drop(feed);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let got = rt.block_on(body.collect());
        assert!(got.is_err(), "a cut body must not read as complete");
    }
}
