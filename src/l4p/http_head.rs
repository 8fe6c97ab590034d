//! Sans-IO reading of a plaintext HTTP/1.x request head from peeked bytes. Partial heads are
//! fine: whatever is complete is reported; non-HTTP bytes yield nothing.

/// What the head says so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
}

/// Header lines looked at, as 0.9.2 (32).
const MAX_HEADERS: usize = 32;

fn token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The next line that ends in CRLF, and what follows it; `None` when no CRLF is left (a line
/// still arriving). A lone LF is part of its line, as a lone CR is.
fn next_line(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', bytes.get(from..)?) {
        let at = from + i;
        if at > 0 && bytes[at - 1] == b'\r' {
            return Some((text.get(..at - 1)?, text.get(at + 1..)?));
        }
        from = at + 1;
    }
    None
}

/// `text` up to the first `byte` (an ASCII byte, so both sides are whole characters) and what
/// follows it; all of `text` and nothing when it has none.
fn cut(text: &str, byte: u8) -> (&str, Option<&str>) {
    match memchr::memchr(byte, text.as_bytes()) {
        Some(i) => (text.get(..i).unwrap_or_default(), text.get(i + 1..)),
        None => (text, None),
    }
}

/// Parses the request line and the first `Host` header found in `buf`. Lines and fields are
/// found with `memchr` (this runs for every plaintext connection a resolver inspects).
pub fn parse(buf: &[u8]) -> Head {
    let mut head = Head::default();
    let text = match std::str::from_utf8(buf) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default(),
    };
    // Only lines that are complete (end in CRLF) count.
    let (first, rest, complete_first) = match next_line(text) {
        Some((line, rest)) => (line, rest, true),
        None => (text, "", false),
    };
    if first.is_empty() && !complete_first {
        return head;
    }
    let (method, Some(after)) = cut(first, b' ') else {
        return head;
    };
    let (path, Some(after)) = cut(after, b' ') else {
        return head;
    };
    let (version, _) = cut(after, b' ');
    // A version is required once the request line is complete.
    let version_ok = version.starts_with("HTTP/1.") || !complete_first;
    if !token(method) || path.is_empty() || !version_ok {
        return head;
    }
    head.method = Some(method.to_string());
    head.path = Some(path.to_string());
    head.host = host(rest);
    head
}

/// True when the request target of the head's first line (as far as it has come) starts with
/// `prefix`: a quick look, before a [`parse`], at whether a head may be asking for a path.
pub fn target_starts_with(buf: &[u8], prefix: &str) -> bool {
    let Some(space) = memchr::memchr(b' ', buf) else {
        return false;
    };
    buf.get(space + 1..)
        .is_some_and(|t| t.starts_with(prefix.as_bytes()))
}

/// The value of the first `Host` field among the complete lines of `fields`.
fn host(mut fields: &str) -> Option<String> {
    for _ in 0..MAX_HEADERS {
        let (line, after) = next_line(fields)?;
        if line.is_empty() {
            return None;
        }
        fields = after;
        if let (name, Some(value)) = cut(line, b':') {
            if name.eq_ignore_ascii_case("host") {
                return Some(value.trim().to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick look never misses a head whose parsed target starts with the prefix, for
    /// every prefix of heads that do and do not ask for it.
    #[test]
    fn the_quick_target_look_agrees_with_the_parse() {
        let p = "/.well-known/acme-challenge/";
        for full in [
            &b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET /.well-known/other HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nX: /.well-known/acme-challenge/\r\n\r\n",
            b"GET\r\n /.well-known/acme-challenge/x",
        ] {
            for i in 0..=full.len() {
                let head = &full[..i];
                let parsed = parse(head).path.is_some_and(|t| t.starts_with(p));
                assert!(
                    !parsed || target_starts_with(head, p),
                    "{:?}",
                    String::from_utf8_lossy(head)
                );
            }
        }
        assert!(target_starts_with(
            b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\n",
            p
        ));
        assert!(!target_starts_with(b"GET /index.html HTTP/1.1\r\n", p));
        assert!(!target_starts_with(b"GET", p));
    }

    #[test]
    fn full_partial_and_garbage() {
        let h = parse(b"GET /a?b=1 HTTP/1.1\r\nUser-Agent: x\r\nhOsT: Example.com:8080 \r\n\r\n");
        assert_eq!(h.method.as_deref(), Some("GET"));
        assert_eq!(h.path.as_deref(), Some("/a?b=1"));
        assert_eq!(h.host.as_deref(), Some("Example.com:8080"));
        let p = parse(b"POST /upload HTTP/1.1\r\nHo");
        assert_eq!((p.method.as_deref(), p.host), (Some("POST"), None));
        // A header line without its CRLF may be cut short: not taken.
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: ab").host, None);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: ab\r\n").host.as_deref(),
            Some("ab")
        );
        assert_eq!(parse(b"\x16\x03\x01\x02\x00"), Head::default());
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), Head::default());
        let full = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for i in 0..=full.len() {
            let h = parse(&full[..i]);
            assert!(
                h.method.is_none() || h.method.as_deref() == Some("GET"),
                "prefix {i}"
            );
            assert!(
                h.host.is_none() || h.host.as_deref() == Some("a"),
                "prefix {i}"
            );
        }
    }
    /// `cut` splits as `split_once` does, and the request line is read as splitting it by
    /// spaces did, for every prefix of heads with odd spacing, lone CR and LF, several colons
    /// and non-UTF-8 bytes.
    #[test]
    fn same_answers_as_splitting_the_text() {
        for s in ["a:b", ":", "a:", ":b", "a::b", "", "none", "ü:ß:x"] {
            let (before, after) = cut(s, b':');
            let split = s.split_once(':');
            assert_eq!(after.map(|a| (before, a)), split, "{s}");
        }
        fn request_line(buf: &[u8]) -> (Option<String>, Option<String>) {
            let text = match std::str::from_utf8(buf) {
                Ok(t) => t,
                Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default(),
            };
            let (first, complete) = next_line(text).map_or((text, false), |(l, _)| (l, true));
            let mut parts = first.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(m), Some(p), Some(v))
                    if token(m) && !p.is_empty() && (v.starts_with("HTTP/1.") || !complete) =>
                {
                    (Some(m.to_string()), Some(p.to_string()))
                }
                _ => (None, None),
            }
        }
        let heads: [&[u8]; 8] = [
            b"GET /a?b=1 HTTP/1.1\r\nUser-Agent: x\r\nHost: a:1:2 \r\n\r\n",
            b"GET  /double HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /x HTTP/1.1 extra\r\nhost:b\r\n\r\n",
            b"GET /x\rHTTP/1.1\r\nX: \n y\r\nHOST:  c \r\n",
            b"POST /\xff\xfe HTTP/1.1\r\nHost: d\r\n",
            b"GET / HTTP/2\r\nHost: e\r\n",
            b"GET / HTTP/1.0\r\nNoColon\r\nHost\r\nHost: f\r\n",
            b"\r\nGET / HTTP/1.1\r\n",
        ];
        for h in heads {
            for end in 0..=h.len() {
                let head = parse(&h[..end]);
                assert_eq!(
                    (head.method, head.path),
                    request_line(&h[..end]),
                    "{:?}",
                    &h[..end]
                );
            }
        }
    }
}
