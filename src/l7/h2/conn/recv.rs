//! What the client sends: frames read off the buffer and handled in order (settings, pings,
//! windows, resets, header blocks that open streams or end them, request bodies).

use bytes::{Buf, Bytes};
use futures_util::stream::FuturesUnordered;
use hyper::{Request, Version};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    count, ConnError, Connection, MAX_BLOCK, MAX_CONTINUATIONS, MAX_STREAMS, SCRATCH, STREAM_WINDOW,
};
use crate::l7::h1::Readiness;
use crate::l7::h2::closed::Past;
use crate::l7::h2::frame::{self, Frame, FrameError, Head, Reason, Settings, HEAD_LEN, PREFACE};
use crate::l7::h2::hpack::HpackError;
use crate::l7::h2::inbox::{BodyError, Inbox};
use crate::l7::h2::request::{self, Builder, Refusal};
use crate::l7::h2::respond;
use crate::l7::h2::stream::{flow, Block, Cancel, Out, Stream};

impl<IO> Connection<'_, IO>
where
    IO: AsyncRead + AsyncWrite + Readiness + Unpin,
{
    /// Handles every whole frame in the read buffer.
    pub(super) fn frames(&mut self) -> Result<(), ConnError> {
        if !self.preface {
            if self.rbuf.len() < PREFACE.len() {
                return if self.read_closed && !self.rbuf.is_empty() {
                    Err(FrameError::Connection(Reason::Protocol, "no preface").into())
                } else {
                    Ok(())
                };
            }
            if &self.rbuf[..PREFACE.len()] != PREFACE {
                return Err(FrameError::Connection(Reason::Protocol, "no preface").into());
            }
            self.rbuf.advance(PREFACE.len());
            self.preface = true;
        }
        while self.rbuf.len() >= HEAD_LEN {
            let Some(raw) = self.rbuf.first_chunk::<HEAD_LEN>() else {
                break;
            };
            let head = Head::parse(raw);
            if head.len > frame::DEFAULT_MAX_FRAME {
                return Err(FrameError::Connection(Reason::FrameSize, "frame too large").into());
            }
            let total = HEAD_LEN + head.len as usize;
            if self.rbuf.len() < total {
                break;
            }
            self.rbuf.advance(HEAD_LEN);
            let payload = self.rbuf.split_to(head.len as usize).freeze();
            if !self.settings && head.kind != frame::kind::SETTINGS {
                return Err(
                    FrameError::Connection(Reason::Protocol, "first frame not SETTINGS").into(),
                );
            }
            if let Some(b) = &self.block {
                if head.kind != frame::kind::CONTINUATION || head.stream != b.stream {
                    return Err(FrameError::Connection(
                        Reason::Protocol,
                        "header block interrupted",
                    )
                    .into());
                }
            }
            match Frame::parse(head, payload) {
                Ok(f) => self.frame(f)?,
                Err(FrameError::Stream(id, reason, _)) => self.reset(id, reason),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn frame(&mut self, f: Frame) -> Result<(), ConnError> {
        use FrameError::Connection as Conn;
        match f {
            Frame::Settings { ack, settings } => {
                if !ack {
                    self.settings = true;
                    self.apply(settings)?;
                    frame::write_settings_ack(&mut self.wbuf);
                }
            }
            Frame::Ping { ack, data } => {
                if !ack {
                    frame::write_ping_ack(&mut self.wbuf, &data);
                }
            }
            Frame::GoAway { .. } => {
                // The client opens no more streams; the open ones finish.
                self.going_away.get_or_insert(self.recent.last());
            }
            Frame::WindowUpdate {
                stream: 0,
                increment,
            } => {
                self.send_window += i64::from(increment);
                if self.send_window > i64::from(frame::MAX_WINDOW) {
                    return Err(Conn(Reason::FlowControl, "connection window above 2^31-1").into());
                }
            }
            Frame::WindowUpdate { stream, increment } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.send_window += i64::from(increment);
                    if s.send_window > i64::from(frame::MAX_WINDOW) {
                        self.reset(stream, Reason::FlowControl);
                    }
                } else if stream > self.recent.last() {
                    return Err(Conn(Reason::Protocol, "WINDOW_UPDATE on an idle stream").into());
                }
            }
            Frame::RstStream { stream, .. } => {
                if stream > self.recent.last() {
                    return Err(Conn(Reason::Protocol, "RST_STREAM on an idle stream").into());
                }
                if let Some(s) = self.streams.remove(&stream) {
                    self.close(s, Some(BodyError::Reset));
                }
            }
            Frame::Priority { .. } | Frame::Unknown => {}
            Frame::Headers {
                stream,
                end_stream,
                end_headers,
                fragment,
                priority,
            } => {
                if stream % 2 == 0 {
                    return Err(Conn(Reason::Protocol, "even stream id from a client").into());
                }
                let block = Block {
                    stream,
                    end_stream,
                    on_itself: priority.is_some_and(|p| p.on_itself(stream)),
                    first: fragment,
                    joined: Vec::new(),
                    frames: 0,
                };
                self.block_part(block, end_headers)?;
            }
            Frame::Continuation {
                stream,
                end_headers,
                fragment,
            } => {
                let Some(mut b) = self.block.take().filter(|b| b.stream == stream) else {
                    return Err(Conn(Reason::Protocol, "CONTINUATION without HEADERS").into());
                };
                if b.bytes().len() + fragment.len() > MAX_BLOCK || b.frames >= MAX_CONTINUATIONS {
                    return Err(Conn(Reason::EnhanceYourCalm, "header block too large").into());
                }
                if b.frames == 0 {
                    b.joined.extend_from_slice(&b.first);
                }
                b.joined.extend_from_slice(&fragment);
                b.frames += 1;
                self.block_part(b, end_headers)?;
            }
            Frame::Data {
                stream,
                end_stream,
                data,
                flow_len,
            } => self.data(stream, end_stream, data, flow_len)?,
        }
        Ok(())
    }

    fn apply(&mut self, s: Settings) -> Result<(), ConnError> {
        if let Some(w) = s.initial_window_size {
            let delta = i64::from(w) - i64::from(self.peer_window);
            self.peer_window = w;
            for st in self.streams.values_mut() {
                st.send_window += delta;
                if st.send_window > i64::from(frame::MAX_WINDOW) {
                    return Err(
                        FrameError::Connection(Reason::FlowControl, "window above 2^31-1").into(),
                    );
                }
            }
        }
        if let Some(m) = s.max_frame_size {
            self.peer_max_frame = m;
        }
        Ok(())
    }

    /// A header block so far: handled when it ended, else kept for its CONTINUATION.
    fn block_part(&mut self, b: Block, ended: bool) -> Result<(), ConnError> {
        if ended {
            return self.headers(b);
        }
        self.block = Some(b);
        Ok(())
    }

    /// A whole header block: a new request, or a request's trailers.
    fn headers(&mut self, b: Block) -> Result<(), ConnError> {
        let mut builder = Builder::default();
        SCRATCH.with_borrow_mut(|scratch| {
            self.decoder.decode(b.bytes(), scratch, |f| {
                builder.field(f);
                Ok::<_, HpackError>(())
            })
        })?;
        let id = b.stream;
        if b.on_itself {
            self.recent.open(id);
            self.reset(id, Reason::Protocol);
            return Ok(());
        }
        if id <= self.recent.last() {
            return self.trailers(id, b.end_stream, builder);
        }
        self.recent.open(id);
        if self.going_away.is_some_and(|last| id > last) {
            return Ok(());
        }
        if self.streams.len() >= MAX_STREAMS || self.flows() >= MAX_STREAMS {
            self.refuse(id, Reason::RefusedStream);
            return Ok(());
        }
        let head = match builder.finish() {
            Ok(h) => h,
            Err(Refusal::Malformed(why)) => {
                tracing::debug!(stream = id, "HTTP/2 request refused: {why}");
                count("malformed");
                self.refuse(id, Reason::Protocol);
                return Ok(());
            }
            Err(r @ (Refusal::TooLarge | Refusal::Unforwardable(_))) => {
                let (kind, status) = match r {
                    Refusal::TooLarge => ("too_large", 431),
                    _ => ("malformed", 400),
                };
                count(kind);
                respond::refusal(&mut self.wbuf, id, status, self.peer_max_frame);
                if !b.end_stream {
                    self.refuse(id, Reason::NoError);
                }
                return Ok(());
            }
        };
        self.open(id, head, b.end_stream);
        Ok(())
    }

    /// A header block on a stream opened before: the trailers of a request still sending, or
    /// a frame on a closed stream (5.1).
    fn trailers(&mut self, id: u32, end_stream: bool, fields: Builder) -> Result<(), ConnError> {
        use FrameError::Connection as Conn;
        let Some(s) = self.streams.get_mut(&id).filter(|s| s.recv_open) else {
            return match self.past(id) {
                Past::ResetHere => Ok(()),
                Past::Closed => {
                    self.reset(id, Reason::StreamClosed);
                    Ok(())
                }
                Past::Skipped => {
                    Err(Conn(Reason::Protocol, "HEADERS on a skipped stream id").into())
                }
                Past::Forgotten => {
                    Err(Conn(Reason::StreamClosed, "HEADERS on a closed stream").into())
                }
            };
        };
        // Trailers end the body and are not passed on (as for HTTP/1.1). They come with
        // END_STREAM, without pseudo-headers, after as much body as was declared.
        let checked = fields.trailers();
        if !end_stream || checked.is_err() || s.remaining.is_some_and(|n| n != 0) {
            count("malformed");
            self.reset(id, Reason::Protocol);
            return Ok(());
        }
        if let Some(inbox) = &s.inbox {
            inbox.end(None);
        }
        s.recv_open = false;
        Ok(())
    }

    /// What became of a stream that takes no more frames: half-closed (remote) counts as
    /// closed.
    fn past(&self, id: u32) -> Past {
        if self.streams.contains_key(&id) {
            Past::Closed
        } else {
            self.recent.past(id)
        }
    }

    /// Starts a request's flow.
    fn open(&mut self, id: u32, mut head: request::Head, end_stream: bool) {
        let inbox = (!end_stream).then(Inbox::default);
        let body = match &inbox {
            Some(i) => i.body(head.length),
            None => crate::l7::body::empty(),
        };
        let head_request = head.method == hyper::Method::HEAD;
        let remaining = head.length.filter(|_| !end_stream);
        if end_stream && head.length.is_some_and(|n| n != 0) {
            self.refuse(id, Reason::Protocol);
            return;
        }
        // `Expect: 100-continue` is answered here, at once: the flow reads the body as any.
        if let Some(e) = head.headers.remove(hyper::header::EXPECT) {
            if !end_stream && e.as_bytes().eq_ignore_ascii_case(b"100-continue") {
                respond::interim(&mut self.wbuf, id, 100, self.peer_max_frame);
            }
        }
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = Version::HTTP_2;
        *req.headers_mut() = head.headers;
        if let Some(p) = head.protocol {
            let p = String::from_utf8_lossy(&p);
            req.extensions_mut().insert(hyper::ext::Protocol::from(&*p));
            req.extensions_mut().insert(crate::l7::h2::tunnel::Tunnel);
        }
        let cancel = Arc::new(Cancel::default());
        self.handlers
            .get_or_insert_with(FuturesUnordered::new)
            .push(flow(self.ctx.clone(), req, id, cancel.clone()));
        self.streams.insert(
            id,
            Stream {
                recv_open: inbox.is_some(),
                inbox,
                remaining,
                recv_window: i64::from(STREAM_WINDOW),
                recv_taken: 0,
                send: Out::Handling,
                send_window: i64::from(self.peer_window),
                head_request,
                cancel,
            },
        );
    }

    fn data(&mut self, id: u32, end: bool, data: Bytes, flow: u32) -> Result<(), ConnError> {
        self.recv_window -= i64::from(flow);
        if self.recv_window < 0 {
            return Err(
                FrameError::Connection(Reason::FlowControl, "connection window overrun").into(),
            );
        }
        // Padding counts against the windows but reaches nobody: given back at once.
        self.recv_taken += flow as usize - data.len();
        let Some(s) = self.streams.get_mut(&id).filter(|s| s.recv_open) else {
            if id > self.recent.last() {
                return Err(
                    FrameError::Connection(Reason::Protocol, "DATA on an idle stream").into(),
                );
            }
            self.recv_taken += data.len();
            // An error of the stream, unless it crossed the server's RST_STREAM.
            if matches!(self.past(id), Past::Closed | Past::Skipped) {
                self.reset(id, Reason::StreamClosed);
            }
            return Ok(());
        };
        s.recv_window -= i64::from(flow);
        s.recv_taken += flow as usize - data.len();
        if s.recv_window < 0 {
            self.reset(id, Reason::FlowControl);
            return Ok(());
        }
        let n = data.len() as u64;
        if let Some(left) = &mut s.remaining {
            if n > *left || (end && n != *left) {
                self.reset(id, Reason::Protocol);
                return Ok(());
            }
            *left -= n;
        }
        if let Some(inbox) = &s.inbox {
            if !data.is_empty() {
                inbox.push(data);
            }
            if end {
                inbox.end(None);
            }
        }
        if end {
            s.recv_open = false;
        }
        Ok(())
    }
}
