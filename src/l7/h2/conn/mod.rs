//! One HTTP/2 connection, served in one task: frames are read and handled in the order they
//! came, each request's flow runs as a future of this task (no task spawned per stream, no
//! channel between the socket and a stream), and everything the round produced (responses,
//! window updates, acknowledgements) leaves in one write. Between requests the connection
//! keeps no buffer: it waits for the socket as the HTTP/1.1 server does.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::closed::Recent;
use super::frame::{self, FrameError, Head, Reason, Settings, HEAD_LEN};
use super::hpack::{self, Decoder, HpackError};
use super::inbox::BodyError;
use super::request;
use super::respond;
use super::stream::{close, Block, Ended, Handled, Out, Stream, StreamIds};
use crate::l7::h1::Readiness;
use crate::l7::reply::Reply;
use crate::l7::server::{count_connection_error as count, Aborted, Ctx};

mod recv;

/// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS), counting the
/// flows of streams it reset that have not stopped yet.
pub const MAX_STREAMS: usize = 256;
/// What a client may send on one stream before the flow reads it.
const STREAM_WINDOW: u32 = 256 * 1024;
/// And on the whole connection.
const CONN_WINDOW: u32 = 1024 * 1024;
/// The most a header block may take before it is decoded (its HEADERS and CONTINUATION
/// frames together); past it the connection ends.
const MAX_BLOCK: usize = request::MAX_LIST + 16 * 1024;
/// CONTINUATION frames a header block may take (a flood of tiny ones is refused).
const MAX_CONTINUATIONS: usize = 64;
/// Output waiting to be written past which no more is produced (response bodies) and no
/// more input read, until the client has taken it.
const HIGH_WATER: usize = 64 * 1024;
/// Rounds of reading, answering and writing in one poll before the task yields.
const ROUNDS: usize = 32;
/// The decoder's dynamic table, at its default size.
const HEADER_TABLE: usize = 4096;

thread_local! {
    /// Where Huffman-coded strings are decoded: the thread's, not each connection's.
    static SCRATCH: std::cell::RefCell<hpack::Scratch> = std::cell::RefCell::default();
}

/// Why the connection ends other than by a close.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Protocol(#[from] FrameError),
    #[error("header compression: {0}")]
    Compression(#[from] HpackError),
    #[error("client I/O: {0}")]
    Io(#[from] io::Error),
}

impl ConnError {
    /// The code a GOAWAY gives the client, for an error of the protocol.
    fn reason(&self) -> Option<Reason> {
        match self {
            ConnError::Protocol(FrameError::Connection(reason, _)) => Some(*reason),
            ConnError::Compression(_) => Some(Reason::Compression),
            ConnError::Protocol(FrameError::Stream(..)) | ConnError::Io(_) => None,
        }
    }
}

pub struct Connection<'a, IO> {
    ctx: &'a Arc<Ctx>,
    io: &'a mut IO,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// How much of `wbuf` is written.
    written: usize,
    decoder: Decoder,
    streams: HashMap<u32, Stream, BuildHasherDefault<StreamIds>>,
    /// The streams' flows; made with the first stream and dropped when the connection goes
    /// idle (an empty set still holds two allocations).
    handlers: Option<FuturesUnordered<Handled>>,
    /// The client's settings that matter to sending.
    peer_window: u32,
    peer_max_frame: u32,
    send_window: i64,
    recv_window: i64,
    recv_taken: usize,
    /// The streams the client opened, and how the recent ones closed.
    recent: Recent,
    preface: bool,
    settings: bool,
    block: Option<Block>,
    /// GOAWAY sent: no stream above this id is served.
    going_away: Option<u32>,
    read_closed: bool,
    /// The round's output waits one pass of the thread's run queue: the other connections
    /// whose upstream answers came in the same wake-up write theirs in the same burst, and a
    /// client that sleeps between bursts wakes once for all of them, not once per
    /// connection (one data-plane thread: h2load's sleeps per request fell from 0.085 to
    /// 0.031, HAProxy's 0.029, and requests per second rose 4-30 %).
    deferred: bool,
}

