//! The client side of vane's HTTP/1.1: one exchange on one upstream connection. The request
//! head is written with the first ready piece of its body, the response head parsed with
//! `httparse` (interim `1xx` answers skipped), and the response body decoded straight off the
//! socket as the client reads it; when it ends cleanly the connection goes back to its pool.
//! No task per connection and no channel between the request and the socket, which is what
//! hyper's client costs.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as _, Frame, SizeHint};
use hyper::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{Method, StatusCode, Version};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::decode::{Decoder, Framing, Step};
use super::fields::Noted;
use super::head::MAX_HEADERS;
use super::write;
use crate::l7::body::{Body, BoxError};
use crate::l7::forward::Outbound;
use crate::l7::reply::{Headers, Received};

/// The largest response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Reads of a response body.
const READ: usize = 16 * 1024;

/// An HTTP/1.1 connection to an upstream; `buf` holds what was read past the last message.
pub struct Conn {
    pub stream: TcpStream,
    buf: BytesMut,
    /// The pool key it goes back under, fixed when it opens so a request allocates none.
    pub key: Arc<str>,
}

/// Gives a connection whose exchange ended cleanly back to its pool (a plain function: the
/// connection carries its key, so nothing is boxed per request).
pub type Home = fn(Conn);

impl Conn {
    pub fn new(stream: TcpStream, key: Arc<str>) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            key,
        }
    }

    /// An idle connection the upstream has not closed (nor sent anything on): looked up in
    /// tokio's readiness without a system call unless the socket was reported readable.
    pub fn is_fresh(&self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Why an exchange failed, and whether the request can go again on another connection.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("sending the request: {0}")]
    Write(write::WriteError),
    #[error("reading the response: {0}")]
    Read(std::io::Error),
    #[error("the upstream closed the connection before answering")]
    Closed,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

impl ExchangeError {
    /// Nothing of an answer arrived and the connection failed as a connection kept idle by
    /// the upstream may (closed or reset): a request without a body may go again.
    pub fn stale(&self) -> bool {
        match self {
            ExchangeError::Closed => true,
            ExchangeError::Read(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            ExchangeError::Write(write::WriteError::Io(e)) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}

/// The request line and fields of `out` in origin form, `Host` the upstream's authority, the
/// body framed as it says (its exact length, else the length the client declared, else
/// chunked) in place of the client's framing fields. Kept by the caller to send again on
/// another connection.
pub fn request_head(out: &Outbound<'_>, body: &Body) -> (Vec<u8>, Option<Framing>) {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(out.method.as_str().as_bytes());
    head.push(b' ');
    let target = out.uri.path_and_query().map_or("/", |p| p.as_str());
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(authority) = out.uri.authority() {
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(authority.as_str().as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let mut declared = None;
    for (name, value) in out.fields() {
        if *name == CONTENT_LENGTH {
            declared = declared.or_else(|| write::length_value(value));
        } else if *name != TRANSFER_ENCODING {
            write::field(&mut head, name, value);
        }
    }
    let framing = if body.is_end_stream() {
        if matches!(out.method, Method::POST | Method::PUT | Method::PATCH) {
            head.extend_from_slice(b"content-length: 0\r\n");
        }
        None
    } else {
        let framing = match body.size_hint().exact().or(declared) {
            Some(n) => {
                use std::io::Write;
                // Writing into a Vec cannot fail.
                let _ = write!(head, "content-length: {n}\r\n");
                Framing::Length(n)
            }
            None => {
                head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        };
        Some(framing)
    };
    head.extend_from_slice(b"\r\n");
    (head, framing)
}

/// What came back: status, fields (without the hop-by-hop ones), and the body (which takes
/// the connection with it).
pub struct Answer {
    pub status: StatusCode,
    pub headers: Headers,
    pub body: Body,
}

/// A request on the wire: a head alone (borrowed, so it can go again on another connection),
/// or a head with the body that follows it.
pub enum Outgoing<'a> {
    Bare(&'a [u8]),
    WithBody(Vec<u8>, Body, Framing),
}

/// Sends `out` on `conn`, reads the answer. `head_request`: the answer has no body whatever
/// its fields say.
pub async fn exchange(
    mut conn: Conn,
    out: Outgoing<'_>,
    head_request: bool,
    home: Home,
) -> Result<Answer, ExchangeError> {
    match out {
        Outgoing::Bare(head) => {
            use tokio::io::AsyncWriteExt;
            conn.stream
                .write_all(head)
                .await
                .map_err(|e| ExchangeError::Write(e.into()))?;
        }
        Outgoing::WithBody(head, mut body, framing) => {
            // Boxed: requests with a body are the fewer, and the body pump's state inline
            // would grow every exchange's.
            Box::pin(write::send_body(&mut conn.stream, head, &mut body, framing))
                .await
                .map_err(ExchangeError::Write)?;
        }
    }
    let Head {
        status,
        version,
        headers,
        noted,
    } = loop {
        let head = read_head(&mut conn).await?;
        // Interim answers (100 Continue, 103 Early Hints) are not forwarded.
        if !head.status.is_informational() || head.status == StatusCode::SWITCHING_PROTOCOLS {
            break head;
        }
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // This client never sends an `Upgrade` (WebSockets go through hyper's): a switch
        // nobody asked for would leave the client reading HTTP from a changed protocol.
        return Err(ExchangeError::Malformed("101 to a request without Upgrade"));
    }
    let framing = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Length(0)
    } else {
        noted.response_framing().map_err(ExchangeError::Malformed)?
    };
    let reusable = framing != Framing::Close && noted.keeps_open(version == Version::HTTP_11);
    let length = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let mut body = UpstreamBody {
        conn: Some(conn),
        decoder: Decoder::new(framing),
        close_delimited: framing == Framing::Close,
        home: reusable.then_some(home),
        length,
        fresh: false,
        failed: None,
    };
    if body.decoder.done() {
        body.release();
    }
    Ok(Answer {
        status,
        headers,
        body: http_body_util::BodyExt::boxed(body),
    })
}

/// Reads and parses one response head off `conn`.
async fn read_head(conn: &mut Conn) -> Result<Head, ExchangeError> {
    loop {
        if !conn.buf.is_empty() {
            if let Some(parsed) = parse_head(&mut conn.buf)? {
                return Ok(parsed);
            }
            if conn.buf.len() > MAX_RESPONSE_HEAD {
                return Err(ExchangeError::Malformed("response head too large"));
            }
        }
        if conn.buf.capacity() == 0 {
            conn.buf = crate::spare::take();
        } else if conn.buf.capacity() - conn.buf.len() < 1024 {
            conn.buf
                .reserve(crate::spare::SIZE.max(conn.buf.capacity()));
        }
        let had = conn.buf.len();
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) if had == 0 => return Err(ExchangeError::Closed),
            Ok(0) => return Err(ExchangeError::Malformed("response head cut short")),
            Ok(_) => {}
            Err(e) if had == 0 => return Err(ExchangeError::Read(e)),
            Err(_) => return Err(ExchangeError::Malformed("response head cut short")),
        }
    }
}

/// `Ok(None)` until the head is whole; then it is taken out of `buf`.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, ExchangeError> {
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    // Folded (obsolete multi-line) fields are refused, as hyper's client refuses them.
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ExchangeError::Malformed("not an HTTP/1 response head")),
    };
    let status = StatusCode::from_u16(resp.code.unwrap_or_default())
        .map_err(|_| ExchangeError::Malformed("bad status code"))?;
    let version = super::head::version(resp.version);
    let noted = Noted::of_response(resp.headers);
    // A 204 has no body and says no length (RFC 9110 §8.6), whatever the upstream sent.
    let length = noted.length().filter(|_| status != StatusCode::NO_CONTENT);
    let headers = if noted.names_others() {
        // `Connection` names fields of its own to drop: the map's general strip.
        let fields = super::head::spans(buf, resp.headers);
        let head = buf.split_to(len).freeze();
        let mut h = super::head::header_map(&head, fields).map_err(ExchangeError::Malformed)?;
        noted.strip(&mut h);
        if length.is_none() {
            // A length a transfer coding overrides (or a bad one) is not passed on.
            h.remove(CONTENT_LENGTH);
        }
        Headers::Map(h)
    } else {
        let received = Received::of(buf, resp.headers, length, |at| noted.left_out(at));
        Headers::Received(received.in_head(buf.split_to(len).freeze()))
    };
    Ok(Some(Head {
        status,
        version,
        headers,
        noted,
    }))
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    version: Version,
    headers: Headers,
    noted: Noted,
}

