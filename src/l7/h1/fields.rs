//! What vane's HTTP/1.1 code needs from a head's fields (the body's framing, whether the
//! connection stays open, which hop-by-hop fields to drop), noted in the pass that reads them.
//! Looking each up in the header map afterwards cost a hashed lookup apiece, absent fields
//! included: about a twentieth of a small proxied request.

use hyper::header::HeaderMap;
use hyper::Version;

use super::decode::Framing;
use super::head::HeadError;
use crate::l7::forward::HOP_BY_HOP;

/// The fields of one head, as far as vane acts on them.
#[derive(Debug, Default)]
pub struct Noted {
    /// A request's head: `Content-Length` is read by RFC 9112 §6.3's strict rule (a list of
    /// equal numbers), a response's as one number.
    request: bool,
    /// The last transfer coding of the last `Transfer-Encoding` field, when there is one:
    /// whether it is `chunked`.
    chunked: Option<bool>,
    /// Transfer codings listed over all `Transfer-Encoding` fields, and how many of them are
    /// `chunked` (each saturating): exactly one of each is the only coding vane can pass on.
    codings: u8,
    chunked_codings: u8,
    /// `Host` fields, and whether each value was a valid `host[:port]`.
    hosts: u8,
    bad_host: bool,
    /// A `Content-Length` field is present, and the number all of them agree on.
    has_length: bool,
    length: Option<u64>,
    /// A `Content-Length` that is not a number, or two that disagree.
    bad_length: Option<&'static str>,
    /// `Connection` lists `close`, `keep-alive`.
    close: bool,
    keep_alive: bool,
    /// `Connection` names a field beyond the hop-by-hop ones (dropped too).
    names_others: bool,
    /// An `Expect` field, an `Upgrade` field.
    expect: bool,
    upgrade: bool,
    /// Which of [`HOP_BY_HOP`] are present, bit `i` for entry `i`.
    hop: u16,
    /// Which fields a forwarded head leaves out, bit `i` for the head's field `i`: the
    /// hop-by-hop ones and `Content-Length` (the sender frames the body it sends).
    left_out: u128,
}

// One bit per field of a head.
const _: () = assert!(super::head::MAX_HEADERS <= 128);

