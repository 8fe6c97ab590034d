//! HTTP/2 frames (RFC 9113, sections 4 and 6) as a server reads and writes them: the 9-byte
//! head, each frame's payload checked against the rules of its type, and the writers of
//! what a server sends.

use bytes::{Buf, Bytes};

/// What a client sends first (3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEAD_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE until a peer raises it, and the least it may set.
pub const DEFAULT_MAX_FRAME: u32 = 16_384;
const LARGEST_MAX_FRAME: u32 = (1 << 24) - 1;
/// The largest flow-control window (6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;
/// Every window's size until SETTINGS change it (6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

/// Frame types (6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags; which apply depends on the type.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes (7). A peer's unknown code is kept as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    SettingsTimeout = 0x4,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    Compression = 0x9,
    Connect = 0xa,
    EnhanceYourCalm = 0xb,
    InadequateSecurity = 0xc,
    Http11Required = 0xd,
}

impl Reason {
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// A frame that breaks the protocol: the whole connection fails (GOAWAY), or only its
/// stream (RST_STREAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("connection error {0:?}: {1}")]
    Connection(Reason, &'static str),
    #[error("stream {0} error {1:?}: {2}")]
    Stream(u32, Reason, &'static str),
}

use FrameError::{Connection, Stream};

/// A frame's fixed head (4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    pub fn parse(b: &[u8; HEAD_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            // The reserved bit is ignored on receipt.
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & MAX_WINDOW,
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// What a PRIORITY frame or HEADERS' priority block says. Kept only to be checked: this
/// server serves streams in the order they are ready (RFC 9113 deprecates the scheme).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub depends_on: u32,
    pub exclusive: bool,
    pub weight: u8,
}

/// SETTINGS parameters a peer sent; `None` for those it left as they were.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub header_table_size: Option<u32>,
    pub enable_push: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_window_size: Option<u32>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
    /// RFC 8441: extended CONNECT (WebSocket over HTTP/2).
    pub enable_connect_protocol: Option<bool>,
}

