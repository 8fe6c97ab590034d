//! Responses on the wire: the head written into one buffer with the first piece of the body
//! when it is already there (one write for a small response), then the body framed by
//! `Content-Length` when its length is known, chunked otherwise (close-delimited for an
//! HTTP/1.0 client).

use std::cell::RefCell;
use std::io::{self, IoSlice, Write as _};
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use hyper::body::Body as _;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING,
};
use hyper::{Method, StatusCode, Version};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::decode::Framing;
use crate::l7::body::Body;
use crate::l7::reply::{Headers, Received, Reply};

/// Copy body pieces up to this size into the head's buffer instead of writing them apart.
const COALESCE: usize = 16 * 1024;

/// What the request decided about its response.
pub struct Exchange {
    pub method: Method,
    pub version: Version,
    /// The connection closes after this response.
    pub close: bool,
}

/// Why writing a message stopped.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The socket failed: the peer went away.
    #[error("writing to the peer: {0}")]
    Io(#[from] io::Error),
    /// The body being sent failed (its source broke).
    #[error("the body being sent failed: {0}")]
    Body(crate::l7::body::BoxError),
    #[error("the body ended after {sent} of the {declared} bytes it declared")]
    Short { sent: u64, declared: u64 },
}

/// Writes `reply`; `Ok(true)` when the connection may carry another request.
pub async fn response<IO>(io: &mut IO, reply: Reply, x: &Exchange) -> Result<bool, WriteError>
where
    IO: AsyncWrite + Unpin,
{
    let Reply {
        status,
        mut headers,
        mut body,
    } = reply;
    let bodiless = x.method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let hint = body.size_hint().exact();
    let mut out = Vec::with_capacity(512);
    let (framing, keep) = match &mut headers {
        Headers::Map(h) => map_head(&mut out, status, x, h, bodiless, hint),
        Headers::Received(r) => received_head(&mut out, status, x, r, bodiless, hint),
    };
    match framing {
        None => {
            io.write_all(&out).await?;
            io.flush().await?;
        }
        Some(framing) => send_body(io, out, &mut body, framing).await?,
    }
    Ok(keep)
}