impl Noted {
    /// Notes of a request head's fields.
    pub fn of_request(fields: &[httparse::Header<'_>]) -> Self {
        Self::of(true, fields)
    }

    /// Notes of a response head's fields.
    pub fn of_response(fields: &[httparse::Header<'_>]) -> Self {
        Self::of(false, fields)
    }

    fn of(request: bool, fields: &[httparse::Header<'_>]) -> Self {
        let mut noted = Self {
            request,
            ..Self::default()
        };
        for (at, h) in fields.iter().enumerate() {
            noted.note(at, h.name.as_bytes(), h.value);
        }
        noted
    }

    /// Notes field number `at` (`name` as received, any case).
    fn note(&mut self, at: usize, name: &[u8], value: &[u8]) {
        let i = match known(name) {
            None => return,
            Some(Known::ContentLength) => {
                self.has_length = true;
                self.left_out |= 1 << at;
                self.note_length(value);
                return;
            }
            Some(Known::Expect) => {
                self.expect = true;
                return;
            }
            Some(Known::Host) => {
                self.hosts = self.hosts.saturating_add(1);
                self.bad_host |= !valid_host(value);
                return;
            }
            Some(Known::HopByHop(i)) => i,
        };
        self.hop |= 1 << i;
        self.left_out |= 1 << at;
        let tokens = value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
        match HOP_BY_HOP[i] {
            "transfer-encoding" => {
                let mut last = false;
                for t in tokens {
                    last = t.eq_ignore_ascii_case(b"chunked");
                    self.codings = self.codings.saturating_add(1);
                    self.chunked_codings = self.chunked_codings.saturating_add(u8::from(last));
                }
                self.chunked = Some(last);
            }
            "upgrade" => self.upgrade = true,
            "connection" => {
                for t in tokens.filter(|t| !t.is_empty()) {
                    if t.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    }
                    let hop = HOP_BY_HOP
                        .iter()
                        .any(|h| h.as_bytes().eq_ignore_ascii_case(t));
                    self.names_others |= !hop && !t.eq_ignore_ascii_case(b"close");
                }
            }
            _ => {}
        }
    }

    fn note_length(&mut self, value: &[u8]) {
        if self.request {
            for part in value.split(|&b| b == b',') {
                self.note_number(strict_number(part.trim_ascii()));
            }
        } else {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            self.note_number(n);
        }
    }

    fn note_number(&mut self, n: Option<u64>) {
        match (n, self.length) {
            (None, _) => self.bad_length = Some("bad Content-Length"),
            (Some(n), Some(l)) if n != l => {
                self.bad_length = Some("Content-Length values disagree");
            }
            (Some(n), _) => self.length = Some(n),
        }
    }

    /// A request this path leaves to hyper: a protocol upgrade or an `Expect`.
    pub fn special(&self) -> bool {
        self.expect || self.upgrade
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`, and any request's `Host`
    /// is a valid `host[:port]`. A second one, or one with a userinfo or a space, would let
    /// the flow route by one host while the upstream serves another.
    pub fn request_host(&self, version: Version) -> Result<(), HeadError> {
        match self.hosts {
            0 if version == Version::HTTP_11 => Err(HeadError::Malformed("no Host")),
            0 | 1 if !self.bad_host => Ok(()),
            0 | 1 => Err(HeadError::Malformed("bad Host")),
            _ => Err(HeadError::Malformed("more than one Host")),
        }
    }

    /// RFC 9112 §6 for a request: chunked when `Transfer-Encoding` ends in `chunked`, else
    /// `Content-Length` (`None`: no body). Both at once, a transfer coding that does not end
    /// in chunked, chunked twice, or lengths that disagree are refused: each is a way to
    /// smuggle a second request past a proxy. Other codings before `chunked` (`gzip,
    /// chunked`) are not implemented (501): passed on as plain chunked they would change the
    /// body the upstream reads.
    pub fn request_framing(&self, version: Version) -> Result<Option<Framing>, HeadError> {
        if let Some(chunked) = self.chunked {
            if self.has_length {
                return Err(HeadError::Malformed(
                    "both Transfer-Encoding and Content-Length",
                ));
            }
            if version == Version::HTTP_10 {
                return Err(HeadError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            return match (chunked, self.chunked_codings, self.codings) {
                (false, _, _) => Err(HeadError::Malformed(
                    "Transfer-Encoding does not end in chunked",
                )),
                (true, 1, 1) => Ok(Some(Framing::Chunked)),
                (true, 1, _) => Err(HeadError::NotImplemented(
                    "a transfer coding other than chunked",
                )),
                (true, _, _) => Err(HeadError::Malformed("chunked more than once")),
            };
        }
        if let Some(why) = self.bad_length {
            return Err(HeadError::Malformed(why));
        }
        Ok(self.length.filter(|&n| n > 0).map(Framing::Length))
    }

    /// The client asked to close after this exchange (`Connection: close`, or HTTP/1.0
    /// without `keep-alive`).
    pub fn request_close(&self, version: Version) -> bool {
        if version == Version::HTTP_10 {
            !self.keep_alive
        } else {
            self.close
        }
    }

    /// RFC 9112 §6.3 for a response: chunked when `Transfer-Encoding` is `chunked`, else
    /// `Content-Length` (which must be one number), else until the close. Any other transfer
    /// coding is refused, as nginx refuses it: the client would get the coded bytes framed
    /// as plain ones (HTTP/2 has no transfer codings at all).
    pub fn response_framing(&self) -> Result<Framing, &'static str> {
        match (self.chunked, self.codings) {
            (Some(true), 1) => return Ok(Framing::Chunked),
            (Some(_), _) => return Err("a transfer coding other than chunked"),
            (None, _) => {}
        }
        if let Some(why) = self.bad_length {
            return Err(why);
        }
        Ok(self.length.map_or(Framing::Close, Framing::Length))
    }

    /// The connection may carry another request after this response (`http11`: the response
    /// is HTTP/1.1, where that is the default).
    pub fn keeps_open(&self, http11: bool) -> bool {
        !self.close && (http11 || self.keep_alive)
    }

    /// `Connection` names fields beyond the hop-by-hop ones (which must go too).
    pub fn names_others(&self) -> bool {
        self.names_others
    }

    /// The declared `Content-Length` (a response's, or a request's agreed one); none when a
    /// `Transfer-Encoding` is present, which overrides it (RFC 9112 §6.3): passed on, it
    /// would frame a chunked body by a length it does not have.
    pub fn length(&self) -> Option<u64> {
        self.length.filter(|_| self.chunked.is_none())
    }

    /// Whether a forwarded head leaves field `at` out: hop-by-hop, or `Content-Length`.
    pub fn left_out(&self, at: usize) -> bool {
        at < 128 && self.left_out & (1 << at) != 0
    }

    /// Drops the hop-by-hop fields from `h`, the map of these fields.
    pub fn strip(&self, h: &mut HeaderMap) {
        if self.names_others {
            crate::l7::forward::strip_hop_by_hop(h);
            return;
        }
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            if self.hop & (1 << i) != 0 {
                h.remove(*name);
            }
        }
    }
}

/// A field [`Noted::note`] acts on.
enum Known {
    /// Entry `i` of [`HOP_BY_HOP`].
    HopByHop(usize),
    ContentLength,
    Expect,
    Host,
}

/// Which field `name` (any case) is, by its length first: one comparison of bytes for a
/// field vane acts on and mostly none for the others, where comparing with each of the
/// eleven names cost about a hundred instructions per field of every head, both ways.
fn known(name: &[u8]) -> Option<Known> {
    let is = |i: usize| HOP_BY_HOP[i].as_bytes().eq_ignore_ascii_case(name);
    let hop = |i: usize| is(i).then_some(Known::HopByHop(i));
    match name.len() {
        2 => hop(5),
        4 => name.eq_ignore_ascii_case(b"host").then_some(Known::Host),
        6 => name
            .eq_ignore_ascii_case(b"expect")
            .then_some(Known::Expect),
        7 => hop(6).or_else(|| hop(8)),
        10 => hop(0).or_else(|| hop(1)),
        14 => name
            .eq_ignore_ascii_case(b"content-length")
            .then_some(Known::ContentLength),
        16 => hop(2),
        17 => hop(7),
        18 => hop(3),
        19 => hop(4),
        _ => None,
    }
}

/// `uri-host [":" port]` (RFC 9110 §7.2): a bracketed IPv6 literal or a name of unreserved,
/// percent-encoded and sub-delimiter bytes, then digits after a colon. Empty is allowed (a
/// target without an authority); a userinfo (`@`), spaces and control bytes are not.
fn valid_host(value: &[u8]) -> bool {
    let rest = match value.strip_prefix(b"[") {
        Some(literal) => match literal.iter().position(|&b| b == b']') {
            Some(end)
                if literal[..end]
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') =>
            {
                &literal[end + 1..]
            }
            _ => return false,
        },
        None => {
            let name = value
                .iter()
                .take_while(|&&b| NAME_BYTE[usize::from(b)])
                .count();
            &value[name..]
        }
    };
    match rest {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// The bytes a host name may hold (RFC 3986 reg-name: unreserved, `%`, sub-delimiters), by
/// table: one load per byte of every request's `Host`.
static NAME_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        i += 1;
    }
    table
};

/// Digits only, at most 19 of them (no sign, no spaces inside, no overflow).
fn strict_number(part: &[u8]) -> Option<u64> {
    if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(part).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name is found by its length in any case, and no other name of that length is
    /// taken for it.
    #[test]
    fn every_known_name_is_found_and_only_it() {
        for (i, h) in HOP_BY_HOP.iter().enumerate() {
            let upper = h.to_ascii_uppercase();
            for name in [h.to_string(), upper] {
                assert!(
                    matches!(known(name.as_bytes()), Some(Known::HopByHop(j)) if j == i),
                    "{name}"
                );
            }
        }
        assert!(matches!(
            known(b"Content-Length"),
            Some(Known::ContentLength)
        ));
        assert!(matches!(known(b"EXPECT"), Some(Known::Expect)));
        for other in [
            "te-",
            "tx",
            "content-type",
            "content-lengths",
            "trailers",
            "upgrades",
            "",
            "x",
        ] {
            assert!(known(other.as_bytes()).is_none(), "{other}");
        }
        // Same lengths as known names, other bytes.
        for other in [
            "ab",
            "accept",
            "referer",
            "user-agent",
            "content-lengtx",
            "x-forwarded-host",
        ] {
            assert!(known(other.as_bytes()).is_none(), "{other}");
        }
    }

    fn fields(head: &[(&str, &str)]) -> (Noted, HeaderMap) {
        let raw: Vec<_> = head
            .iter()
            .map(|(name, v)| httparse::Header {
                name,
                value: v.as_bytes(),
            })
            .collect();
        let f = Noted::of_response(&raw);
        let mut h = HeaderMap::new();
        for (n, v) in head {
            h.append(
                hyper::header::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        (f, h)
    }

    #[test]
    fn framing_is_chunked_alone_then_the_length() {
        let (f, _) = fields(&[("Transfer-Encoding", "chunked"), ("Content-Length", "3")]);
        assert_eq!(f.response_framing(), Ok(Framing::Chunked));
        assert_eq!(f.length(), None, "the coding overrides the length");
        // Codings vane cannot pass on are refused, not stripped from the body's framing.
        for te in [
            &["gzip, chunked"][..],
            &["chunked", "gzip"],
            &["chunked", "chunked"],
            &["identity"],
        ] {
            let te: Vec<_> = te.iter().map(|v| ("Transfer-Encoding", *v)).collect();
            let (f, _) = fields(&te);
            assert_eq!(
                f.response_framing(),
                Err("a transfer coding other than chunked"),
                "{te:?}"
            );
        }
        let (f, _) = fields(&[("Content-Length", " 12 "), ("content-length", "12")]);
        assert_eq!(f.response_framing(), Ok(Framing::Length(12)));
        let (f, _) = fields(&[("Content-Length", "12"), ("content-length", "13")]);
        assert_eq!(f.response_framing(), Err("Content-Length values disagree"));
        let (f, _) = fields(&[("Content-Length", "-1")]);
        assert_eq!(f.response_framing(), Err("bad Content-Length"));
        let (f, _) = fields(&[("Server", "x")]);
        assert_eq!(f.response_framing(), Ok(Framing::Close));
    }

    #[test]
    fn connection_tokens_decide_reuse() {
        let (f, _) = fields(&[("Connection", "keep-alive")]);
        assert!(f.keeps_open(true) && f.keeps_open(false));
        let (f, _) = fields(&[("Connection", "Upgrade, CLOSE")]);
        assert!(!f.keeps_open(true));
        let (f, _) = fields(&[]);
        assert!(f.keeps_open(true) && !f.keeps_open(false));
    }

    #[test]
    fn hop_by_hop_fields_and_the_names_connection_lists_are_dropped() {
        let (f, mut h) = fields(&[
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Content-Length", "2"),
            ("Server", "up"),
        ]);
        f.strip(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "server"]);
        let (f, mut h) = fields(&[("Connection", "x-private"), ("X-Private", "1"), ("Te", "a")]);
        f.strip(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }
}
