//! A request's header block as HTTP/2 allows it (RFC 9113, 8.2 and 8.3): pseudo-header
//! fields first, each once, the ones a request needs present; lowercase names; no
//! connection-specific fields. Fields are taken one at a time as the decoder gives them, and
//! a problem is noted rather than returned, so the block is always decoded to its end (the
//! header table must stay in step with the client's).

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, COOKIE};
use hyper::http::uri;
use hyper::{Method, Uri};

use super::connection_specific;
use super::hpack::Field;

/// The most a request's fields may take, as SETTINGS_MAX_HEADER_LIST_SIZE counts them (each
/// field's name and value and 32): the same 64 KiB the HTTP/1.1 server allows a head.
pub const MAX_LIST: usize = 64 * 1024;
/// The most fields a request may have, as for HTTP/1.1.
pub const MAX_FIELDS: usize = 100;

/// Why a request cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Against the protocol: the stream is reset (`PROTOCOL_ERROR`).
    Malformed(&'static str),
    /// Too many or too large fields: answered `431`.
    TooLarge,
    /// Well formed, but no upstream URL can say it (`OPTIONS *`): answered `400`, as on
    /// HTTP/1.1.
    Unforwardable(&'static str),
}

/// A request head, checked.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// The `Content-Length` the client declared, which its DATA must add up to.
    pub length: Option<u64>,
    /// Extended CONNECT's `:protocol` (RFC 8441), e.g. `websocket`.
    pub protocol: Option<Bytes>,
}

/// Collects the fields of one header block.
#[derive(Debug, Default)]
pub struct Builder {
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    protocol: Option<Bytes>,
    headers: HeaderMap,
    /// `cookie` fields, joined with "; " as 8.2.3 asks before HTTP/1.1 sees them.
    cookie: Vec<u8>,
    regular: bool,
    /// `content-length` values seen: the first, and whether another differed or was bad.
    length: Option<u64>,
    bad_length: bool,
    /// A `host` field came (then it is checked against `:authority`).
    host: bool,
    size: usize,
    fields: usize,
    refusal: Option<Refusal>,
}

impl Builder {
    fn refuse(&mut self, r: Refusal) {
        // A size refusal stands over a malformed field found after it, not before.
        if self.refusal.is_none() {
            self.refusal = Some(r);
        }
    }

