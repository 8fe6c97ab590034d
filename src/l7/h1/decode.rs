//! HTTP/1.1 message bodies out of a read buffer: `Content-Length`, chunked (RFC 9112 §7.1),
//! or until the connection closes (responses only). Sans-IO: the caller reads, the decoder
//! takes what it can.

use bytes::{Buf, Bytes, BytesMut};

/// How a body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Until the peer closes (a response without a length; never reusable).
    Close,
}

/// The framing is broken; the connection cannot be used further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed body framing: {0}")]
pub struct Malformed(pub &'static str);

/// What one step of decoding found in the buffer.
pub enum Step {
    /// A piece of the body.
    Data(Bytes),
    /// The last piece: the framing after it, already in the buffer, ends the body.
    Last(Bytes),
    /// The body is complete.
    End,
    /// More bytes from the peer are needed (for [`Framing::Close`]: or its close).
    More,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk: this many bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// The longest chunk-size line (size, extensions) and the most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;
/// Chunks already in the buffer are handed on together up to this many bytes.
const RUN: usize = 16 * 1024;

pub struct Decoder {
    state: State,
    trailer_bytes: usize,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunked::Size),
            Framing::Close => State::Close,
        };
        Self {
            state,
            trailer_bytes: 0,
        }
    }

    /// The whole body has been decoded (or given up on).
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    pub fn finish(&mut self) {
        self.state = State::Done;
    }

    /// Decodes the next piece of the body out of `buf` (consuming what it decoded). A piece
    /// that ends the body comes as [`Step::Last`], so a reader learns of the end with it
    /// instead of waiting for one more poll that nobody may make.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        match self.step(buf, true)? {
            Step::Data(d) => {
                let d = self.gather(d, buf)?;
                let last = match self.state {
                    State::Length(0) | State::Done => true,
                    State::Length(_) | State::Close | State::Chunked(Chunked::Data(_)) => false,
                    State::Chunked(_) => matches!(self.step(buf, false)?, Step::End),
                };
                if last {
                    self.state = State::Done;
                    Ok(Step::Last(d))
                } else {
                    Ok(Step::Data(d))
                }
            }
            Step::End => {
                self.state = State::Done;
                Ok(Step::End)
            }
            other => Ok(other),
        }
    }

    /// Joins the chunks that follow `first` whole in the buffer to it, up to [`RUN`] bytes:
    /// handed on one by one, a body sent a byte per chunk cost a wake-up and a system call
    /// per byte on its way (20,000 `sendto` for 20,000 one-byte chunks). Copies only when
    /// there is a second chunk to join.
    fn gather(&mut self, first: Bytes, buf: &mut BytesMut) -> Result<Bytes, Malformed> {
        let more = |s: &Self| s.state == State::Chunked(Chunked::DataEnd);
        if first.len() >= RUN || !more(self) {
            return Ok(first);
        }
        let mut run: Option<BytesMut> = None;
        loop {
            match self.step(buf, true)? {
                Step::Data(d) => {
                    let r = run.get_or_insert_with(|| BytesMut::from(&first[..]));
                    r.extend_from_slice(&d);
                    if r.len() >= RUN || !more(self) {
                        break;
                    }
                }
                Step::End => {
                    self.state = State::Done;
                    break;
                }
                // `step` gives no `Last`: only `decode` tells the last piece apart.
                Step::More | Step::Last(_) => break,
            }
        }
        Ok(run.map_or(first, BytesMut::freeze))
    }

    /// One step of decoding; with `data: false` it stops (`More`) before any body bytes.
    fn step(&mut self, buf: &mut BytesMut, data: bool) -> Result<Step, Malformed> {
        loop {
            match self.state {
                State::Done | State::Length(0) => return Ok(Step::End),
                State::Length(left) => {
                    if buf.is_empty() || !data {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    self.state = State::Length(left - n as u64);
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::Close => {
                    if buf.is_empty() || !data {
                        return Ok(Step::More);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                State::Chunked(Chunked::Size) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&line)?;
                    self.state = State::Chunked(if size == 0 {
                        Chunked::Trailers
                    } else {
                        Chunked::Data(size)
                    });
                }
                State::Chunked(Chunked::Data(left)) => {
                    if buf.is_empty() || !data {
                        return Ok(Step::More);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let rest = left - n as u64;
                    self.state = State::Chunked(if rest == 0 {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(rest)
                    });
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                State::Chunked(Chunked::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Chunked(Chunked::Size);
                }
                State::Chunked(Chunked::Trailers) => {
                    let room = MAX_TRAILERS.saturating_sub(self.trailer_bytes);
                    let Some(line) = take_line(buf, room.min(MAX_CHUNK_LINE * 4))? else {
                        return Ok(Step::More);
                    };
                    self.trailer_bytes += line.len() + 2;
                    if line.is_empty() {
                        return Ok(Step::End);
                    }
                    // Trailer fields are not forwarded (as most proxies do).
                }
            }
        }
    }
}

/// One CRLF-terminated line (without the CRLF), or `None` until it is all in `buf`.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, Malformed> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= max => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        Some(_) => Err(Malformed("chunk line too long")),
        None if buf.len() > max + 1 => Err(Malformed("chunk line too long")),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (`1a;ext=1`): hexadecimal, at most 16 digits.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > 16 {
        return Err(Malformed("bad chunk size"));
    }
    let mut n = 0u64;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(Malformed("bad chunk size")),
        };
        n = (n << 4) | u64::from(v);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed `step` bytes at a time; `None`: it never ended.
    fn decode_all(
        framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<Option<Vec<u8>>, Malformed> {
        let mut d = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match d.decode(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                Step::Last(b) => {
                    out.extend_from_slice(&b);
                    assert!(d.done());
                    return Ok(Some(out));
                }
                Step::End => return Ok(Some(out)),
                Step::More => {
                    if fed >= wire.len() {
                        return Ok(None);
                    }
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let wire = b"5;name=v\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 3, 7, wire.len()] {
            let got = decode_all(Framing::Chunked, wire, step).expect("decodes");
            assert_eq!(
                got.as_deref(),
                Some(&b"hello 0123456789"[..]),
                "step {step}"
            );
        }
        let got = decode_all(Framing::Length(5), b"abcde", 2).expect("decodes");
        assert_eq!(got.as_deref(), Some(&b"abcde"[..]));
        let got = decode_all(Framing::Close, b"until the end", 4).expect("decodes");
        assert_eq!(
            got, None,
            "a close-delimited body ends only with the connection"
        );
    }

    /// Chunks that arrived together leave together, up to [`RUN`] bytes a piece, and the
    /// piece that reaches the end is the last.
    #[test]
    fn small_chunks_in_the_buffer_are_joined() {
        let mut wire = b"1\r\nx\r\n".repeat(20_000);
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&wire[..]);
        let (mut pieces, mut body) = (0, Vec::new());
        loop {
            pieces += 1;
            match d.decode(&mut buf).expect("decodes") {
                Step::Data(b) => body.extend_from_slice(&b),
                Step::Last(b) => {
                    body.extend_from_slice(&b);
                    break;
                }
                Step::End | Step::More => panic!("the body is whole in the buffer"),
            }
        }
        assert_eq!(body, vec![b'x'; 20_000]);
        assert_eq!(pieces, 20_000usize.div_ceil(RUN), "{pieces} pieces");
        let mut d = Decoder::new(Framing::Chunked);
        let mut buf = BytesMut::from(&b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"[..]);
        assert!(matches!(d.decode(&mut buf), Ok(Step::Last(b)) if b == "abc"));
        assert!(d.done() && buf.is_empty());
    }

    #[test]
    fn hostile_chunk_framing_is_refused() {
        for wire in [
            &b"zz\r\nab\r\n0\r\n\r\n"[..],
            b"11111111111111111\r\n",
            b"2\r\nabXX0\r\n\r\n",
            b"\r\n",
        ] {
            assert!(
                decode_all(Framing::Chunked, wire, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        // A size line that never ends is refused at the cap, not read forever.
        let endless = vec![b'1'; MAX_CHUNK_LINE + 8];
        assert!(decode_all(Framing::Chunked, &endless, 512).is_err());
    }
}