impl<'a, IO> Connection<'a, IO>
where
    IO: AsyncRead + AsyncWrite + Readiness + Unpin,
{
    /// A connection whose first bytes (`pre`, maybe the preface) were read already.
    pub fn new(ctx: &'a Arc<Ctx>, io: &'a mut IO, pre: Bytes) -> Self {
        let mut wbuf = Vec::with_capacity(64);
        Settings {
            max_concurrent_streams: Some(MAX_STREAMS as u32),
            initial_window_size: Some(STREAM_WINDOW),
            max_header_list_size: Some(request::MAX_LIST as u32),
            enable_connect_protocol: Some(true),
            ..Settings::default()
        }
        .write(&mut wbuf);
        frame::write_window_update(&mut wbuf, 0, CONN_WINDOW - frame::DEFAULT_WINDOW);
        Self {
            ctx,
            io,
            rbuf: BytesMut::from(&pre[..]),
            wbuf,
            written: 0,
            decoder: Decoder::new(HEADER_TABLE),
            streams: HashMap::default(),
            handlers: None,
            peer_window: frame::DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_window: i64::from(CONN_WINDOW),
            recv_taken: 0,
            recent: Recent::default(),
            preface: false,
            settings: false,
            block: None,
            going_away: None,
            read_closed: false,
            deferred: false,
        }
    }

    /// Stops taking new streams (draining): a GOAWAY now, the open ones finish.
    pub fn go_away(&mut self) {
        if self.going_away.is_none() {
            frame::write_goaway(&mut self.wbuf, self.recent.last(), Reason::NoError);
            self.going_away = Some(self.recent.last());
        }
    }

    /// Before closing a connection that sat idle: a GOAWAY, written if the socket takes it
    /// now, so the client knows no request of its was cut.
    pub fn say_goodbye(&mut self, cx: &mut Context<'_>) {
        self.go_away();
        let _ = self.poll_flush(cx);
    }

    /// Drives the connection until it ends: `Ok` when closed in order.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        match self.poll_inner(cx) {
            Poll::Ready(Err(e)) => {
                // Tell the client why, if the socket still takes it.
                if let Some(reason) = e.reason() {
                    self.wbuf.truncate(self.written);
                    frame::write_goaway(&mut self.wbuf, self.recent.last(), reason);
                    let _ = self.poll_flush(cx);
                }
                Poll::Ready(Err(e))
            }
            other => other,
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnError>> {
        for _ in 0..ROUNDS {
            let mut progress = false;
            if !self.read_closed && self.wbuf.len() < HIGH_WATER {
                match self.poll_read(cx)? {
                    Poll::Ready(0) => {
                        self.read_closed = true;
                        progress = true;
                    }
                    Poll::Ready(_) => progress = true,
                    Poll::Pending => {}
                }
                self.frames()?;
            }
            while let Some(Poll::Ready(Some((id, ended)))) =
                self.handlers.as_mut().map(|h| h.poll_next_unpin(cx))
            {
                match ended {
                    Ended::Answered(r) => self.respond(id, r),
                    Ended::Cancelled => {}
                    Ended::Panicked => {
                        tracing::error!(listener = %self.ctx.key, stream = id, "HTTP/2 stream's flow panicked; stream reset");
                        metrics::counter!("vane_session_panics_total", "listener" => self.ctx.key.to_string()).increment(1);
                        self.reset(id, Reason::Internal);
                    }
                }
                progress = true;
            }
            self.give_back(cx);
            progress |= self.pump(cx);
            self.reap();
            if !self.deferred && self.written < self.wbuf.len() && !self.read_closed {
                // Write after the thread's other ready tasks have run (see `deferred`).
                self.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.deferred = false;
            let blocked = self.wbuf.len() >= HIGH_WATER;
            let flushed = self.poll_flush(cx)?;
            // Reading and the response bodies waited for this write, and nothing else will
            // wake them: go round again.
            progress |= blocked && flushed;
            let quiet = self.streams.is_empty() && self.flows() == 0 && flushed;
            if quiet && (self.read_closed || self.going_away.is_some()) {
                return Poll::Ready(Ok(()));
            }
            if quiet && self.rbuf.is_empty() {
                // Idle: hold no buffers while waiting for the next request.
                self.rbuf = BytesMut::new();
                self.wbuf = Vec::new();
                self.written = 0;
                self.handlers = None;
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // A client that keeps this busy yields the thread to the other connections.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Flows still running (those of reset streams until they stop).
    fn flows(&self) -> usize {
        self.handlers.as_ref().map_or(0, FuturesUnordered::len)
    }

    /// Reads what the socket has: the byte count (0 at the end), or pending. An idle
    /// connection waits for readability before it takes a buffer.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() == 0 {
            std::task::ready!(self.io.poll_readable(cx))?;
        }
        let want = HEAD_LEN + self.peer_frame_need();
        if self.rbuf.capacity() - self.rbuf.len() < want.min(4096) {
            self.rbuf.reserve(want.max(4096));
        }
        let read = std::pin::pin!(self.io.read_buf(&mut self.rbuf));
        read.poll(cx)
    }

    /// How much the frame at the front of the read buffer still needs.
    fn peer_frame_need(&self) -> usize {
        match self.rbuf.first_chunk::<HEAD_LEN>() {
            Some(head) => {
                (HEAD_LEN + Head::parse(head).len as usize).saturating_sub(self.rbuf.len())
            }
            None => frame::DEFAULT_MAX_FRAME as usize,
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Result<bool, ConnError> {
        while self.written < self.wbuf.len() {
            match Pin::new(&mut *self.io).poll_write(cx, &self.wbuf[self.written..]) {
                Poll::Ready(Ok(0)) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Err(e.into()),
                Poll::Pending => return Ok(false),
            }
        }
        if !self.wbuf.is_empty() {
            self.wbuf.clear();
            self.written = 0;
            if Pin::new(&mut *self.io).poll_flush(cx)?.is_pending() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends RST_STREAM, remembering it: frames of the stream that crossed it are ignored.
    fn refuse(&mut self, id: u32, reason: Reason) {
        frame::write_rst_stream(&mut self.wbuf, id, reason);
        self.recent.reset_here(id);
    }

    /// Resets a stream (a stream error): RST_STREAM, and its flow stopped.
    fn reset(&mut self, id: u32, reason: Reason) {
        self.refuse(id, reason);
        if let Some(s) = self.streams.remove(&id) {
            self.close(s, Some(BodyError::Reset));
        }
    }

    /// Lets go of a stream: its flow is stopped if it still runs, its body ended, and the
    /// window its unread data held is given back to the connection.
    fn close(&mut self, mut s: Stream, error: Option<BodyError>) {
        self.recv_taken += close(&mut s, error);
    }

    /// The flow's answer: the response head now, its body as the windows allow.
    fn respond(&mut self, id: u32, r: Result<Reply, Aborted>) {
        let Ok(reply) = r else {
            // Aborted by the flow: the stream is reset, no answer.
            if self.streams.contains_key(&id) {
                self.reset(id, Reason::Cancel);
            }
            return;
        };
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let bodiless = s.head_request || matches!(reply.status.as_u16(), 204 | 304);
        let end = bodiless || reply.body.is_end_stream();
        respond::head(
            &mut self.wbuf,
            id,
            &reply,
            bodiless,
            end,
            self.peer_max_frame,
        );
        s.send = if end {
            Out::Done
        } else {
            Out::Body {
                body: reply.body,
                pending: Bytes::new(),
            }
        };
    }

    /// Sends what the response bodies have, as far as the windows and `HIGH_WATER` allow.
    fn pump(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut failed = Vec::new();
        for (&id, s) in &mut self.streams {
            let Out::Body { body, pending } = &mut s.send else {
                continue;
            };
            loop {
                if self.wbuf.len() >= HIGH_WATER {
                    return progress;
                }
                if pending.is_empty() {
                    match Pin::new(&mut *body).poll_frame(cx) {
                        Poll::Ready(Some(Ok(f))) => match f.into_data() {
                            Ok(d) => *pending = d,
                            Err(f) => {
                                if let Ok(t) = f.into_trailers() {
                                    respond::trailers(&mut self.wbuf, id, &t, self.peer_max_frame);
                                } else {
                                    frame::write_data_head(&mut self.wbuf, id, 0, true);
                                }
                                s.send = Out::Done;
                                progress = true;
                                break;
                            }
                        },
                        Poll::Ready(None) => {
                            frame::write_data_head(&mut self.wbuf, id, 0, true);
                            s.send = Out::Done;
                            progress = true;
                            break;
                        }
                        Poll::Ready(Some(Err(e))) => {
                            tracing::debug!(stream = id, "HTTP/2 response body failed: {e}");
                            failed.push(id);
                            break;
                        }
                        Poll::Pending => break,
                    }
                    if pending.is_empty() {
                        continue;
                    }
                }
                let window = self.send_window.min(s.send_window);
                if window <= 0 {
                    break;
                }
                let n = pending
                    .len()
                    .min(window as usize)
                    .min(self.peer_max_frame as usize);
                let chunk = pending.split_to(n);
                let last = pending.is_empty() && body.is_end_stream();
                frame::write_data_head(&mut self.wbuf, id, n as u32, last);
                self.wbuf.extend_from_slice(&chunk);
                self.send_window -= n as i64;
                s.send_window -= n as i64;
                progress = true;
                if last {
                    s.send = Out::Done;
                    break;
                }
            }
        }
        for id in failed {
            self.reset(id, Reason::Internal);
        }
        progress
    }

    /// Gives back the window of what the flows read, half a window at a time.
    fn give_back(&mut self, cx: &mut Context<'_>) {
        for (&id, s) in &mut self.streams {
            if let Some(inbox) = &s.inbox {
                let n = inbox.taken(cx.waker());
                self.recv_taken += n;
                s.recv_taken += n;
                if s.recv_open && s.recv_taken >= STREAM_WINDOW as usize / 2 {
                    frame::write_window_update(&mut self.wbuf, id, s.recv_taken as u32);
                    s.recv_window += s.recv_taken as i64;
                    s.recv_taken = 0;
                }
            }
        }
        if self.recv_taken >= CONN_WINDOW as usize / 2 {
            frame::write_window_update(&mut self.wbuf, 0, self.recv_taken as u32);
            self.recv_window += self.recv_taken as i64;
            self.recv_taken = 0;
        }
    }

    /// Removes the streams whose response is sent. One whose client is still sending is
    /// told to stop (RST_STREAM NO_ERROR, as 8.1 allows once the response is complete).
    fn reap(&mut self) {
        let (wbuf, taken, recent) = (&mut self.wbuf, &mut self.recv_taken, &mut self.recent);
        self.streams.retain(|&id, s| {
            if !matches!(s.send, Out::Done) {
                return true;
            }
            if s.recv_open {
                frame::write_rst_stream(wbuf, id, Reason::NoError);
                recent.reset_here(id);
            }
            *taken += close(s, Some(BodyError::Gone));
            false
        });
    }
}
