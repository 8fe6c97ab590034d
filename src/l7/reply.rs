//! A response on its way from the application flow to the client: status, header fields and
//! body. The fields are a header map, or, for an answer read by vane's HTTP/1.1 client, the
//! fields as received (the head's bytes and where each field lies), turned into a map only
//! when something changes them. A proxied response that the flow passes through unchanged
//! then goes out from the upstream's bytes: building a map for it and writing the map back
//! out cost about a tenth of a small proxied request.

use std::ops::Range;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use hyper::{Response, StatusCode};

use super::body::Body;
use super::h1::head::{span, Field};

/// What the flow answered.
pub struct Reply {
    pub status: StatusCode,
    pub headers: Headers,
    pub body: Body,
}

impl Reply {
    pub fn new(status: StatusCode, headers: Headers, body: Body) -> Self {
        Self {
            status,
            headers,
            body,
        }
    }

    /// As hyper's response (HTTP/2, HTTP/3, upgrades), the fields as a map.
    pub fn into_response(self) -> Response<Body> {
        let mut r = Response::new(self.body);
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.into_map();
        r
    }
}

impl From<Response<Body>> for Reply {
    fn from(r: Response<Body>) -> Self {
        let (parts, body) = r.into_parts();
        Self::new(parts.status, Headers::Map(parts.headers), body)
    }
}

/// A message's header fields.
pub enum Headers {
    Map(HeaderMap),
    Received(Received),
}

impl Default for Headers {
    fn default() -> Self {
        Headers::Map(HeaderMap::new())
    }
}

impl From<HeaderMap> for Headers {
    fn from(h: HeaderMap) -> Self {
        Headers::Map(h)
    }
}

impl Headers {
    /// The first value of field `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match self {
            Headers::Map(h) => h.get(name).map(HeaderValue::as_bytes),
            Headers::Received(r) => r.get(name),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The body length the fields declare (`Content-Length`).
    pub fn declared(&self) -> Option<u64> {
        match self {
            Headers::Map(h) => super::h1::write::declared(h),
            Headers::Received(r) => r.length,
        }
    }

    /// The fields as a map to change, built from the received ones the first time.
    pub fn map_mut(&mut self) -> &mut HeaderMap {
        if let Headers::Received(r) = self {
            *self = Headers::Map(r.to_map());
        }
        match self {
            Headers::Map(h) => h,
            Headers::Received(_) => unreachable!("made a map above"),
        }
    }

    pub fn into_map(self) -> HeaderMap {
        match self {
            Headers::Map(h) => h,
            Headers::Received(r) => r.to_map(),
        }
    }

    /// A map to read every field from (built for received fields, which is rare: the
    /// `res.headers` key).
    pub fn to_map(&self) -> std::borrow::Cow<'_, HeaderMap> {
        match self {
            Headers::Map(h) => std::borrow::Cow::Borrowed(h),
            Headers::Received(r) => std::borrow::Cow::Owned(r.to_map()),
        }
    }
}

/// The end-to-end fields of an HTTP/1.1 response head, as received. The hop-by-hop fields
/// are left out when it is made, and so is `Content-Length`, which the writer gives from the
/// body it sends (its declared value is kept for lookups and for bodiless answers).
pub struct Received {
    head: Bytes,
    fields: Vec<Field>,
    /// `Content-Length` as declared, and where its first value lies.
    length: Option<u64>,
    length_value: Option<Range<usize>>,
    /// A `Date` field is among the fields.
    date: bool,
}

impl Received {
    /// The fields httparse read out of `buf` (a response head at its start), less those
    /// `left_out(i)` names (hop-by-hop ones and `Content-Length`, whose declared value is
    /// `length`). The head's bytes follow with [`Received::in_head`], once they are taken
    /// out of the buffer the parser borrowed.
    pub fn of(
        buf: &[u8],
        all: &[httparse::Header<'_>],
        length: Option<u64>,
        left_out: impl Fn(usize) -> bool,
    ) -> Self {
        let mut r = Self {
            head: Bytes::new(),
            fields: Vec::with_capacity(all.len()),
            length,
            length_value: None,
            date: false,
        };
        for (at, h) in all.iter().enumerate() {
            let (name, value) = (h.name.as_bytes(), h.value);
            if !left_out(at) {
                r.date |= name.eq_ignore_ascii_case(b"date");
                r.fields.push((span(buf, name), span(buf, value)));
            } else if r.length_value.is_none() && name.eq_ignore_ascii_case(b"content-length") {
                r.length_value = Some(span(buf, value));
            }
        }
        r
    }

    /// The head the fields were read from (the start of the buffer given to `of`).
    pub fn in_head(mut self, head: Bytes) -> Self {
        self.head = head;
        self
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        if name.eq_ignore_ascii_case("content-length") {
            return self.length_value.clone().map(|v| &self.head[v]);
        }
        self.fields
            .iter()
            .find(|(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.head[v.clone()])
    }

    /// Whether a `Date` field is among them.
    pub fn has_date(&self) -> bool {
        self.date
    }

    /// Each field as `(name, value)`, names as received; `Content-Length` is not among them.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (&self.head[n.clone()], &self.head[v.clone()]))
    }

    /// The declared `Content-Length`.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    fn to_map(&self) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(self.fields.len() + 1);
        // Names and values were checked by the parser (tokens; no control bytes, no folded
        // lines): a field that would still not convert is left out.
        for (name, value) in &self.fields {
            let Ok(name) = HeaderName::from_bytes(&self.head[name.clone()]) else {
                continue;
            };
            if let Ok(value) = HeaderValue::from_maybe_shared(self.head.slice(value.clone())) {
                h.append(name, value);
            }
        }
        if let Some(n) = self.length {
            h.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(text: &'static str) -> Received {
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut fields);
        let Ok(httparse::Status::Complete(_)) = resp.parse(text.as_bytes()) else {
            panic!("a whole head")
        };
        let left_out: Vec<bool> = resp
            .headers
            .iter()
            .map(|h| {
                ["connection", "keep-alive", "content-length"]
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(h.name))
            })
            .collect();
        let length = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok());
        Received::of(text.as_bytes(), resp.headers, length, |i| left_out[i])
            .in_head(Bytes::from_static(text.as_bytes()))
    }

    #[test]
    fn received_fields_answer_lookups_and_become_a_map() {
        let r = received(
            "HTTP/1.1 200 OK\r\nServer: up\r\nContent-Length: 5\r\nConnection: keep-alive\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
        );
        assert!(!r.has_date());
        let names: Vec<_> = r.iter().map(|(n, _)| n.to_vec()).collect();
        assert_eq!(
            names,
            [&b"Server"[..], b"X-A", b"x-a"],
            "hop-by-hop and length left out"
        );
        let mut h = Headers::Received(r);
        assert_eq!(h.get("server"), Some(&b"up"[..]));
        assert_eq!(h.get("X-a"), Some(&b"1"[..]));
        assert_eq!(h.get("content-length"), Some(&b"5"[..]));
        assert_eq!(h.get("connection"), None);
        assert_eq!(h.declared(), Some(5));
        let map = h.map_mut();
        assert_eq!(map.get_all("x-a").iter().count(), 2);
        assert_eq!(
            map.get(CONTENT_LENGTH).map(|v| v.as_bytes()),
            Some(&b"5"[..])
        );
        assert!(map.get("connection").is_none());
        assert!(matches!(h, Headers::Map(_)), "changed into a map");
        assert!(received("HTTP/1.1 200 OK\r\nX-A: 1\r\nDate: d\r\n\r\n").has_date());
    }
}
