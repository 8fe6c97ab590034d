use super::inspect::{Inspector, Limits};
use super::keys::InitialKeys;
use super::packet::{self, put_varint, V1, V2};

fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x06];
    put_varint(&mut f, offset);
    put_varint(&mut f, data.len() as u64);
    f.extend_from_slice(data);
    f
}

#[test]
fn rfc9001_initial_key_vectors() {
    let dcid = hex::decode("8394c8f03e515708").expect("hex");
    let k = InitialKeys::client(V1, &dcid).expect("keys");
    assert_eq!(hex::encode(&k.key), "1f369613dd76d5467730efcbe3b1a22d");
    assert_eq!(hex::encode(&k.iv), "fa044b2f42a3fd3b46fb255c");
    assert_eq!(hex::encode(&k.hp), "9f50449e04a0e810283a1e9933adedd2");
}

#[test]
fn rfc9369_initial_key_vectors() {
    let dcid = hex::decode("8394c8f03e515708").expect("hex");
    let k = InitialKeys::client(V2, &dcid).expect("keys");
    assert_eq!(hex::encode(&k.key), "8b1a0bc121284290a29e0971b5cd045d");
    assert_eq!(hex::encode(&k.iv), "91f73e2351d8fa91660e909f");
    assert_eq!(hex::encode(&k.hp), "45b95e15235d6f45a6b19cbcb0294ba9");
}

/// Client datagrams carrying `hello` in CRYPTO frames of `chunk` bytes, one packet each,
/// padded to 1200 bytes as clients do.
pub(crate) fn client_datagrams(
    version: u32,
    dcid: &[u8],
    hello: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    let keys = InitialKeys::client(version, dcid).expect("keys");
    hello
        .chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut frames = crypto_frame((i * chunk) as u64, part);
            frames.resize(frames.len().max(1100), 0);
            keys.seal(version, dcid, b"clientcid", i as u32, &frames)
        })
        .collect()
}

#[test]
fn a_client_hello_over_two_initial_packets_is_reassembled_v1_and_v2() {
    let hello = crate::l4p::clienthello::tests::hello("quic.example", &["h3"], 1400);
    assert!(hello.len() > 1500);
    for version in [V1, V2] {
        let dcid = b"\x01\x02\x03\x04\x05\x06\x07\x08";
        let dgrams = client_datagrams(version, dcid, &hello, 900);
        assert_eq!(dgrams.len(), 2);
        let mut insp = Inspector::new(&dgrams[0], Limits::default()).expect("initial");
        assert_eq!(
            insp.push(&dgrams[0]).expect("first"),
            None,
            "needs the second packet"
        );
        let done = insp.push(&dgrams[1]).expect("second").expect("complete");
        assert_eq!(done.hello.sni.as_deref(), Some("quic.example"));
        assert_eq!(done.version, version);
        assert_eq!(done.dcid, dcid.to_vec());
        assert_eq!(done.scid, b"clientcid".to_vec());
    }
}

#[test]
fn out_of_order_and_coalesced_packets() {
    let hello = crate::l4p::clienthello::tests::hello("order.example", &["h3"], 600);
    let dcid = b"abcdefgh";
    let d = client_datagrams(V1, dcid, &hello, 300);
    assert_eq!(d.len(), 3);
    let mut insp = Inspector::new(&d[0], Limits::default()).expect("initial");
    assert_eq!(insp.push(&d[2]).expect("third first"), None);
    let both: Vec<u8> = d[1].iter().chain(d[0].iter()).copied().collect();
    let done = insp.push(&both).expect("coalesced").expect("complete");
    assert_eq!(done.hello.sni.as_deref(), Some("order.example"));
}

#[test]
fn limits_and_garbage() {
    let hello = crate::l4p::clienthello::tests::hello("x.example", &[], 3000);
    let d = client_datagrams(V1, b"12345678", &hello, 300);
    let mut insp = Inspector::new(
        &d[0],
        Limits {
            max_datagrams: 3,
            max_bytes: 1 << 20,
        },
    )
    .expect("initial");
    assert!(insp.push(&d[0]).expect("1").is_none());
    assert!(insp.push(&d[1]).expect("2").is_none());
    assert!(
        insp.push(&d[2]).is_err(),
        "third datagram without a ClientHello hits the limit"
    );
    assert!(Inspector::new(b"\x40garbage-short-header", Limits::default()).is_err());
    let mut tampered = d[0].clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut insp = Inspector::new(&tampered, Limits::default()).expect("header parses");
    assert!(insp.push(&tampered).is_err(), "authentication fails");
    for i in 0..d[0].len() {
        let _ = packet::parse_long(&d[0][..i]);
        if let Ok(mut x) = Inspector::new(&d[0][..i], Limits::default()) {
            let _ = x.push(&d[0][..i]);
        }
    }
}

#[test]
fn greased_fixed_bit_is_accepted_after_the_first_initial() {
    // RFC 9287: a server's reply may clear the fixed bit; its SCID must still be read.
    let hello = crate::l4p::clienthello::tests::hello("g.example", &[], 0);
    let mut reply = client_datagrams(V1, b"abcdefgh", &hello, 4000).remove(0);
    reply[0] &= !0x40;
    let h = packet::parse_long(&reply).expect("greased long header parses");
    assert_eq!(h.scid, b"clientcid".to_vec());
    assert_eq!(
        packet::short_dcid(&[0x12, 1, 2, 3, 4], 4),
        Some(&[1u8, 2, 3, 4][..]),
        "greased short header"
    );
    assert_eq!(
        packet::short_dcid(&[0x92, 1, 2, 3, 4], 4),
        None,
        "long header is not short"
    );
    assert!(
        Inspector::new(&reply, Limits::default()).is_err(),
        "a client's first Initial has the fixed bit"
    );
}

#[test]
fn initial_dcid_is_read_for_v1_and_v2_initials_only() {
    let dcid = b"\x01\x02\x03\x04\x05\x06\x07\x08";
    for v in [V1, V2] {
        let d = &client_datagrams(v, dcid, b"hello", 64)[0];
        assert_eq!(packet::initial_dcid(d), Some(&dcid[..]), "version {v:#x}");
    }
    // A v1 Handshake packet (type bits 2) and a v2 one (3) are not Initials.
    let mut hs = client_datagrams(V1, dcid, b"hello", 64)[0].clone();
    hs[0] = (hs[0] & 0xcf) | (packet::type_bits(V1, packet::LongType::Handshake) << 4);
    assert_eq!(packet::initial_dcid(&hs), None);
    let mut hs2 = client_datagrams(V2, dcid, b"hello", 64)[0].clone();
    hs2[0] = (hs2[0] & 0xcf) | (packet::type_bits(V2, packet::LongType::Handshake) << 4);
    assert_eq!(packet::initial_dcid(&hs2), None);
    // Short headers, unknown versions and oversized IDs are not either.
    assert_eq!(packet::initial_dcid(&[0x40, 1, 2, 3]), None);
    let mut other = client_datagrams(V1, dcid, b"hello", 64)[0].clone();
    other[1..5].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(packet::initial_dcid(&other), None);
    let mut big = client_datagrams(V1, dcid, b"hello", 64)[0].clone();
    big[5] = 21;
    assert_eq!(packet::initial_dcid(&big), None);
}
