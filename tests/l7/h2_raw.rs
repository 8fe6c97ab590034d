//! A client speaking raw HTTP/2 frames over prior knowledge, for the tests that look at what a
//! client library would hide (`h2_wire`, `h2_conformance`).

use std::io::{Read, Write};

use vane::l7::h2::hpack::{Decoder, Field, HpackError, Scratch};

use super::*;

// The wire's numbers written out from RFC 9113, not taken from `vane::l7::h2::frame`: a
// client built on the server's own constants could not catch a wrong one.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;
pub const END_STREAM: u8 = 1;
pub const END_HEADERS: u8 = 4;
pub const PADDED: u8 = 8;
pub const PRIORITIZED: u8 = 0x20;

pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn code(&self) -> u32 {
        let at = if self.kind == GOAWAY { 4 } else { 0 };
        u32::from_be_bytes(self.payload[at..at + 4].try_into().expect("4 bytes"))
    }
}

/// A client speaking raw frames over prior knowledge.
pub struct H2 {
    pub s: TcpStream,
    pub decoder: Decoder,
}

impl H2 {
    /// Connects with the preface and a SETTINGS frame of `settings`, and acknowledges the
    /// server's.
    pub fn connect(port: u16, settings: &[(u16, u32)]) -> H2 {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut c = H2 {
            s,
            decoder: Decoder::new(4096),
        };
        c.s.write_all(PREFACE).expect("preface");
        let mut p = Vec::new();
        for (k, v) in settings {
            p.extend_from_slice(&k.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        c.send(SETTINGS, 0, 0, &p);
        c.send(SETTINGS, 1, 0, &[]);
        c
    }

    pub fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        self.s
            .write_all(&frame(kind, flags, stream, payload))
            .expect("send");
    }

    /// The next frame, or `None` when none comes within the read timeout or the server
    /// closed.
    pub fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.s.read_exact(&mut head).ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        self.s.read_exact(&mut payload).ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes(head[5..9].try_into().ok()?) & 0x7fff_ffff,
            payload,
        })
    }

    /// Frames until one `want` matches (returned last), at most 2,000.
    pub fn until(&mut self, want: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut seen = Vec::new();
        for _ in 0..2000 {
            let Some(f) = self.next() else { break };
            let done = want(&f);
            seen.push(f);
            if done {
                return seen;
            }
        }
        panic!(
            "wanted frame never came; saw {:?}",
            seen.iter().map(|f| (f.kind, f.stream)).collect::<Vec<_>>()
        );
    }

    /// The DATA of a response, up to its END_STREAM.
    pub fn body(&mut self) -> Vec<u8> {
        self.until(|f| f.kind == DATA && f.flags & END_STREAM != 0)
            .into_iter()
            .filter(|f| f.kind == DATA)
            .flat_map(|f| f.payload)
            .collect()
    }

    /// The head of the response on `stream` (frames before it are passed over): its fields.
    pub fn head(&mut self, stream: u32) -> Vec<(String, String)> {
        let seen = self.until(|f| f.kind == HEADERS && f.stream == stream);
        let block = seen.last().expect("head").payload.clone();
        self.fields(&block)
    }

    /// A response head's fields.
    pub fn fields(&mut self, block: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.decoder
            .decode(block, &mut Scratch::default(), |f: Field<'_>| {
                out.push((
                    String::from_utf8_lossy(f.name).into_owned(),
                    String::from_utf8_lossy(f.value).into_owned(),
                ));
                Ok::<_, HpackError>(())
            })
            .expect("response head decodes");
        out
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A GET of `path` as an HPACK block: `:method GET` and `:scheme http` indexed, `:path` and
/// `:authority` literals without indexing, then `extra` fields (literal names).
pub fn get(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    block(0x82, path, extra)
}

/// The same with `:method` from the static table entry `method` (0x82 GET, 0x83 POST).
pub fn block(method: u8, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![method, 0x86];
    let mut lit = |index: u8, value: &str| {
        b.push(index);
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
    };
    lit(0x04, path);
    lit(0x01, "h2.test");
    for (n, v) in extra {
        b.push(0);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// vane on a plaintext HTTP port running `app`, HTTP/2 on its own server in either mode of
/// the suite.
pub fn gateway(app: &str) -> (ConfigDir, u16, Vane) {
    let (cfg, port) = app_dir(app);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("HTTP2_SERVER", "vane".to_string())],
            wait_ports: vec![port],
        },
    );
    (cfg, port, v)
}

/// The `content-length` of an HTTP/2 response head.
pub fn length_of(head: &[(String, String)]) -> usize {
    head.iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .expect("content-length")
}
