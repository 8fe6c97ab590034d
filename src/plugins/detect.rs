//! `internal.protocol.detect`: recognise a protocol from the first bytes.

use crate::l4p::quic::packet::{V1 as QUIC_V1, V2 as QUIC_V2};

/// True when `payload` looks like the start of `method` (`http`, `tls`, `dns`, `quic`).
pub fn matches(method: &str, payload: &[u8]) -> bool {
    if payload.is_empty() {
        return false;
    }
    match method {
        "http" => [
            &b"GET "[..],
            b"POST ",
            b"PUT ",
            b"DELETE ",
            b"HEAD ",
            b"OPTIONS ",
            b"PATCH ",
        ]
        .iter()
        .any(|m| payload.starts_with(m)),
        "tls" => payload.len() > 3 && payload[0] == 0x16 && payload[1] == 0x03,
        "dns" => {
            payload.len() >= 12
                && payload[2] & 0xF8 == 0
                && u16::from_be_bytes([payload[4], payload[5]]) > 0
        }
        "quic" => {
            payload.len() >= 20
                && payload[0] & 0xC0 == 0xC0
                && matches!(
                    u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]),
                    QUIC_V1 | QUIC_V2
                )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method() {
        assert!(matches("http", b"GET / HTTP/1.1\r\n"));
        assert!(!matches("http", b"CONNECT x:443 HTTP/1.1"));
        assert!(matches("tls", &[0x16, 0x03, 0x01, 0x00, 0x10]));
        assert!(!matches("tls", &[0x16, 0x03, 0x01]));
        let dns = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        assert!(matches("dns", &dns));
        let mut resp = dns;
        resp[2] = 0x81;
        assert!(!matches("dns", &resp), "QR=1 is a response");
        let mut quic = vec![0xC3, 0, 0, 0, 1];
        quic.resize(24, 0);
        assert!(matches("quic", &quic));
        quic[4] = 3;
        assert!(!matches("quic", &quic));
        quic[4] = 2;
        assert!(!matches("quic", &quic), "version 2 is 0x6b3343cf, not 2");
        quic[1..5].copy_from_slice(&0x6b33_43cfu32.to_be_bytes());
        assert!(matches("quic", &quic), "QUIC v2 (RFC 9369)");
        assert!(!matches("ssh", b"SSH-2.0"));
        assert!(!matches("http", b""));
    }
}