/// The head of a reply whose fields are a map, framed and closed as `x` and the body say;
/// returns the body's framing (`None`: no body) and whether the connection stays open.
fn map_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    x: &Exchange,
    h: &mut HeaderMap,
    bodiless: bool,
    hint: Option<u64>,
) -> (Option<Framing>, bool) {
    let (framing, length) = framing(x, bodiless, hint, declared(h));
    match framing {
        // A bodiless answer keeps the length it has; a HEAD without one gets the body's.
        None => {
            if let Some(n) = length.filter(|_| !h.contains_key(CONTENT_LENGTH)) {
                h.insert(CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
        Some(Framing::Chunked) => {
            h.remove(CONTENT_LENGTH);
            h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        Some(_) => {
            h.remove(TRANSFER_ENCODING);
            // The body's own length replaces a declared one; a declared one stays as it is.
            if let Some(n) = length.filter(|_| hint.is_some()) {
                h.insert(CONTENT_LENGTH, HeaderValue::from(n));
            }
        }
    }
    let keep =
        !x.close && framing != Some(Framing::Close) && !super::head::connection_has(h, "close");
    if !keep {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    } else if x.version == Version::HTTP_10 {
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    head(out, status, x.version, h);
    (framing, keep)
}

/// The head of a reply with an upstream's fields as received: they go out as they came
/// (names in their case), followed by the framing and connection fields this hop decides,
/// by the rule of [`framing`]. The received fields hold no hop-by-hop field and no
/// `Content-Length`.
fn received_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    x: &Exchange,
    r: &Received,
    bodiless: bool,
    hint: Option<u64>,
) -> (Option<Framing>, bool) {
    let (framing, length) = framing(x, bodiless, hint, r.length());
    let keep = !x.close && framing != Some(Framing::Close);
    status_line(out, status, x.version);
    for (name, value) in r.iter() {
        line(out, name, value);
    }
    if let Some(n) = length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(crate::conn::digits(n, &mut [0; 20]));
        out.extend_from_slice(b"\r\n");
    }
    if framing == Some(Framing::Chunked) {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !keep {
        out.extend_from_slice(b"connection: close\r\n");
    } else if x.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    end_head(out, r.has_date());
    (framing, keep)
}

/// This hop's framing of a reply's body, one rule for both kinds of fields: none for a
/// bodiless answer (a HEAD declares the length the body would have); else the body's exact
/// length, else the declared one, else chunked when the peer speaks HTTP/1.1, else until the
/// close. Returns the framing (`None`: no body) and the `Content-Length` to declare.
fn framing(
    x: &Exchange,
    bodiless: bool,
    hint: Option<u64>,
    declared: Option<u64>,
) -> (Option<Framing>, Option<u64>) {
    if bodiless {
        (None, declared.or(hint.filter(|_| x.method == Method::HEAD)))
    } else if let Some(n) = hint.or(declared) {
        (Some(Framing::Length(n)), Some(n))
    } else if x.version == Version::HTTP_11 {
        (Some(Framing::Chunked), None)
    } else {
        (Some(Framing::Close), None)
    }
}

/// Writes `out` (a head) and then `body` framed as `framing`: ready pieces go out with what
/// is buffered, and the buffer is written as soon as the body has nothing ready, so a slow
/// stream (events, long polls) is not held back.
pub async fn send_body<IO>(
    io: &mut IO,
    mut out: Vec<u8>,
    body: &mut Body,
    framing: Framing,
) -> Result<(), WriteError>
where
    IO: AsyncWrite + Unpin,
{
    let mut sent = 0u64;
    loop {
        let frame =
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await
            {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    if !out.is_empty() {
                        io.write_all(&out).await?;
                        io.flush().await?;
                        out.clear();
                    }
                    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                }
            };
        let Some(frame) = frame else { break };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                // What the source gave before it broke still goes out; then the connection
                // closes (the framing cannot be completed).
                if !out.is_empty() {
                    io.write_all(&out).await?;
                    io.flush().await?;
                }
                return Err(WriteError::Body(e));
            }
        };
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers are not forwarded over HTTP/1.1
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        if let Framing::Length(n) = framing {
            if sent > n {
                return Err(WriteError::Short { sent, declared: n });
            }
        }
        let chunked = framing == Framing::Chunked;
        if chunked {
            // Written in place: no allocation per chunk.
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        if data.len() <= COALESCE {
            out.extend_from_slice(&data);
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= COALESCE {
                io.write_all(&out).await?;
                out.clear();
            }
        } else {
            let tail: &[u8] = if chunked { b"\r\n" } else { b"" };
            write_three(io, &out, &mut data, tail).await?;
            out.clear();
        }
    }
    match framing {
        Framing::Length(n) if sent != n => return Err(WriteError::Short { sent, declared: n }),
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        _ => {}
    }
    if !out.is_empty() {
        io.write_all(&out).await?;
    }
    io.flush().await?;
    Ok(())
}

/// Writes `a`, then `b`, then `c` with as few calls as the stream allows.
async fn write_three<IO>(io: &mut IO, a: &[u8], b: &mut Bytes, c: &[u8]) -> io::Result<()>
where
    IO: AsyncWrite + Unpin,
{
    let (mut a, mut c) = (a, c);
    while !a.is_empty() || b.has_remaining() || !c.is_empty() {
        let slices = [IoSlice::new(a), IoSlice::new(b.chunk()), IoSlice::new(c)];
        let mut n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let take = n.min(a.len());
        a = &a[take..];
        n -= take;
        let take = n.min(b.remaining());
        b.advance(take);
        n -= take;
        c = &c[n.min(c.len())..];
    }
    Ok(())
}

/// The body length a message's `Content-Length` declares (its first value).
pub fn declared(h: &HeaderMap) -> Option<u64> {
    h.get(CONTENT_LENGTH).and_then(length_value)
}

/// A `Content-Length` value as a number.
pub fn length_value(v: &HeaderValue) -> Option<u64> {
    v.to_str().ok()?.trim().parse().ok()
}

/// The status line and header fields, with a `Date` when the response has none.
fn head(out: &mut Vec<u8>, status: StatusCode, version: Version, h: &HeaderMap) {
    status_line(out, status, version);
    fields(out, h);
    end_head(out, h.contains_key(DATE));
}

fn status_line(out: &mut Vec<u8>, status: StatusCode, version: Version) {
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A `Date` field unless the head has one, and the blank line.
fn end_head(out: &mut Vec<u8>, has_date: bool) {
    if !has_date {
        out.extend_from_slice(b"date: ");
        with_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// `name: value` lines.
pub fn fields(out: &mut Vec<u8>, h: &HeaderMap) {
    for (name, value) in h {
        field(out, name, value);
    }
}

/// One `name: value` line.
pub fn field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    line(out, name.as_str().as_bytes(), value.as_bytes());
}

fn line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `Date` value of the current second, formatted once per second per thread.
    static DATE_CACHE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

pub fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            c.0 = secs;
            c.1 = httpdate::fmt_http_date(now).into_bytes();
        }
        f(&c.1);
    });
}

