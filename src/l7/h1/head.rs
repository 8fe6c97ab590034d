//! Request heads: parsed with `httparse` out of the connection's read buffer into the parts
//! of an `http::Request`, header values sharing the buffer instead of being copied.

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Uri, Version};

use super::body::Framing;
use super::fields::Noted;

/// The most header fields a request may carry (as hyper's default).
pub const MAX_HEADERS: usize = 100;

/// Why a head was refused; each maps to an answer and a `vane_http_connection_errors_total`
/// kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    #[error("request head too large")]
    TooLarge,
    /// Well formed, but asking for what vane does not do (answered 501).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
}

/// A request head and how its body is framed.
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// `None`: no body.
    pub body: Option<Framing>,
    /// The client asked to close after this exchange (`Connection: close`, or HTTP/1.0
    /// without `keep-alive`).
    pub close: bool,
}

/// What the front of the read buffer holds. Not boxed: it is returned once per request and
/// taken apart at once, where a box would cost an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    /// A whole head, taken out of the buffer.
    Head(Head),
    /// Not all of it yet.
    Partial,
    /// A request this path leaves to hyper (a protocol upgrade, `CONNECT`, `Expect`); the
    /// buffer is untouched.
    Special,
}

/// Byte ranges of one header (name, value) inside the head.
pub type Field = (std::ops::Range<usize>, std::ops::Range<usize>);

/// Where `part` (a slice httparse returned) lies in `buf`.
pub fn span(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Where each field of a parsed head lies in `buf`, so that once the head is taken out of the
/// buffer the values can share its bytes instead of being copied.
pub fn spans(buf: &[u8], fields: &[httparse::Header<'_>]) -> Vec<Field> {
    fields
        .iter()
        .map(|h| (span(buf, h.name.as_bytes()), span(buf, h.value)))
        .collect()
}

/// The fields of `head` (taken out of the buffer `spans` read) as a header map.
pub fn header_map(head: &Bytes, fields: Vec<Field>) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields {
        let name = HeaderName::from_bytes(&head[name]).map_err(|_| "bad header name")?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(value)).map_err(|_| "bad header value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// httparse's minor version as an HTTP version (1.0 or 1.1).
pub fn version(minor: Option<u8>) -> Version {
    if minor == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    }
}

/// Parses the head at the front of `buf`; only a [`Parsed::Head`] takes bytes out of it.
pub fn parse(buf: &mut BytesMut, max: usize) -> Result<Parsed, HeadError> {
    // Left uninitialised: zeroing 100 fields cost more than parsing a small head.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1 request head")),
    };
    if len > max {
        return Err(HeadError::TooLarge);
    }
    let noted = Noted::of_request(req.headers);
    let version = version(req.version);
    noted.request_host(version)?;
    if req.method == Some("CONNECT") || noted.special() {
        return Ok(Parsed::Special);
    }
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("bad method"))?;
    let target = span(buf, req.path.unwrap_or_default().as_bytes());
    let fields = spans(buf, req.headers);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.clone()))
        .map_err(|_| HeadError::Malformed("bad request target"))?;
    let host = check_target(&head[target], &uri)?;
    let mut headers = header_map(&head, fields).map_err(HeadError::Malformed)?;
    if let Some(host) = host {
        headers.insert(hyper::header::HOST, host);
    }
    let body = noted.request_framing(version)?;
    let close = noted.request_close(version);
    Ok(Parsed::Head(Head {
        method,
        uri,
        version,
        headers,
        body,
        close,
    }))
}

/// RFC 9112 §3.2: a path (origin form) or a whole `http(s)` URL without a userinfo (absolute
/// form), whose authority is then the request's `Host` (§3.2.2: whatever `Host` said, so the
/// flow's `req.host`, the upstream and `X-Forwarded-Host` see one host). The authority form
/// belongs to `CONNECT`, which hyper serves; the asterisk form (`OPTIONS *`) is refused, as
/// nginx refuses it, since the upstream URL (`url_prefix` + path) has no way to say it and
/// `/*` names another resource. `GET a` would otherwise go upstream as `GET /`.
fn check_target(raw: &[u8], uri: &Uri) -> Result<Option<HeaderValue>, HeadError> {
    if raw.first() == Some(&b'/') {
        return Ok(None);
    }
    let bad = HeadError::Malformed("bad request target");
    let authority = uri
        .authority()
        .filter(|a| matches!(uri.scheme_str(), Some("http" | "https")) && !a.host().is_empty())
        .filter(|a| !a.as_str().contains('@'))
        .ok_or(bad)?;
    HeaderValue::from_str(authority.as_str())
        .map(Some)
        .map_err(|_| bad)
}

