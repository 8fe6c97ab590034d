//! A request body read by the connection and handed to the flow one chunk at a time: the
//! connection decodes the framing (`Content-Length` or chunked) out of its read buffer and
//! fills a one-chunk slot whenever the reader (usually the upstream client) has taken the
//! last one, so a slow upstream slows the client instead of filling memory.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};

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

/// How the body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk: this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
}

/// The longest chunk-size line (size, extensions) and the most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

/// The connection's side: decodes the body out of the read buffer into the slot.
pub struct Feed {
    slot: Arc<Mutex<Slot>>,
    state: State,
    trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunked),
    Done,
}

/// What one step of decoding found in the buffer.
pub enum Step {
    /// A chunk of body bytes.
    Data(Bytes),
    /// The last chunk: the framing after it, already in the buffer, ends the body.
    Last(Bytes),
    /// The body is complete.
    End,
    /// More bytes from the client are needed.
    More,
}

impl Feed {
    pub fn new(framing: Framing) -> (Feed, RequestBody) {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let (state, length) = match framing {
            Framing::Length(n) => (State::Length(n), Some(n)),
            Framing::Chunked => (State::Chunked(Chunked::Size), None),
        };
        let feed = Feed {
            slot: slot.clone(),
            state,
            trailer_bytes: 0,
        };
        (feed, RequestBody { slot, length })
    }

    /// The whole body has been handed over.
    pub fn done(&self) -> bool {
        self.state == State::Done
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
        self.state = State::Done;
        let mut s = lock(&self.slot);
        s.ended = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// The body cannot be completed: the reader's next frame is `e`.
    pub fn fail(&mut self, e: BodyError) {
        self.state = State::Done;
        let mut s = lock(&self.slot);
        s.chunk = Some(Err(e));
        s.ended = true;
        if let Some(w) = s.reader.take() {
            w.wake();
        }
    }

    /// Decodes the next piece of the body out of `buf` (consuming what it decoded). A piece
    /// that ends the body comes as [`Step::Last`], so the reader learns of the end with it
    /// instead of waiting for one more poll that nobody may make.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, BodyError> {
        match self.step(buf, true)? {
            Step::Data(d) => {
                let last = match self.state {
                    State::Length(0) | State::Done => true,
                    State::Length(_) | State::Chunked(Chunked::Data(_)) => false,
                    State::Chunked(_) => matches!(self.step(buf, false)?, Step::End),
                };
                Ok(if last { Step::Last(d) } else { Step::Data(d) })
            }
            other => Ok(other),
        }
    }

    /// One step of decoding; with `data: false` it stops (`More`) before any body bytes.
    fn step(&mut self, buf: &mut BytesMut, data: bool) -> Result<Step, BodyError> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Length(0) => return Ok(Step::End),
                State::Length(left) => {
                    if buf.is_empty() || !data {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    self.state = State::Length(left - n as u64);
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::Chunked(Chunked::Size) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&line)?;
                    self.state = State::Chunked(if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    });
                }
                State::Chunked(Chunked::Data(left)) => {
                    if buf.is_empty() || !data {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let rest = left - n as u64;
                    self.state = State::Chunked(if rest == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(rest)
                    });
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::Chunked(Chunked::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(BodyError::Malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Chunked(Chunked::Size);
                }
                State::Chunked(Chunked::Trailers) => {
                    let room = MAX_TRAILERS.saturating_sub(self.trailer_bytes);
                    let Some(line) = take_line(buf, room.min(MAX_CHUNK_LINE * 4))? else {
                        return Ok(Step::More);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        return Ok(Step::End);
                    }
                    // Trailer fields are not forwarded (as most proxies do).
                }
            }
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if self.state != State::Done {
            // The connection stopped feeding (the request was answered early, or the
            // connection ended): the reader must not take a cut body for a whole one.
            self.fail(BodyError::Abandoned);
        }
    }
}

/// One CRLF-terminated line (without the CRLF), or `None` until it is all in `buf`.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, BodyError> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= max => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        Some(_) => Err(BodyError::Malformed("chunk line too long")),
        None if buf.len() > max + 1 => Err(BodyError::Malformed("chunk line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (`1a;ext=1`): hexadecimal, at most 16 digits.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 {
        return Err(BodyError::Malformed("bad chunk size"));
    }
    let mut n = 0u64;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(BodyError::Malformed("bad chunk size")),
        };
        n = (n << 4) | u64::from(v);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, wire: &[u8], step: usize) -> Result<Vec<u8>, BodyError> {
        let (mut feed, _body) = Feed::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match feed.decode(&mut buf)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::Last(d) => {
                    out.extend_from_slice(&d);
                    feed.finish();
                    assert!(feed.done());
                    return Ok(out);
                }
                Step::End => {
                    feed.finish();
                    return Ok(out);
                }
                Step::More => {
                    if fed >= wire.len() {
                        return Err(BodyError::Incomplete);
                    }
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire = b"5;name=v\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let got = decode_all(Framing::Chunked, wire, step).expect("decodes");
            assert_eq!(got, b"hello 0123456789", "step {step}");
        }
        let got = decode_all(Framing::Length(5), b"abcde", 2).expect("decodes");
        assert_eq!(got, b"abcde");
    }

    #[test]
    fn hostile_chunk_framing_is_refused() {
        for wire in [
            &b"zz\r\nab\r\n0\r\n\r\n"[..],
            b"11111111111111111\r\n",
            b"2\r\nabXX0\r\n\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(
                    decode_all(Framing::Chunked, wire, 3),
                    Err(BodyError::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        // A size line that never ends is refused at the cap, not read forever.
        let endless = vec![b'1'; MAX_CHUNK_LINE + 8];
        assert!(matches!(
            decode_all(Framing::Chunked, &endless, 512),
            Err(BodyError::Malformed(_))
        ));
    }

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