/// A response body read straight off its connection.
struct UpstreamBody {
    conn: Option<Conn>,
    decoder: Decoder,
    close_delimited: bool,
    /// Where the connection goes when the body ended cleanly (`None`: it closes).
    home: Option<Home>,
    length: Option<u64>,
    /// Data went out since the reader last saw `Pending`.
    fresh: bool,
    /// A failure held back for one poll (see [`UpstreamBody::fail`]).
    failed: Option<BoxError>,
}

/// The upstream closed the connection in the middle of a body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream closed the connection before the end of the body")]
struct CutShort;

impl UpstreamBody {
    /// Reports `e`, but first lets the reader see `Pending` once when data went out since it
    /// last did: a writer that flushes only when its source would block (hyper's server)
    /// then still sends what the upstream gave before it failed.
    fn fail(
        &mut self,
        e: BoxError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        self.home = None;
        if std::mem::take(&mut self.fresh) {
            self.failed = Some(e);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(e)))
    }

    /// The body ended: the connection goes home when nothing followed it.
    fn release(&mut self) {
        if let (Some(mut conn), Some(home)) = (self.conn.take(), self.home.take()) {
            if conn.buf.is_empty() {
                // An idle pooled connection holds no buffer; the thread keeps it.
                crate::spare::give(std::mem::take(&mut conn.buf));
                home(conn);
            }
        }
    }
}

impl hyper::body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.buf) {
                Ok(Step::Data(d)) => {
                    this.fresh = true;
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Ok(Step::Last(d)) => {
                    this.release();
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Ok(Step::End) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(e) => return this.fail(e.into(), cx),
            }
            if conn.buf.capacity() - conn.buf.len() < READ / 4 {
                conn.buf.reserve(READ);
            }
            // One poll of a read: cancel-safe (nothing is lost when it is pending).
            let polled = {
                use std::future::Future;
                let read = std::pin::pin!(conn.stream.read_buf(&mut conn.buf));
                read.poll(cx)
            };
            match polled {
                Poll::Pending => {
                    this.fresh = false;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return this.fail(e.into(), cx),
                Poll::Ready(Ok(0)) => {
                    if this.close_delimited {
                        this.conn = None;
                        this.home = None;
                        this.decoder.finish();
                        return Poll::Ready(None);
                    }
                    return this.fail(CutShort.into(), cx);
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.done()
    }

    fn size_hint(&self) -> SizeHint {
        self.length
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}
