//! What the client needs from a response head's fields (its framing, whether the connection
//! stays open, which hop-by-hop fields to drop), noted in the pass that reads them. Looking
//! each up in the header map afterwards cost a hashed lookup apiece, absent fields included:
//! about a twentieth of a small proxied request.

use hyper::header::HeaderMap;

use super::decode::Framing;
use crate::l7::forward::HOP_BY_HOP;

/// The fields of one response head, as far as the proxy acts on them.
#[derive(Debug, Default)]
pub struct ResponseFields {
    /// The last transfer coding of the last `Transfer-Encoding` field, when there is one:
    /// whether it is `chunked`.
    chunked: Option<bool>,
    /// The `Content-Length` all its fields agree on.
    length: Option<u64>,
    /// A `Content-Length` that is not a number, or two that disagree.
    bad_length: Option<&'static str>,
    /// `Connection` lists `close`, `keep-alive`.
    close: bool,
    keep_alive: bool,
    /// `Connection` names a field beyond the hop-by-hop ones (dropped too).
    names_others: bool,
    /// Which of [`HOP_BY_HOP`] are present, bit `i` for entry `i`.
    hop: u16,
}

impl ResponseFields {
    /// Notes one field (`name` as received, any case).
    pub fn note(&mut self, name: &[u8], value: &[u8]) {
        let Some(i) = HOP_BY_HOP
            .iter()
            .position(|h| h.as_bytes().eq_ignore_ascii_case(name))
        else {
            if name.eq_ignore_ascii_case(b"content-length") {
                self.note_length(value);
            }
            return;
        };
        self.hop |= 1 << i;
        let mut tokens = value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
        match HOP_BY_HOP[i] {
            "transfer-encoding" => {
                let last = tokens.next_back().unwrap_or_default();
                self.chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
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
        let n = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        match (n, self.length) {
            (None, _) => self.bad_length = Some("bad Content-Length"),
            (Some(n), Some(l)) if n != l => {
                self.bad_length = Some("Content-Length values disagree");
            }
            (Some(n), _) => self.length = Some(n),
        }
    }

    /// RFC 9112 §6.3 for a response: chunked when the last transfer coding is chunked, until
    /// the close for any other coding, else `Content-Length` (which must be one number), else
    /// until the close.
    pub fn framing(&self) -> Result<Framing, &'static str> {
        match self.chunked {
            Some(true) => return Ok(Framing::Chunked),
            Some(false) => return Ok(Framing::Close),
            None => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &[(&str, &str)]) -> (ResponseFields, HeaderMap) {
        let mut f = ResponseFields::default();
        let mut h = HeaderMap::new();
        for (n, v) in head {
            f.note(n.as_bytes(), v.as_bytes());
            h.append(
                hyper::header::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        (f, h)
    }

    #[test]
    fn framing_follows_the_last_coding_then_the_length() {
        let (f, _) = fields(&[
            ("Transfer-Encoding", "gzip, chunked"),
            ("Content-Length", "3"),
        ]);
        assert_eq!(f.framing(), Ok(Framing::Chunked));
        let (f, _) = fields(&[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "gzip"),
        ]);
        assert_eq!(f.framing(), Ok(Framing::Close));
        let (f, _) = fields(&[("Content-Length", " 12 "), ("content-length", "12")]);
        assert_eq!(f.framing(), Ok(Framing::Length(12)));
        let (f, _) = fields(&[("Content-Length", "12"), ("content-length", "13")]);
        assert_eq!(f.framing(), Err("Content-Length values disagree"));
        let (f, _) = fields(&[("Content-Length", "-1")]);
        assert_eq!(f.framing(), Err("bad Content-Length"));
        let (f, _) = fields(&[("Server", "x")]);
        assert_eq!(f.framing(), Ok(Framing::Close));
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
