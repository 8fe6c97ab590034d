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
    let mut from = 0;
    while let Some(i) = text.get(from..)?.find('\n') {
        let at = from + i;
        if at > 0 && text.as_bytes()[at - 1] == b'\r' {
            return Some((text.get(..at - 1)?, text.get(at + 1..)?));
        }
        from = at + 1;
    }
    None
}

/// Parses the request line and the first `Host` header found in `buf`.
pub fn parse(buf: &[u8]) -> Head {
    let mut head = Head::default();
    let text = match std::str::from_utf8(buf) {
        Ok(t) => t,
        Err(e) => std::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or_default(),
    };
    // Only lines that are complete (end in CRLF) count.
    let (first, mut rest, complete_first) = match next_line(text) {
        Some((line, rest)) => (line, rest, true),
        None => (text, "", false),
    };
    if first.is_empty() && !complete_first {
        return head;
    }
    let mut parts = first.split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return head;
    };
    // A version is required once the request line is complete.
    let version_ok = version.starts_with("HTTP/1.") || !complete_first;
    if !token(method) || path.is_empty() || !version_ok {
        return head;
    }
    head.method = Some(method.to_string());
    head.path = Some(path.to_string());
    for _ in 0..MAX_HEADERS {
        let Some((line, after)) = next_line(rest) else {
            break;
        };
        if line.is_empty() {
            break;
        }
        rest = after;
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("host") {
                head.host = Some(value.trim().to_string());
                break;
            }
        }
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