mod id {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

impl Settings {
    fn parse(mut p: Bytes) -> Result<Self, FrameError> {
        let mut s = Self::default();
        let flag = |v: u32| match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Connection(Reason::Protocol, "boolean setting not 0 or 1")),
        };
        while p.remaining() >= 6 {
            let (key, value) = (p.get_u16(), p.get_u32());
            match key {
                id::HEADER_TABLE_SIZE => s.header_table_size = Some(value),
                id::ENABLE_PUSH => s.enable_push = Some(flag(value)?),
                id::MAX_CONCURRENT_STREAMS => s.max_concurrent_streams = Some(value),
                id::INITIAL_WINDOW_SIZE => {
                    if value > MAX_WINDOW {
                        return Err(Connection(
                            Reason::FlowControl,
                            "initial window above 2^31-1",
                        ));
                    }
                    s.initial_window_size = Some(value);
                }
                id::MAX_FRAME_SIZE => {
                    if !(DEFAULT_MAX_FRAME..=LARGEST_MAX_FRAME).contains(&value) {
                        return Err(Connection(Reason::Protocol, "max frame size out of range"));
                    }
                    s.max_frame_size = Some(value);
                }
                id::MAX_HEADER_LIST_SIZE => s.max_header_list_size = Some(value),
                id::ENABLE_CONNECT_PROTOCOL => s.enable_connect_protocol = Some(flag(value)?),
                // Unknown settings are ignored (6.5.2).
                _ => {}
            }
        }
        Ok(s)
    }

    /// Appends a SETTINGS frame with the parameters that are set.
    pub fn write(&self, out: &mut Vec<u8>) {
        let params = [
            (id::HEADER_TABLE_SIZE, self.header_table_size),
            (id::ENABLE_PUSH, self.enable_push.map(u32::from)),
            (id::MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (id::INITIAL_WINDOW_SIZE, self.initial_window_size),
            (id::MAX_FRAME_SIZE, self.max_frame_size),
            (id::MAX_HEADER_LIST_SIZE, self.max_header_list_size),
            (
                id::ENABLE_CONNECT_PROTOCOL,
                self.enable_connect_protocol.map(u32::from),
            ),
        ];
        let n = params.iter().filter(|(_, v)| v.is_some()).count();
        Head {
            len: 6 * n as u32,
            kind: kind::SETTINGS,
            flags: 0,
            stream: 0,
        }
        .write(out);
        for (key, value) in params {
            if let Some(v) = value {
                out.extend_from_slice(&key.to_be_bytes());
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
}

/// A frame a server receives, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        end_stream: bool,
        data: Bytes,
        /// What the frame counts against flow control: its whole payload, padding too.
        flow_len: u32,
    },
    Headers {
        stream: u32,
        end_stream: bool,
        end_headers: bool,
        priority: Option<Priority>,
        fragment: Bytes,
    },
    Priority {
        stream: u32,
        priority: Priority,
    },
    RstStream {
        stream: u32,
        code: u32,
    },
    Settings {
        ack: bool,
        settings: Settings,
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: u32,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        end_headers: bool,
        fragment: Bytes,
    },
    /// Unknown types are ignored (4.1), except that one may not come between HEADERS and
    /// its CONTINUATION (the connection checks).
    Unknown,
}

/// Removes the padding (6.1): the pad length byte and the pad.
fn unpad(head: &Head, mut p: Bytes) -> Result<Bytes, FrameError> {
    if !head.has(flag::PADDED) {
        return Ok(p);
    }
    if p.is_empty() {
        return Err(Connection(
            Reason::FrameSize,
            "padded frame without pad length",
        ));
    }
    let pad = usize::from(p.get_u8());
    if pad > p.len() {
        return Err(Connection(
            Reason::Protocol,
            "padding longer than the payload",
        ));
    }
    p.truncate(p.len() - pad);
    Ok(p)
}

fn priority(p: &mut Bytes) -> Priority {
    let dep = p.get_u32();
    Priority {
        depends_on: dep & MAX_WINDOW,
        exclusive: dep & !MAX_WINDOW != 0,
        weight: p.get_u8(),
    }
}

impl Priority {
    /// A stream may not depend on itself (5.3.1): an error of that stream. On HEADERS the
    /// connection says so after decoding the block, which the header table needs.
    pub fn on_itself(&self, stream: u32) -> bool {
        self.depends_on == stream
    }
}

impl Frame {
    /// Checks a whole frame. The caller has checked `head.len` against the largest frame
    /// it allows and read exactly that many bytes into `payload`.
    pub fn parse(head: Head, payload: Bytes) -> Result<Frame, FrameError> {
        let stream = head.stream;
        let len = payload.len();
        let on_stream = |what| {
            if stream == 0 {
                Err(Connection(Reason::Protocol, what))
            } else {
                Ok(())
            }
        };
        let on_connection = |what| {
            if stream != 0 {
                Err(Connection(Reason::Protocol, what))
            } else {
                Ok(())
            }
        };
        Ok(match head.kind {
            kind::DATA => {
                on_stream("DATA on stream 0")?;
                Frame::Data {
                    stream,
                    end_stream: head.has(flag::END_STREAM),
                    flow_len: len as u32,
                    data: unpad(&head, payload)?,
                }
            }
            kind::HEADERS => {
                on_stream("HEADERS on stream 0")?;
                let mut p = unpad(&head, payload)?;
                let priority = if head.has(flag::PRIORITY) {
                    if p.len() < 5 {
                        return Err(Connection(Reason::FrameSize, "HEADERS priority cut short"));
                    }
                    Some(priority(&mut p))
                } else {
                    None
                };
                Frame::Headers {
                    stream,
                    end_stream: head.has(flag::END_STREAM),
                    end_headers: head.has(flag::END_HEADERS),
                    priority,
                    fragment: p,
                }
            }
            kind::PRIORITY => {
                on_stream("PRIORITY on stream 0")?;
                if len != 5 {
                    return Err(Stream(stream, Reason::FrameSize, "PRIORITY not 5 bytes"));
                }
                let mut p = payload;
                let priority = priority(&mut p);
                if priority.on_itself(stream) {
                    return Err(Stream(stream, Reason::Protocol, "stream depends on itself"));
                }
                Frame::Priority { stream, priority }
            }
            kind::RST_STREAM => {
                on_stream("RST_STREAM on stream 0")?;
                if len != 4 {
                    return Err(Connection(Reason::FrameSize, "RST_STREAM not 4 bytes"));
                }
                Frame::RstStream {
                    stream,
                    code: payload.clone().get_u32(),
                }
            }
            kind::SETTINGS => {
                on_connection("SETTINGS on a stream")?;
                let ack = head.has(flag::ACK);
                if ack && len != 0 {
                    return Err(Connection(Reason::FrameSize, "SETTINGS ack with a payload"));
                }
                if !len.is_multiple_of(6) {
                    return Err(Connection(
                        Reason::FrameSize,
                        "SETTINGS not a multiple of 6",
                    ));
                }
                Frame::Settings {
                    ack,
                    settings: Settings::parse(payload)?,
                }
            }
            kind::PUSH_PROMISE => {
                return Err(Connection(Reason::Protocol, "PUSH_PROMISE from a client"));
            }
            kind::PING => {
                on_connection("PING on a stream")?;
                let data: [u8; 8] = payload[..]
                    .try_into()
                    .map_err(|_| Connection(Reason::FrameSize, "PING not 8 bytes"))?;
                Frame::Ping {
                    ack: head.has(flag::ACK),
                    data,
                }
            }
            kind::GOAWAY => {
                on_connection("GOAWAY on a stream")?;
                if len < 8 {
                    return Err(Connection(Reason::FrameSize, "GOAWAY shorter than 8 bytes"));
                }
                let mut p = payload;
                Frame::GoAway {
                    last_stream: p.get_u32() & MAX_WINDOW,
                    code: p.get_u32(),
                }
            }
            kind::WINDOW_UPDATE => {
                if len != 4 {
                    return Err(Connection(Reason::FrameSize, "WINDOW_UPDATE not 4 bytes"));
                }
                let increment = payload.clone().get_u32() & MAX_WINDOW;
                if increment == 0 {
                    return Err(if stream == 0 {
                        Connection(Reason::Protocol, "WINDOW_UPDATE of 0")
                    } else {
                        Stream(stream, Reason::Protocol, "WINDOW_UPDATE of 0")
                    });
                }
                Frame::WindowUpdate { stream, increment }
            }
            kind::CONTINUATION => {
                on_stream("CONTINUATION on stream 0")?;
                Frame::Continuation {
                    stream,
                    end_headers: head.has(flag::END_HEADERS),
                    fragment: payload,
                }
            }
            _ => Frame::Unknown,
        })
    }
}

/// Appends a SETTINGS acknowledgement.
pub fn write_settings_ack(out: &mut Vec<u8>) {
    Head {
        len: 0,
        kind: kind::SETTINGS,
        flags: flag::ACK,
        stream: 0,
    }
    .write(out);
}

/// Appends the answer to a PING.
pub fn write_ping_ack(out: &mut Vec<u8>, data: &[u8; 8]) {
    Head {
        len: 8,
        kind: kind::PING,
        flags: flag::ACK,
        stream: 0,
    }
    .write(out);
    out.extend_from_slice(data);
}

pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, reason: Reason) {
    Head {
        len: 8,
        kind: kind::GOAWAY,
        flags: 0,
        stream: 0,
    }
    .write(out);
    out.extend_from_slice(&last_stream.to_be_bytes());
    out.extend_from_slice(&reason.code().to_be_bytes());
}

