//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus regression test: each
//! drives a parser the way the data plane does and checks the invariants it relies on.

use super::clienthello::{self, Assembled};
use super::proxy_protocol::{self, Parsed};
use super::quic::inspect::{Inspector, Limits};

/// Record assembly and ClientHello parsing, on every prefix boundary the peek loop can see.
pub fn client_hello(data: &[u8]) {
    match clienthello::assemble(data) {
        Assembled::Complete {
            message,
            records_len,
        } => {
            assert!(records_len <= data.len());
            if let Ok(ch) = clienthello::parse(&message) {
                for (_, v) in ch.kv() {
                    assert!(
                        v.len() <= 4 * data.len() + 16,
                        "KV values stay proportional to the input"
                    );
                }
            }
        }
        Assembled::NeedMore(n) => assert!(n > data.len()),
        Assembled::NotTls => {}
    }
    let _ = clienthello::parse(data);
}

/// QUIC inspection: the first datagram opens an inspection; the input split in two halves is
/// also fed as two datagrams; and the input is sealed as the plaintext of a valid Initial, so
/// the frame walker, CRYPTO reassembly and ClientHello parser behind decryption get fuzzed too.
pub fn quic_initial(data: &[u8]) {
    let dcid = b"fuzzdcid";
    if let Some(keys) = super::quic::keys::InitialKeys::client(super::quic::packet::V1, dcid) {
        let mut plain = data.to_vec();
        plain.resize(plain.len().max(32), 0);
        let sealed = keys.seal(super::quic::packet::V1, dcid, b"s", 0, &plain);
        if let Ok(mut i) = Inspector::new(
            &sealed,
            Limits {
                max_datagrams: 5,
                max_bytes: 65_536,
            },
        ) {
            let _ = i.push(&sealed);
        }
    }
    let limits = Limits {
        max_datagrams: 5,
        max_bytes: 65_536,
    };
    if let Ok(mut i) = Inspector::new(data, limits) {
        let _ = i.push(data);
    }
    let (a, b) = data.split_at(data.len() / 2);
    if let Ok(mut i) = Inspector::new(a, limits) {
        let _ = i.push(a);
        let _ = i.push(b);
    }
}

/// PROXY header parsing; a header never claims more bytes than it was given.
pub fn proxy_header(data: &[u8]) {
    if let Parsed::Header { len, .. } = proxy_protocol::parse(data) {
        assert!(len <= data.len());
    }
}
