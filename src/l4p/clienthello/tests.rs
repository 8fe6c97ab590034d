use super::*;

/// Builds a ClientHello handshake message with the given SNI and ALPN.
pub(crate) fn hello(sni: &str, alpn: &[&str], pad: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    let mut push = |ty: u16, body: &[u8]| {
        ext.extend_from_slice(&ty.to_be_bytes());
        ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
        ext.extend_from_slice(body);
    };
    push(0x0a0a, &[]);
    let mut sn = vec![0u8];
    sn.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    sn.extend_from_slice(sni.as_bytes());
    let mut list = (sn.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&sn);
    push(0, &list);
    let mut protos = Vec::new();
    for a in alpn {
        protos.push(a.len() as u8);
        protos.extend_from_slice(a.as_bytes());
    }
    let mut al = (protos.len() as u16).to_be_bytes().to_vec();
    al.extend_from_slice(&protos);
    push(16, &al);
    push(43, &[4, 0x3a, 0x3a, 0x03, 0x04]);
    push(10, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
    push(13, &[0, 4, 0x04, 0x03, 0x08, 0x04]);
    let mut ks = vec![0x00, 0x1d, 0x00, 0x20];
    ks.extend_from_slice(&[7u8; 32]);
    let mut ksl = (ks.len() as u16).to_be_bytes().to_vec();
    ksl.extend_from_slice(&ks);
    push(51, &ksl);
    push(45, &[1, 1]);
    push(0xff01, &[0]);
    push(21, &vec![0u8; pad]);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[1u8; 32]);
    body.push(4);
    body.extend_from_slice(&[9, 9, 9, 9]);
    body.extend_from_slice(&[0, 6, 0x1a, 0x1a, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

/// Wraps a handshake message in TLS records of at most `max` bytes each.
pub(crate) fn records(msg: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in msg.chunks(max) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn parses_every_field_and_filters_grease() {
    let ch = parse(&hello("Api.Example.COM", &["h2", "http/1.1"], 0)).expect("parses");
    let kv: std::collections::HashMap<_, _> = ch.kv().into_iter().collect();
    assert_eq!(kv["tls.sni"], "api.example.com");
    assert_eq!(kv["tls.alpn"], "h2,http/1.1");
    assert_eq!(kv["tls.version.legacy"], "0303");
    assert_eq!(kv["tls.session_id"], "09090909");
    assert_eq!(kv["tls.cipher_suites"], "1301,1302");
    assert_eq!(kv["tls.compression"], "00");
    assert_eq!(kv["tls.supported_versions"], "0304");
    assert_eq!(kv["tls.supported_groups"], "001d,0017");
    assert_eq!(kv["tls.signature_algorithms"], "0403,0804");
    assert_eq!(kv["tls.key_share_groups"], "001d");
    assert_eq!(kv["tls.psk_modes"], "01");
    assert_eq!(kv["tls.has_renegotiation_info"], "true");
    assert_eq!(kv["tls.has_grease"], "true");
}

#[test]
fn assembles_across_records_and_partial_reads() {
    let msg = hello("split.example", &["h2"], 3000);
    let wire = records(&msg, 700);
    assert!(wire.len() > 3000);
    for cut in [0, 3, 5, 100, 705, 2000, wire.len() - 1] {
        match assemble(&wire[..cut]) {
            Assembled::NeedMore(n) => assert!(n > cut, "cut {cut} needs {n}"),
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    match assemble(&wire) {
        Assembled::Complete {
            message,
            records_len,
        } => {
            assert_eq!(message, msg);
            assert_eq!(records_len, wire.len());
            assert_eq!(
                parse(&message).expect("parses").sni.as_deref(),
                Some("split.example")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rejects_non_tls_and_survives_every_truncation() {
    assert_eq!(assemble(b"GET / HTTP/1.1\r\n"), Assembled::NotTls);
    assert_eq!(assemble(&[0x16, 0x03, 0x01, 0, 0]), Assembled::NotTls);
    let msg = hello("t.example", &["h2"], 10);
    for i in 0..msg.len() {
        assert!(parse(&msg[..i]).is_err(), "prefix {i} must not parse");
    }
    let mut bad = msg.clone();
    bad[0] = 2;
    assert_eq!(parse(&bad), Err(ParseError::NotClientHello));
}

#[test]
fn sni_normalisation() {
    assert_eq!(
        normalize_sni("WWW.Exa mple.com\u{0}<x>"),
        "www.example.comx"
    );
}