pub fn write_rst_stream(out: &mut Vec<u8>, stream: u32, reason: Reason) {
    Head {
        len: 4,
        kind: kind::RST_STREAM,
        flags: 0,
        stream,
    }
    .write(out);
    out.extend_from_slice(&reason.code().to_be_bytes());
}

pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    Head {
        len: 4,
        kind: kind::WINDOW_UPDATE,
        flags: 0,
        stream,
    }
    .write(out);
    out.extend_from_slice(&increment.to_be_bytes());
}

/// Appends a header block as HEADERS and, past `max_frame` bytes, CONTINUATION frames.
pub fn write_headers(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: u32,
) {
    let max = max_frame.max(1) as usize;
    let mut chunks = block.chunks(max).peekable();
    let mut first = true;
    loop {
        let chunk = chunks.next().unwrap_or(&[]);
        let last = chunks.peek().is_none();
        let mut flags = if last { flag::END_HEADERS } else { 0 };
        if first && end_stream {
            flags |= flag::END_STREAM;
        }
        Head {
            len: chunk.len() as u32,
            kind: if first {
                kind::HEADERS
            } else {
                kind::CONTINUATION
            },
            flags,
            stream,
        }
        .write(out);
        out.extend_from_slice(chunk);
        first = false;
        if last {
            return;
        }
    }
}

