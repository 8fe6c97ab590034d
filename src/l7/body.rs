//! The response body type L7 hands to hyper, and the content-type guess of the response
//! terminator.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Reads up to `want` bytes from `r` through the reusable `buf`: `Some(chunk)`, or `None` at
/// the end of the stream. Shared by the bodies streamed from files and from CGI programs.
pub fn poll_chunk<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    want: usize,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<std::io::Result<Option<Bytes>>> {
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let mut rb = tokio::io::ReadBuf::new(&mut buf[..want]);
    let polled = std::pin::Pin::new(r).poll_read(cx, &mut rb);
    let n = rb.filled().len();
    polled.map_ok(|()| (n > 0).then(|| Bytes::copy_from_slice(&buf[..n])))
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The MIME type of a body given without a `Content-Type`: known binary signatures, then
/// HTML, JSON, other text, else octet-stream.
pub fn guess_content_type(b: &[u8]) -> &'static str {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b", "application/gzip"),
        (b"\x00asm", "application/wasm"),
    ];
    if let Some((_, t)) = SIGNATURES.iter().find(|(sig, _)| b.starts_with(sig)) {
        return t;
    }
    if b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return "image/webp";
    }
    let Ok(text) = std::str::from_utf8(b) else {
        return "application/octet-stream";
    };
    let head = text.trim_start();
    let lower: String = head
        .chars()
        .take(15)
        .collect::<String>()
        .to_ascii_lowercase();
    if lower.starts_with("<!doctype html")
        || lower.starts_with("<html")
        || (lower.starts_with("<?xml") && text.contains("<html"))
    {
        return "text/html; charset=utf-8";
    }
    if (head.starts_with('{') || head.starts_with('['))
        && serde_json::from_str::<serde_json::Value>(text).is_ok()
    {
        return "application/json";
    }
    "text/plain; charset=utf-8"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_guessed_from_the_bytes() {
        assert_eq!(guess_content_type(b"\x89PNG\r\n\x1a\nrest"), "image/png");
        assert_eq!(
            guess_content_type(b"  <!DOCTYPE html><p>x"),
            "text/html; charset=utf-8"
        );
        assert_eq!(guess_content_type(b"<HTML>"), "text/html; charset=utf-8");
        assert_eq!(guess_content_type(br#"{"a": [1, 2]}"#), "application/json");
        assert_eq!(guess_content_type(b"[1, 2"), "text/plain; charset=utf-8");
        assert_eq!(guess_content_type(b"hello"), "text/plain; charset=utf-8");
        assert_eq!(guess_content_type(b""), "text/plain; charset=utf-8");
        assert_eq!(
            guess_content_type(&[0xff, 0xfe, 0x00]),
            "application/octet-stream"
        );
        assert_eq!(guess_content_type(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
    }
}
