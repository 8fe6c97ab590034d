//! A request body on its way from the connection to the application flow. The connection
//! puts DATA in; the flow's reads take it out and count what they took, and the connection
//! gives that much window back to the client. So a stream holds at most its window of
//! unread data, and a flow that reads slowly slows its client, not the others.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};

use crate::l7::body::{Body, BoxError};

/// Why the body ends early, for the flow reading it.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client reset the stream")]
    Reset,
    #[error("the request body does not add up to its Content-Length")]
    Length,
    #[error("the connection ended")]
    Gone,
}

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<Bytes>,
    ended: bool,
    error: Option<BodyError>,
    /// Bytes the reader took that the connection has not given back as window yet.
    taken: usize,
    reader: Option<Waker>,
    /// The connection, to be woken when window can be given back.
    conn: Option<Waker>,
    /// Declared length, for the size hint.
    length: Option<u64>,
}

/// The connection's side.
#[derive(Debug, Clone, Default)]
pub struct Inbox(Arc<Mutex<State>>);

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A body for the flow, reading from this inbox.
    pub fn body(&self, length: Option<u64>) -> Body {
        self.lock().length = length;
        RequestBody(self.clone()).boxed()
    }

    pub fn push(&self, data: Bytes) {
        let mut s = self.lock();
        s.chunks.push_back(data);
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    pub fn end(&self, error: Option<BodyError>) {
        let mut s = self.lock();
        s.ended = true;
        if s.error.is_none() {
            s.error = error;
        }
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// What the reader took since the last call (window to give back), registering the
    /// connection to be woken when it takes more.
    pub fn taken(&self, conn: &Waker) -> usize {
        let mut s = self.lock();
        if !s.conn.as_ref().is_some_and(|w| w.will_wake(conn)) {
            s.conn = Some(conn.clone());
        }
        std::mem::take(&mut s.taken)
    }

    /// How many bytes may still be put in before `max` wait unread; at 0, `waker` is woken
    /// when the reader takes some (a writer's backpressure: the tunnel's way to the client).
    pub fn room(&self, max: usize, waker: &Waker) -> usize {
        let mut s = self.lock();
        let room = max.saturating_sub(s.chunks.iter().map(Bytes::len).sum());
        if room == 0 {
            s.conn = Some(waker.clone());
        }
        room
    }

    /// Bytes received and not read.
    pub fn unread(&self) -> usize {
        self.lock().chunks.iter().map(Bytes::len).sum()
    }

    /// When the stream ends: drops what was not read and returns it with what was read and
    /// not yet counted, all of it window the connection gives back.
    pub fn release(&self) -> usize {
        let mut s = self.lock();
        let unread: usize = s.chunks.drain(..).map(|c| c.len()).sum();
        unread + std::mem::take(&mut s.taken)
    }

    /// Whether the reader is gone (the flow dropped the body).
    pub fn abandoned(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

struct RequestBody(Inbox);

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut s = self.0.lock();
        if let Some(d) = s.chunks.pop_front() {
            s.taken += d.len();
            if let Some(w) = &s.conn {
                w.wake_by_ref();
            }
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(e) = s.error.take() {
            return Poll::Ready(Some(Err(Box::new(e))));
        }
        if s.ended {
            return Poll::Ready(None);
        }
        if !s.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let s = self.0.lock();
        s.ended && s.chunks.is_empty() && s.error.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.lock().length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Body as _;

    #[tokio::test]
    async fn data_flows_and_what_is_read_is_counted() {
        let inbox = Inbox::default();
        let mut body = inbox.body(Some(5));
        assert_eq!(body.size_hint().exact(), Some(5));
        inbox.push(Bytes::from_static(b"abc"));
        inbox.push(Bytes::from_static(b"de"));
        let waker = std::task::Waker::noop();
        assert_eq!(inbox.taken(waker), 0);
        assert_eq!(inbox.unread(), 5);
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "abc");
        assert_eq!(inbox.taken(waker), 3);
        assert_eq!(inbox.taken(waker), 0);
        inbox.end(None);
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "de");
        assert!(body.frame().await.is_none());
        assert!(!inbox.abandoned());
        drop(body);
        assert!(inbox.abandoned());
    }

    #[tokio::test]
    async fn an_error_reaches_the_reader() {
        let inbox = Inbox::default();
        let mut body = inbox.body(None);
        inbox.end(Some(BodyError::Reset));
        assert!(body.frame().await.unwrap().is_err());
    }
}