/// Appends the head of a DATA frame of `len` bytes; the payload goes after it.
pub fn write_data_head(out: &mut Vec<u8>, stream: u32, len: u32, end_stream: bool) {
    Head {
        len,
        kind: kind::DATA,
        flags: if end_stream { flag::END_STREAM } else { 0 },
        stream,
    }
    .write(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Result<Frame, FrameError> {
        let mut out = Vec::new();
        Head {
            len: payload.len() as u32,
            kind,
            flags,
            stream,
        }
        .write(&mut out);
        let head = Head::parse(out[..HEAD_LEN].try_into().unwrap());
        assert_eq!(head.len as usize, payload.len());
        Frame::parse(head, Bytes::copy_from_slice(payload))
    }

    #[test]
    fn heads_round_trip_and_drop_the_reserved_bit() {
        let h = Head {
            len: 0x01_0203,
            kind: kind::HEADERS,
            flags: flag::END_HEADERS,
            stream: 7,
        };
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out, [1, 2, 3, 1, 4, 0, 0, 0, 7]);
        out[5] |= 0x80;
        assert_eq!(Head::parse(out[..].try_into().unwrap()), h);
    }

    #[test]
    fn data_and_headers_lose_their_padding() {
        let f = frame(kind::DATA, flag::PADDED | flag::END_STREAM, 1, b"\x02abcPP").unwrap();
        assert_eq!(
            f,
            Frame::Data {
                stream: 1,
                end_stream: true,
                data: Bytes::from_static(b"abc"),
                flow_len: 6,
            }
        );
        assert_eq!(
            frame(kind::DATA, flag::PADDED, 1, b"\x06abc"),
            Err(Connection(
                Reason::Protocol,
                "padding longer than the payload"
            ))
        );
        let f = frame(
            kind::HEADERS,
            flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
            3,
            b"\x01\x80\x00\x00\x01\x0f\x82P",
        )
        .unwrap();
        assert_eq!(
            f,
            Frame::Headers {
                stream: 3,
                end_stream: false,
                end_headers: true,
                priority: Some(Priority {
                    depends_on: 1,
                    exclusive: true,
                    weight: 15
                }),
                fragment: Bytes::from_static(b"\x82"),
            }
        );
        // On HEADERS the block is kept (the connection decodes it, then resets the stream);
        // on PRIORITY it is the frame's error.
        let f = frame(
            kind::HEADERS,
            flag::PRIORITY,
            3,
            b"\x00\x00\x00\x03\x0f\x82",
        )
        .unwrap();
        assert!(matches!(f, Frame::Headers { priority: Some(p), .. } if p.on_itself(3)));
        assert_eq!(
            frame(kind::PRIORITY, 0, 3, b"\x00\x00\x00\x03\x0f"),
            Err(Stream(3, Reason::Protocol, "stream depends on itself"))
        );
    }

    #[test]
    fn frames_on_the_wrong_stream_or_of_the_wrong_size_are_refused() {
        let conn = |r| move |e: FrameError| matches!(e, Connection(x, _) if x == r);
        for (kind, flags, stream, payload, want) in [
            (kind::DATA, 0, 0, &b"x"[..], Reason::Protocol),
            (kind::HEADERS, 0, 0, b"", Reason::Protocol),
            (kind::SETTINGS, 0, 1, b"", Reason::Protocol),
            (
                kind::SETTINGS,
                flag::ACK,
                0,
                b"\0\0\0\0\0\0",
                Reason::FrameSize,
            ),
            (kind::SETTINGS, 0, 0, b"\0\0\0", Reason::FrameSize),
            (kind::PING, 0, 0, b"1234567", Reason::FrameSize),
            (kind::PING, 0, 1, b"12345678", Reason::Protocol),
            (kind::GOAWAY, 0, 0, b"1234567", Reason::FrameSize),
            (kind::RST_STREAM, 0, 1, b"123", Reason::FrameSize),
            (kind::WINDOW_UPDATE, 0, 0, b"\0\0\0\0", Reason::Protocol),
            (kind::WINDOW_UPDATE, 0, 1, b"\0\0\0", Reason::FrameSize),
            (kind::PUSH_PROMISE, 0, 1, b"\0\0\0\x02", Reason::Protocol),
            (kind::CONTINUATION, 0, 0, b"", Reason::Protocol),
        ] {
            let got = frame(kind, flags, stream, payload);
            assert!(
                got.clone().is_err_and(conn(want)),
                "type {kind} flags {flags} stream {stream}: {got:?}"
            );
        }
        assert_eq!(
            frame(kind::WINDOW_UPDATE, 0, 5, b"\0\0\0\0"),
            Err(Stream(5, Reason::Protocol, "WINDOW_UPDATE of 0"))
        );
        assert_eq!(frame(0xfa, 0, 0, b"anything"), Ok(Frame::Unknown));
    }

    #[test]
    fn settings_round_trip_and_bad_values_are_refused() {
        let s = Settings {
            header_table_size: Some(0),
            max_concurrent_streams: Some(256),
            initial_window_size: Some(1 << 20),
            max_frame_size: Some(32_768),
            enable_connect_protocol: Some(true),
            ..Settings::default()
        };
        let mut out = Vec::new();
        s.write(&mut out);
        let head = Head::parse(out[..HEAD_LEN].try_into().unwrap());
        assert_eq!(head.len, 30);
        let parsed = Frame::parse(head, Bytes::copy_from_slice(&out[HEAD_LEN..])).unwrap();
        assert_eq!(
            parsed,
            Frame::Settings {
                ack: false,
                settings: s
            }
        );
        for (key, value, want) in [
            (2u16, 2u32, Reason::Protocol),
            (4, 1 << 31, Reason::FlowControl),
            (5, 16_383, Reason::Protocol),
            (5, 1 << 24, Reason::Protocol),
            (8, 7, Reason::Protocol),
        ] {
            let mut p = key.to_be_bytes().to_vec();
            p.extend_from_slice(&value.to_be_bytes());
            assert!(
                matches!(frame(kind::SETTINGS, 0, 0, &p), Err(Connection(r, _)) if r == want),
                "setting {key} = {value}"
            );
        }
        // Unknown ids are ignored; the last of a repeated one wins.
        let p = b"\x00\x99\x00\x00\x00\x01\x00\x03\x00\x00\x00\x05\x00\x03\x00\x00\x00\x07";
        assert_eq!(
            frame(kind::SETTINGS, 0, 0, p),
            Ok(Frame::Settings {
                ack: false,
                settings: Settings {
                    max_concurrent_streams: Some(7),
                    ..Settings::default()
                }
            })
        );
    }

    #[test]
    fn a_large_header_block_continues_in_continuation_frames() {
        let block: Vec<u8> = (0..40u8).collect();
        let mut out = Vec::new();
        write_headers(&mut out, 9, &block, true, 16);
        let mut at = 0;
        let mut got = Vec::new();
        let mut heads = Vec::new();
        while at < out.len() {
            let h = Head::parse(out[at..at + HEAD_LEN].try_into().unwrap());
            at += HEAD_LEN;
            got.extend_from_slice(&out[at..at + h.len as usize]);
            at += h.len as usize;
            heads.push((h.kind, h.flags, h.len));
        }
        assert_eq!(got, block);
        assert_eq!(
            heads,
            [
                (kind::HEADERS, flag::END_STREAM, 16),
                (kind::CONTINUATION, 0, 16),
                (kind::CONTINUATION, flag::END_HEADERS, 8)
            ]
        );
        // An empty block is one HEADERS frame.
        out.clear();
        write_headers(&mut out, 1, &[], false, 16);
        assert_eq!(out, [0, 0, 0, kind::HEADERS, flag::END_HEADERS, 0, 0, 0, 1]);
    }
}