    /// Takes the next field of the block.
    pub fn field(&mut self, f: Field<'_>) {
        use Refusal::Malformed;
        self.size += f.name.len() + f.value.len() + 32;
        self.fields += 1;
        if self.size > MAX_LIST || self.fields > MAX_FIELDS {
            self.refuse(Refusal::TooLarge);
        }
        if self.refusal.is_some() {
            return;
        }
        if let Some(pseudo) = f.name.strip_prefix(b":") {
            if self.regular {
                return self.refuse(Malformed("pseudo-header after a regular field"));
            }
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        return self.refuse(Malformed("repeated :method"));
                    }
                    match Method::from_bytes(f.value) {
                        Ok(m) => self.method = Some(m),
                        Err(_) => self.refuse(Malformed("bad :method")),
                    }
                    return;
                }
                b"scheme" => &mut self.scheme,
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                b"protocol" => &mut self.protocol,
                _ => return self.refuse(Malformed("unknown pseudo-header")),
            };
            if slot.is_some() {
                return self.refuse(Malformed("repeated pseudo-header"));
            }
            // The common values without an allocation.
            *slot = Some(match f.value {
                b"https" => Bytes::from_static(b"https"),
                b"http" => Bytes::from_static(b"http"),
                b"/" => Bytes::from_static(b"/"),
                v => Bytes::copy_from_slice(v),
            });
            return;
        }
        self.regular = true;
        if f.name.iter().any(u8::is_ascii_uppercase) {
            return self.refuse(Malformed("uppercase field name"));
        }
        if connection_specific(f.name) {
            return self.refuse(Malformed("connection-specific field"));
        }
        if f.name == b"te" && f.value != b"trailers" {
            return self.refuse(Malformed("te other than trailers"));
        }
        let edge_space = |v: &[u8]| {
            v.first().is_some_and(|b| matches!(b, b' ' | b'\t'))
                || v.last().is_some_and(|b| matches!(b, b' ' | b'\t'))
        };
        if edge_space(f.value) {
            return self.refuse(Malformed("field value with space at an end"));
        }
        let Ok(name) = HeaderName::from_bytes(f.name) else {
            return self.refuse(Malformed("bad field name"));
        };
        let Ok(value) = HeaderValue::from_bytes(f.value) else {
            return self.refuse(Malformed("bad field value"));
        };
        if name == CONTENT_LENGTH {
            let n = std::str::from_utf8(f.value)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            self.bad_length |= n.is_none() || self.length.is_some();
            self.length = n;
        }
        self.host |= name == hyper::header::HOST;
        if name == COOKIE {
            if !self.cookie.is_empty() {
                self.cookie.extend_from_slice(b"; ");
            }
            self.cookie.extend_from_slice(f.value);
            return;
        }
        self.headers.append(name, value);
    }

    /// Checks a block of trailers (8.1): the rules of any field, and no pseudo-header.
    pub fn trailers(self) -> Result<(), Refusal> {
        if let Some(r) = self.refusal {
            return Err(r);
        }
        let pseudo = self.method.is_some()
            || self.scheme.is_some()
            || self.authority.is_some()
            || self.path.is_some()
            || self.protocol.is_some();
        if pseudo {
            return Err(Refusal::Malformed("pseudo-header in trailers"));
        }
        Ok(())
    }

    /// The request, once the block has ended.
    pub fn finish(mut self) -> Result<Head, Refusal> {
        use Refusal::Malformed;
        if let Some(r) = self.refusal {
            return Err(r);
        }
        let method = self.method.ok_or(Malformed("no :method"))?;
        if self.protocol.is_some() && method != Method::CONNECT {
            return Err(Malformed(":protocol without CONNECT"));
        }
        let uri = if method == Method::CONNECT && self.protocol.is_none() {
            // Plain CONNECT (8.5): the authority only.
            if self.scheme.is_some() || self.path.is_some() {
                return Err(Malformed("CONNECT with :scheme or :path"));
            }
            let authority = self
                .authority
                .ok_or(Malformed("CONNECT without :authority"))?;
            let mut parts = uri::Parts::default();
            parts.authority = Some(
                uri::Authority::from_maybe_shared(authority)
                    .map_err(|_| Malformed("bad :authority"))?,
            );
            Uri::from_parts(parts).map_err(|_| Malformed("bad :authority"))?
        } else {
            // Extended CONNECT has all three, like any other request.
            let scheme = self.scheme.ok_or(Malformed("no :scheme"))?;
            let path = self
                .path
                .filter(|p| !p.is_empty())
                .ok_or(Malformed("no :path"))?;
            let mut parts = uri::Parts::default();
            if let Some(a) = self.authority {
                parts.scheme = Some(match &scheme[..] {
                    b"https" => uri::Scheme::HTTPS,
                    b"http" => uri::Scheme::HTTP,
                    other => other.try_into().map_err(|_| Malformed("bad :scheme"))?,
                });
                let a = uri::Authority::from_maybe_shared(a)
                    .map_err(|_| Malformed("bad :authority"))?;
                // 8.3.1: no userinfo; and a `host` naming another entity than `:authority`
                // is malformed, or a flow could route by one while the upstream serves the
                // other.
                if a.as_str().contains('@') {
                    return Err(Malformed(":authority with a userinfo"));
                }
                let other_host = self.host
                    && self
                        .headers
                        .get_all(hyper::header::HOST)
                        .iter()
                        .any(|h| !h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()));
                if other_host {
                    return Err(Malformed("host differs from :authority"));
                }
                parts.authority = Some(a);
            }
            match (&path[..], &scheme[..]) {
                (b"*", _) if method != Method::OPTIONS => {
                    return Err(Malformed(":path * other than OPTIONS"));
                }
                (b"*", _) => return Err(Refusal::Unforwardable("OPTIONS *")),
                (p, b"http" | b"https") if p.first() != Some(&b'/') => {
                    return Err(Malformed(":path not a path"));
                }
                _ => {}
            }
            parts.path_and_query = Some(
                uri::PathAndQuery::from_maybe_shared(path).map_err(|_| Malformed("bad :path"))?,
            );
            Uri::from_parts(parts).map_err(|_| Malformed("bad :scheme, :authority or :path"))?
        };
        if !self.cookie.is_empty() {
            let v = HeaderValue::from_maybe_shared(Bytes::from(self.cookie))
                .map_err(|_| Malformed("bad cookie"))?;
            self.headers.insert(COOKIE, v);
        }
        if self.bad_length {
            return Err(Malformed("bad or repeated content-length"));
        }
        let length = self.length;
        Ok(Head {
            method,
            uri,
            headers: self.headers,
            length,
            protocol: self.protocol,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(fields: &[(&str, &str)]) -> Result<Head, Refusal> {
        let mut b = Builder::default();
        for (n, v) in fields {
            b.field(Field {
                name: n.as_bytes(),
                value: v.as_bytes(),
                sensitive: false,
            });
        }
        b.finish()
    }

    const GET: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "example.com"),
        (":path", "/a?b=c"),
    ];

    #[test]
    fn a_request_and_its_cookies() {
        let mut f = GET.to_vec();
        f.extend([("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2")]);
        let h = build(&f).unwrap();
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.uri, "https://example.com/a?b=c");
        assert_eq!(h.headers["cookie"], "a=1; b=2");
        assert_eq!(h.headers["accept"], "*/*");
        assert_eq!(h.length, None);
        let h = build(&[(":method", "CONNECT"), (":authority", "example.com:443")]).unwrap();
        assert_eq!(
            h.uri.authority().map(|a| a.as_str()),
            Some("example.com:443")
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        let with = |extra: &[(&str, &str)]| {
            let mut f = GET.to_vec();
            f.extend_from_slice(extra);
            build(&f)
        };
        let malformed = |r: Result<Head, Refusal>| matches!(r, Err(Refusal::Malformed(_)));
        assert!(malformed(with(&[("Accept", "x")])));
        assert!(malformed(with(&[("connection", "keep-alive")])));
        assert!(malformed(with(&[("transfer-encoding", "chunked")])));
        assert!(malformed(with(&[("te", "gzip")])));
        assert!(with(&[("te", "trailers")]).is_ok());
        assert!(malformed(with(&[("x", " padded")])));
        assert!(malformed(with(&[(":path", "/again")])));
        assert!(malformed(with(&[("accept", "x"), (":status", "200")])));
        assert!(malformed(with(&[
            ("content-length", "1"),
            ("content-length", "2")
        ])));
        assert!(malformed(with(&[("content-length", "x")])));
        assert_eq!(with(&[("content-length", "12")]).unwrap().length, Some(12));
        assert!(malformed(build(&GET[..3])));
        assert!(malformed(build(&[GET[0], GET[2], GET[3]])));
        assert!(malformed(build(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "")
        ])));
        assert!(malformed(build(&[
            (":method", "CONNECT"),
            (":authority", "a:1"),
            (":path", "/")
        ])));
    }

    /// RFC 9113 8.3.1: `:path` is a path (or `*` for OPTIONS), `:authority` has no userinfo,
    /// and a `host` beside it names the same host.
    #[test]
    fn targets_and_hosts_are_checked() {
        let req = |path: &str, authority: &str, host: Option<&str>| {
            let mut f = vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", authority),
                (":path", path),
            ];
            f.extend(host.map(|h| ("host", h)));
            build(&f)
        };
        let malformed = |r: Result<Head, Refusal>| matches!(r, Err(Refusal::Malformed(_)));
        assert!(malformed(req("a", "example.com", None)), "not a path");
        assert!(
            malformed(req("*", "example.com", None)),
            "* other than OPTIONS"
        );
        assert!(malformed(req("/", "u@example.com", None)), "a userinfo");
        assert!(malformed(req("/", "example.com", Some("other.com"))));
        assert!(req("/", "example.com", Some("EXAMPLE.com")).is_ok());
        let options = build(&[
            (":method", "OPTIONS"),
            (":scheme", "https"),
            (":authority", "example.com"),
            (":path", "*"),
        ]);
        assert_eq!(options.unwrap_err(), Refusal::Unforwardable("OPTIONS *"));
    }

    #[test]
    fn too_many_or_too_large_fields_are_431() {
        let mut f = GET.to_vec();
        let many: Vec<(String, String)> = (0..MAX_FIELDS)
            .map(|i| (format!("x-{i}"), "v".into()))
            .collect();
        f.extend(many.iter().map(|(a, b)| (a.as_str(), b.as_str())));
        assert_eq!(build(&f).unwrap_err(), Refusal::TooLarge);
        let big = "v".repeat(MAX_LIST);
        let mut f = GET.to_vec();
        f.push(("x-big", &big));
        assert_eq!(build(&f).unwrap_err(), Refusal::TooLarge);
        // A field under both limits is fine.
        let mut f = GET.to_vec();
        f.push(("x-big", &big[..MAX_LIST / 2]));
        assert!(build(&f).is_ok());
    }
}
