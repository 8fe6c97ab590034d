//! The state of one stream of a connection ([`super::conn`]): how its request body comes and
//! its response goes, the windows of both, and the handle that stops its flow.

use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::Request;

use super::inbox::{BodyError, Inbox};
use crate::l7::body::Body;
use crate::l7::reply::Reply;
use crate::l7::server::{self, Aborted, Ctx};

/// Stops a stream's flow when the client resets the stream: the flow's future returns at
/// its next poll, which the wake brings at once.
#[derive(Default)]
pub(super) struct Cancel {
    pub(super) on: AtomicBool,
    pub(super) waker: AtomicWaker,
}

impl Cancel {
    pub(super) fn cancel(&self) {
        self.on.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// Hashes stream ids (client-chosen, but only odd numbers that rise, at most 256 open):
/// a multiply spreads them over the table, where SipHash cost 360 instructions a request.
#[derive(Default)]
pub(super) struct StreamIds(u64);

impl Hasher for StreamIds {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// How the response of a stream goes.
pub(super) enum Out {
    /// The flow runs.
    Handling,
    /// The body is being sent; `pending` is what it gave that the windows held back.
    Body {
        body: Body,
        pending: Bytes,
    },
    Done,
}

pub(super) struct Stream {
    /// The request body's, while the stream lives (none for a request without one).
    pub(super) inbox: Option<Inbox>,
    /// The client may still send DATA.
    pub(super) recv_open: bool,
    /// The `Content-Length` left to arrive, when declared.
    pub(super) remaining: Option<u64>,
    /// Window the client has left on this stream; what the flow read and was not given back.
    pub(super) recv_window: i64,
    pub(super) recv_taken: usize,
    pub(super) send: Out,
    pub(super) send_window: i64,
    pub(super) head_request: bool,
    pub(super) cancel: Arc<Cancel>,
}

/// Lets go of a stream: its flow is stopped if it still runs, its body ended (with `error`
/// if it was still coming), and the window its unread data held is returned, to be given back
/// to the connection.
pub(super) fn close(s: &mut Stream, error: Option<BodyError>) -> usize {
    s.cancel.cancel();
    let Some(inbox) = s.inbox.take() else {
        return 0;
    };
    if s.recv_open {
        inbox.end(error);
    }
    inbox.release()
}

/// A header block being received: HEADERS, then CONTINUATION until END_HEADERS.
pub(super) struct Block {
    pub(super) stream: u32,
    pub(super) end_stream: bool,
    /// The stream said it depends on itself: reset once the block is decoded.
    pub(super) on_itself: bool,
    /// The HEADERS frame's fragment as read: most blocks are this one frame.
    pub(super) first: Bytes,
    /// The whole block when CONTINUATION frames follow.
    pub(super) joined: Vec<u8>,
    /// CONTINUATION frames so far.
    pub(super) frames: usize,
}

impl Block {
    pub(super) fn bytes(&self) -> &[u8] {
        if self.frames == 0 {
            &self.first
        } else {
            &self.joined
        }
    }
}

/// How a stream's flow ended.
pub(super) enum Ended {
    Answered(Result<Reply, Aborted>),
    /// The client reset the stream first.
    Cancelled,
    /// A bug: the stream is reset, the connection's other streams carry on (as they did with
    /// hyper's task per stream).
    Panicked,
}

pub(super) type Handled = Pin<Box<dyn Future<Output = (u32, Ended)> + Send>>;

/// A stream's flow as a future of the connection's task: stopped by `cancel`, and a panic
/// inside it ends only this stream.
pub(super) fn flow(ctx: Arc<Ctx>, req: Request<Body>, id: u32, cancel: Arc<Cancel>) -> Handled {
    // The flow's future is made inside the box, where it stays: made outside, its kilobyte
    // and more was copied twice on the way in.
    crate::boxed::pin_in_place(|| async move {
        let mut handled = std::pin::pin!(server::handle(ctx, req));
        let ended = std::future::poll_fn(|cx| {
            cancel.waker.register(cx.waker());
            if cancel.on.load(Ordering::Acquire) {
                return Poll::Ready(Ended::Cancelled);
            }
            let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handled.as_mut().poll(cx)
            }));
            match polled {
                Ok(p) => p.map(Ended::Answered),
                Err(_) => Poll::Ready(Ended::Panicked),
            }
        })
        .await;
        (id, ended)
    })
}