/// The answer to a head that could not be parsed, before the connection closes.
pub fn refusal(status: StatusCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    head(&mut out, status, Version::HTTP_11, &h);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::body;
    use hyper::Response;

    fn written(resp: Response<Body>, x: &Exchange) -> (String, bool) {
        written_reply(Reply::from(resp), x)
    }

    fn written_reply(resp: Reply, x: &Exchange) -> (String, bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut out = Vec::new();
        let keep = rt.block_on(response(&mut out, resp, x)).expect("written");
        (String::from_utf8_lossy(&out).into_owned(), keep)
    }

    fn x(method: Method, version: Version, close: bool) -> Exchange {
        Exchange {
            method,
            version,
            close,
        }
    }

    #[test]
    fn known_lengths_unknown_lengths_and_head_requests_are_framed() {
        let (w, keep) = written(
            Response::new(body::full("hello")),
            &x(Method::GET, Version::HTTP_11, false),
        );
        assert!(w.starts_with("HTTP/1.1 200 OK\r\n"), "{w}");
        assert!(
            w.contains("content-length: 5\r\n") && w.ends_with("\r\n\r\nhello"),
            "{w}"
        );
        assert!(w.contains("date: ") && keep);
        let stream = http_body_util::StreamBody::new(futures_lite_stream(vec!["ab", "cde"]));
        let streamed = Response::new(http_body_util::BodyExt::boxed(stream));
        let (w, keep) = written(streamed, &x(Method::GET, Version::HTTP_11, false));
        assert!(w.contains("transfer-encoding: chunked\r\n"), "{w}");
        assert!(
            w.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
            "{w}"
        );
        assert!(keep);
        let stream = http_body_util::StreamBody::new(futures_lite_stream(vec!["ab"]));
        let streamed = Response::new(http_body_util::BodyExt::boxed(stream));
        let (w, keep) = written(streamed, &x(Method::GET, Version::HTTP_10, false));
        assert!(
            w.starts_with("HTTP/1.0 200 OK\r\n") && w.contains("connection: close"),
            "{w}"
        );
        assert!(w.ends_with("\r\n\r\nab") && !keep, "{w}");
        let (w, _) = written(
            Response::new(body::full("hello")),
            &x(Method::HEAD, Version::HTTP_11, false),
        );
        assert!(
            w.contains("content-length: 5\r\n") && w.ends_with("\r\n\r\n"),
            "{w}"
        );
        let (w, keep) = written(
            Response::new(body::full("x")),
            &x(Method::GET, Version::HTTP_11, true),
        );
        assert!(w.contains("connection: close\r\n") && !keep, "{w}");
    }

    /// An upstream's fields as received, framed by this hop: its declared length for a HEAD
    /// or a body of that length, chunked for a body of unknown length (close-delimited for
    /// HTTP/1.0), its own `Date` kept.
    #[test]
    fn received_fields_are_framed_like_a_map() {
        let text = "HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 7\r\nDate: then\r\n\r\n";
        let received = |length| {
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let mut resp = httparse::Response::new(&mut fields);
            assert!(resp.parse(text.as_bytes()).is_ok_and(|s| s.is_complete()));
            Received::of(text.as_bytes(), resp.headers, length, |i| i == 1)
                .in_head(Bytes::from_static(text.as_bytes()))
        };
        let reply =
            |length, body| Reply::new(StatusCode::OK, Headers::Received(received(length)), body);
        let mut out = Vec::new();
        let x11 = x(Method::HEAD, Version::HTTP_11, false);
        let (framing, keep) = received_head(
            &mut out,
            StatusCode::OK,
            &x11,
            &received(Some(7)),
            true,
            Some(0),
        );
        let w = String::from_utf8_lossy(&out);
        assert_eq!(
            w,
            "HTTP/1.1 200 OK\r\nX-A: 1\r\nDate: then\r\ncontent-length: 7\r\n\r\n"
        );
        assert!(framing.is_none() && keep);
        let (w, keep) = written_reply(
            reply(Some(7), body::full("seven!!")),
            &x(Method::GET, Version::HTTP_11, false),
        );
        assert!(
            w.ends_with("content-length: 7\r\n\r\nseven!!") && keep,
            "{w}"
        );
        assert_eq!(
            w.matches("date: ").count() + w.matches("Date: ").count(),
            1,
            "{w}"
        );
        let stream = http_body_util::StreamBody::new(futures_lite_stream(vec!["ab"]));
        let streamed = http_body_util::BodyExt::boxed(stream);
        let (w, keep) = written_reply(
            reply(None, streamed),
            &x(Method::GET, Version::HTTP_11, false),
        );
        assert!(w.contains("transfer-encoding: chunked\r\n") && keep, "{w}");
        let stream = http_body_util::StreamBody::new(futures_lite_stream(vec!["ab"]));
        let streamed = http_body_util::BodyExt::boxed(stream);
        let (w, keep) = written_reply(
            reply(None, streamed),
            &x(Method::GET, Version::HTTP_10, false),
        );
        assert!(
            w.starts_with("HTTP/1.0 200 OK\r\n") && w.contains("connection: close\r\n"),
            "{w}"
        );
        assert!(w.ends_with("\r\n\r\nab") && !keep, "{w}");
    }

    /// A body that breaks after a first piece: the piece still reaches the peer (all of what
    /// the upstream sent before it died), then the error ends the connection.
    #[test]
    fn what_a_breaking_body_gave_goes_out_before_the_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let stream = http_body_util::StreamBody::new(futures_lite_stream(vec!["partial", "!"]));
        let mut body = http_body_util::BodyExt::boxed(stream);
        let mut out = Vec::new();
        let r = rt.block_on(send_body(
            &mut out,
            b"HEAD\r\n\r\n".to_vec(),
            &mut body,
            Framing::Length(100),
        ));
        assert!(matches!(r, Err(WriteError::Body(_))), "{r:?}");
        assert_eq!(out, b"HEAD\r\n\r\npartial");
    }

    /// A stream of text frames for a body of unknown length.
    fn futures_lite_stream(
        parts: Vec<&'static str>,
    ) -> impl futures_core::Stream<Item = Result<hyper::body::Frame<Bytes>, body::BoxError>> {
        struct S(std::vec::IntoIter<&'static str>);
        impl futures_core::Stream for S {
            type Item = Result<hyper::body::Frame<Bytes>, body::BoxError>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                // "!" stands for a source that breaks.
                Poll::Ready(self.0.next().map(|p| match p {
                    "!" => Err("the source broke".into()),
                    p => Ok(hyper::body::Frame::data(Bytes::from_static(p.as_bytes()))),
                }))
            }
        }
        S(parts.into_iter())
    }
}
