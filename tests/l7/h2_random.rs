//! Random frame sequences against vane's HTTP/2 server, on the real binary: the fuzz target
//! (`fuzz/fuzz_targets/h2_frames.rs`) covers frames and HPACK, this covers the connection's
//! state machine around them (streams, windows, resets, closed streams, header blocks). Each
//! connection gets frames of every type with the flags, stream ids, lengths and values where
//! the edge cases are; the server must end it cleanly or carry on, never panic, and serve the
//! next client. The seed is fixed (`H2_RANDOM_SEED` picks another) so a failure replays.

use std::io::{Read, Write};

use super::h2_raw::*;
use super::*;

/// xorshift64*: enough randomness for a test, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One frame: mostly well-formed, with the values the rules turn on.
fn random_frame(r: &mut Rng, last: &mut u32) -> Vec<u8> {
    let next_id = *last + 2;
    let stream = r.pick(&[0, 1, *last, *last, next_id, next_id, 2, 0x7fff_ffff]);
    let flags = match r.below(4) {
        0 => r.next() as u8,
        _ => r.pick(&[
            0,
            END_STREAM,
            END_HEADERS,
            END_STREAM | END_HEADERS,
            PADDED | 1,
            0x20,
        ]),
    };
    let kind = r.pick(&[
        DATA,
        DATA,
        HEADERS,
        HEADERS,
        HEADERS,
        PRIORITY,
        RST_STREAM,
        SETTINGS,
        PUSH_PROMISE,
        PING,
        GOAWAY,
        WINDOW_UPDATE,
        WINDOW_UPDATE,
        CONTINUATION,
        CONTINUATION,
        0x16,
    ]);
    let u32_edge = |r: &mut Rng| {
        let any = r.next() as u32;
        r.pick(&[0u32, 1, 16_383, 16_384, 65_535, 0x7fff_ffff, 1 << 31, any])
    };
    let payload = match kind {
        HEADERS | CONTINUATION | PUSH_PROMISE => {
            let path = format!("/{}", r.below(1000));
            let mut p = match r.below(6) {
                0 => {
                    let n = r.below(40) as usize;
                    r.bytes(n)
                }
                1 => block(0x83, &path, &[("content-length", "3")]),
                2 => get(&path, &[("te", "trailers"), ("cookie", "a=1")]),
                3 => vec![0x20, 0x82, 0x86, 0x84],
                _ => get(&path, &[]),
            };
            if r.below(4) == 0 {
                let cut = r.below(p.len() as u64 + 1) as usize;
                p.truncate(cut);
            }
            if flags & 0x20 != 0 && r.below(2) == 0 {
                let mut prio = u32_edge(r).to_be_bytes().to_vec();
                prio.push(16);
                p.splice(0..0, prio);
            }
            p
        }
        DATA => {
            let n = r.pick(&[0, 1, 3, 100, 4096]);
            r.bytes(n)
        }
        SETTINGS => (0..r.below(4))
            .flat_map(|_| {
                let id = r.pick(&[1u16, 2, 3, 4, 5, 6, 8, 0xff]);
                [&id.to_be_bytes()[..], &u32_edge(r).to_be_bytes()[..]].concat()
            })
            .collect(),
        WINDOW_UPDATE | RST_STREAM => u32_edge(r).to_be_bytes().to_vec(),
        PRIORITY => [&u32_edge(r).to_be_bytes()[..], &[16]].concat(),
        PING => {
            let n = r.pick(&[8, 8, 8, 0, 7]);
            r.bytes(n)
        }
        GOAWAY => [
            &u32_edge(r).to_be_bytes()[..],
            &u32_edge(r).to_be_bytes()[..],
        ]
        .concat(),
        _ => {
            let n = r.below(20) as usize;
            r.bytes(n)
        }
    };
    if kind == HEADERS && stream > *last && stream % 2 == 1 && stream < 0x7fff_ffff {
        *last = stream;
    }
    frame(kind, flags, stream, &payload)
}

#[test]
fn random_frames_end_connections_cleanly_and_never_panic_the_server() {
    let (_cfg, port, v) = gateway(ECHO_APP);
    let seed = std::env::var("H2_RANDOM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_u64);
    let mut r = Rng(seed | 1);
    let mut answered = 0;
    for _ in 0..300 {
        let mut c = H2::connect(port, &[]);
        let mut last = 0;
        let bytes: Vec<u8> = (0..1 + r.below(30))
            .flat_map(|_| random_frame(&mut r, &mut last))
            .collect();
        let _ = c.s.write_all(&bytes);
        c.s.set_read_timeout(Some(Duration::from_millis(40)))
            .expect("timeout");
        // Read until the server closes or falls silent (bounded).
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..256 {
            match c.s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => answered += 1,
            }
        }
    }
    assert!(
        answered > 300,
        "the server answered almost nothing ({answered} reads)"
    );
    let panics = format!("vane_session_panics_total{{listener=\"tcp:{port}\"}}");
    assert_eq!(v.metric(&panics).unwrap_or(0.0), 0.0, "seed {seed:#x}");
    let mut c = H2::connect(port, &[]);
    c.send(HEADERS, END_STREAM | END_HEADERS, 1, &get("/after", &[]));
    assert!(String::from_utf8_lossy(&c.body()).starts_with("GET /after?"));
}
