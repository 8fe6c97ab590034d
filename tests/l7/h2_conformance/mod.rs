//! vane's HTTP/2 server against the rules of RFC 9113 (HTTP/2) and RFC 7541 (HPACK), one case
//! per rule, in the manner of h2spec (which no distribution here packages): each case is sent
//! on a connection of its own, followed by a PING, and what comes back is judged.
//!
//! A case passes on the answer the RFC asks for. Where it allows either a stream error or a
//! connection error (RFC 9113 §5.4.2: a stream error may be treated as a connection error), a
//! GOAWAY with the same code passes too. Every failing case is reported, not only the first.

use std::io::{Read, Write};

use super::h2_raw::*;
use super::*;

mod cases;

use cases::{field_cases, framing_cases, hpack_cases, stream_cases};

/// What a case must get back.
pub enum Want {
    /// A connection error: GOAWAY with one of the codes, then the connection closes.
    GoAway(&'static [u32]),
    /// The connection closes, after a GOAWAY with PROTOCOL_ERROR or none (RFC 9113 §3.4 lets
    /// a server say nothing to a client that does not speak HTTP/2).
    Closed,
    /// A stream error: RST_STREAM on the stream with one of the codes.
    Reset(u32, &'static [u32]),
    /// No error: the PING sent after the case is answered first.
    Fine,
    /// A response head on the stream, and no error.
    Answer(u32),
    /// The same, with this status.
    Status(u32, &'static str),
    /// Acknowledgements (frames of this kind with the ACK flag) before the PING's.
    Acks(u8, usize),
}

/// One step of a case.
pub enum Step {
    Send(Vec<u8>),
    /// Waits for the response on the stream to end.
    AwaitEnd(u32),
}

pub struct Case {
    pub rule: &'static str,
    pub steps: Vec<Step>,
    pub want: Want,
    /// The connection preface and SETTINGS exchange are sent first.
    pub handshake: bool,
}

pub fn case(rule: &'static str, bytes: Vec<u8>, want: Want) -> Case {
    Case {
        rule,
        steps: vec![Step::Send(bytes)],
        want,
        handshake: true,
    }
}

pub fn steps(rule: &'static str, steps: Vec<Step>, want: Want) -> Case {
    Case {
        rule,
        steps,
        want,
        handshake: true,
    }
}

/// The PING after each case; its answer says the server read everything before it.
const MARK: &[u8; 8] = b"conform!";

/// Runs one case; what went wrong, if anything.
fn run(port: u16, c: &Case) -> Result<(), String> {
    let mut conn = if c.handshake {
        H2::connect(port, &[])
    } else {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        H2 {
            s,
            decoder: vane::l7::h2::hpack::Decoder::new(4096),
        }
    };
    let mut seen = Vec::new();
    for step in &c.steps {
        match step {
            // The server may close before it reads all: what it answered is judged.
            Step::Send(bytes) => {
                let _ = conn.s.write_all(bytes);
            }
            Step::AwaitEnd(id) => loop {
                let f = conn.next().ok_or("the response never ended")?;
                let end = f.stream == *id && f.flags & END_STREAM != 0;
                if f.kind == GOAWAY || f.kind == RST_STREAM {
                    return Err(format!("{} before the response ended", describe(&f)));
                }
                if end {
                    break;
                }
            },
        }
    }
    let _ = conn.s.write_all(&frame(PING, 0, 0, MARK));
    // Up to the PING's answer (and a response head, which its flow may send later) or a
    // GOAWAY.
    let answer = match c.want {
        Want::Answer(id) | Want::Status(id, _) => Some(id),
        _ => None,
    };
    let mut marked = false;
    for _ in 0..200 {
        let Some(f) = conn.next() else { break };
        marked |= f.kind == PING && f.flags & 1 != 0 && f.payload == MARK;
        let done = f.kind == GOAWAY
            || (marked
                && answer.is_none_or(|id| {
                    seen.iter()
                        .chain([&f])
                        .any(|f: &Frame| f.kind == HEADERS && f.stream == id)
                }));
        seen.push(f);
        if done {
            break;
        }
    }
    let goaway = seen.iter().find(|f| f.kind == GOAWAY);
    let resets: Vec<&Frame> = seen.iter().filter(|f| f.kind == RST_STREAM).collect();
    if seen
        .iter()
        .any(|f| f.kind == PING && f.payload == b"ackackak")
    {
        return Err("a PING ACK was answered".into());
    }
    let got = || seen.iter().map(describe).collect::<Vec<_>>().join(", ");
    match &c.want {
        Want::GoAway(codes) => {
            let g = goaway.ok_or_else(|| format!("no GOAWAY; got [{}]", got()))?;
            if !codes.contains(&g.code()) {
                return Err(format!("GOAWAY {:#x}, wanted {codes:x?}", g.code()));
            }
            if !closed(&mut conn.s) {
                return Err("the connection stayed open after its GOAWAY".into());
            }
        }
        Want::Closed => {
            if goaway.is_some_and(|g| g.code() != 0x1) {
                return Err(format!("wanted a close; got [{}]", got()));
            }
            if goaway.is_none() && !seen.is_empty() {
                return Err(format!("wanted a close; got [{}]", got()));
            }
            if !closed(&mut conn.s) {
                return Err("the connection stayed open".into());
            }
        }
        Want::Reset(id, codes) => {
            let ok = resets
                .iter()
                .any(|f| f.stream == *id && codes.contains(&f.code()))
                || goaway.is_some_and(|g| codes.contains(&g.code()));
            if !ok {
                return Err(format!(
                    "wanted a reset of stream {id} ({codes:x?}); got [{}]",
                    got()
                ));
            }
        }
        Want::Status(id, status) => {
            let head = seen.iter().find(|f| f.kind == HEADERS && f.stream == *id);
            let head = head.ok_or_else(|| format!("no answer on stream {id}; got [{}]", got()))?;
            let fields = conn.fields(&head.payload);
            if !fields.iter().any(|(n, v)| n == ":status" && v == status) {
                return Err(format!("wanted {status}; got {fields:?}"));
            }
        }
        Want::Fine | Want::Answer(_) | Want::Acks(..) => {
            if goaway.is_some() || resets.iter().any(|f| f.code() != 0) || !marked {
                return Err(format!("wanted no error; got [{}]", got()));
            }
            if let Want::Answer(id) = c.want {
                if !seen.iter().any(|f| f.kind == HEADERS && f.stream == id) {
                    return Err(format!("no answer on stream {id}; got [{}]", got()));
                }
            }
            if let Want::Acks(kind, n) = c.want {
                let acks = seen
                    .iter()
                    .filter(|f| f.kind == kind && f.flags & 1 != 0)
                    .count();
                // The PING marking the end is an ACK too.
                let acks = acks - usize::from(kind == PING);
                if acks < n {
                    return Err(format!("{acks} acknowledgements, wanted {n}"));
                }
            }
        }
    }
    Ok(())
}

fn describe(f: &Frame) -> String {
    match f.kind {
        GOAWAY => format!("GOAWAY {:#x}", f.code()),
        RST_STREAM => format!("RST_STREAM {} {:#x}", f.stream, f.code()),
        k => format!("type {k} on {} flags {:#x}", f.stream, f.flags),
    }
}

/// The server closes the connection within the read timeout.
fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
    false
}

#[test]
fn http2_conformance() {
    // `/hang` keeps its stream open.
    let hang_at = silent::hanging_upstream();
    let app = format!(
        r#"pipeline:
  internal.common.match:
    input: {{ left: "{{{{req.path}}}}", operator: "==", right: "/hang" }}
    output:
      "true":
        internal.driver.upstream:
          input: {{ url_prefix: "http://{hang_at}" }}
          output:
            success: {{ internal.terminator.response: {{}} }}
            failure: {{ internal.terminator.response: {{ input: {{ status: 502 }} }} }}
      "false":
        internal.terminator.response:
          input: {{ status: 200, body: "ok" }}
"#
    );
    let (_cfg, port, _v) = gateway(&app);
    let cases: Vec<Case> = [
        framing_cases(),
        stream_cases(),
        field_cases(),
        hpack_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|c| run(port, c).err().map(|why| format!("{}: {why}", c.rule)))
        .collect();
    all_cases_pass(&failed, cases.len());
}