/// Whether `token` is one of the comma-separated values of the `name` headers.
pub fn has_token(h: &HeaderMap, name: HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Whether `token` is one of the values of the `Connection` headers.
pub fn connection_has(h: &HeaderMap, token: &str) -> bool {
    has_token(h, hyper::header::CONNECTION, token)
}

/// Whether `buf` starts with the HTTP/2 connection preface (prior knowledge); `None` while it
/// is too short to tell.
pub fn is_h2_preface(buf: &[u8]) -> Option<bool> {
    use crate::l7::h2::frame::PREFACE;
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, HeadError> {
        match parse(&mut BytesMut::from(text.as_bytes()), 64 * 1024)? {
            Parsed::Head(h) => Ok(Some(h)),
            Parsed::Partial => Ok(None),
            Parsed::Special => Err(HeadError::Malformed("special")),
        }
    }

    #[test]
    fn heads_parse_into_request_parts_and_framing() {
        let mut buf = BytesMut::from(
            &b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-A: 1\r\nx-a: 2\r\n\r\nabcGET"[..],
        );
        let Ok(Parsed::Head(h)) = parse(&mut buf, 1024) else {
            panic!("a complete head")
        };
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.path(), "/a");
        assert_eq!(h.uri.query(), Some("b=1"));
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(h.body, Some(Framing::Length(3)));
        assert!(!h.close);
        assert_eq!(&buf[..], b"abcGET", "only the head is taken");
        let h = head("GET / HTTP/1.0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(h.close && h.body.is_none());
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!h.close, "HTTP/1.0 asking to keep the connection");
        let h =
            head("GET / HTTP/1.1\r\nHost: x\r\nConnection: te, Close\r\nContent-Length: 0\r\n\r\n")
                .expect("ok")
                .expect("complete");
        assert!(h.close && h.body.is_none());
        let mut expect =
            BytesMut::from(&b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"[..]);
        assert!(matches!(parse(&mut expect, 1024), Ok(Parsed::Special)));
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.body, Some(Framing::Chunked));
        let mut up =
            BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"[..]);
        assert!(matches!(parse(&mut up, 1024), Ok(Parsed::Special)));
        assert_eq!(
            up.len(),
            47,
            "a special request stays in the buffer for hyper"
        );
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").expect("ok").is_none());
    }

    #[test]
    fn smuggling_shapes_and_oversized_heads_are_refused() {
        for text in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        ] {
            assert!(
                matches!(head(text), Err(HeadError::Malformed(_))),
                "{text:?}"
            );
        }
        assert!(matches!(
            head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Err(HeadError::NotImplemented(_))
        ));
        let h = head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n")
            .expect("equal repeats are one length")
            .expect("complete");
        assert_eq!(h.body, Some(Framing::Length(3)));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("h{i}: v\r\n"))
            .collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")).err(),
            Some(HeadError::TooLarge)
        );
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2048));
        assert!(matches!(
            parse(&mut BytesMut::from(partial.as_bytes()), 1024),
            Err(HeadError::TooLarge)
        ));
    }

    /// RFC 9112 §3.2: one valid `Host` (none only in HTTP/1.0), a target in origin or
    /// absolute form, and the absolute form's authority standing for `Host`.
    #[test]
    fn hosts_and_targets_are_checked() {
        for (text, why) in [
            ("GET / HTTP/1.1\r\n\r\n", "no Host"),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
                "more than one Host",
            ),
            (
                "GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
                "more than one Host",
            ),
            ("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", "bad Host"),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "bad Host"),
            ("GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", "bad Host"),
            ("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", "bad Host"),
            ("GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", "bad Host"),
            ("GET a HTTP/1.1\r\nHost: a\r\n\r\n", "bad request target"),
            (
                "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
                "bad request target",
            ),
            (
                "GET http://u@b/ HTTP/1.1\r\nHost: a\r\n\r\n",
                "bad request target",
            ),
            (
                "GET ftp://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
                "bad request target",
            ),
        ] {
            assert_eq!(
                head(text).err(),
                Some(HeadError::Malformed(why)),
                "{text:?}"
            );
        }
        for host in [
            "",
            "a",
            "a.example:8080",
            "127.0.0.1",
            "[::1]:443",
            "xn--d1a.test",
        ] {
            let text = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert!(matches!(head(&text), Ok(Some(_))), "{text:?}");
        }
        let h = head("GET / HTTP/1.0\r\n\r\n").expect("HTTP/1.0 needs no Host");
        assert!(h.is_some());
        let h = head("GET http://b.example:81/x?y HTTP/1.1\r\nHost: a\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(
            h.headers.get_all("host").iter().collect::<Vec<_>>(),
            ["b.example:81"]
        );
        assert_eq!(h.uri.path(), "/x");
    }

    #[test]
    fn the_h2_preface_is_told_apart_early() {
        assert_eq!(is_h2_preface(b"PRI * HT"), None);
        assert_eq!(
            is_h2_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(true)
        );
        assert_eq!(is_h2_preface(b"GET / HTTP/1.1"), Some(false));
    }
}
