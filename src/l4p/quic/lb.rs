//! QUIC-LB connection IDs (draft-ietf-quic-load-balancers, plaintext algorithm), sans-IO.
//!
//! A server that terminates QUIC issues connection IDs whose first octet carries the config
//! rotation bits (3) and the ID's length minus one (5), followed by its server ID, then bytes
//! it chooses. A load balancer that knows the server ID length reads the server ID of any
//! packet, including a short-header packet of a connection it never saw (a client that moved,
//! a balancer that restarted, another balancer of the same group), and routes by it.
//!
//! The plaintext algorithm lets an on-path observer read the server ID (not the connection):
//! the draft's encrypted variants hide it; this build offers the plaintext one.

/// Config rotation codepoint `0b111` means "not a QUIC-LB connection ID".
pub const UNROUTABLE: u8 = 0b111;

/// The first octet of an ID of `len` bytes under `config_id` (0..=6).
pub fn first_octet(config_id: u8, len: usize) -> u8 {
    ((config_id & 0b111) << 5) | ((len.saturating_sub(1) as u8) & 0x1f)
}

/// The server ID (`sid_len` bytes) a connection ID carries under `config_id`, read from the
/// ID itself; `None` when the ID is of another config, too short, or not QUIC-LB.
pub fn server_id(cid: &[u8], config_id: u8, sid_len: usize) -> Option<&[u8]> {
    let first = *cid.first()?;
    if first >> 5 != config_id || config_id == UNROUTABLE || sid_len == 0 {
        return None;
    }
    cid.get(1..1 + sid_len)
}

/// The destination connection ID of a short-header packet whose ID describes its own length
/// (the first octet's low 5 bits), as QUIC-LB IDs do.
pub fn short_header_dcid(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    if first & 0x80 != 0 {
        return None;
    }
    let len = (*datagram.get(1)? & 0x1f) as usize + 1;
    datagram.get(1..1 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_describe_their_length_and_carry_the_server_id() {
        let mut cid = vec![first_octet(2, 12)];
        cid.extend_from_slice(&[0xab, 0xcd]);
        cid.extend_from_slice(&[9; 9]);
        assert_eq!(cid.len(), 12);
        assert_eq!(server_id(&cid, 2, 2), Some(&[0xab, 0xcd][..]));
        assert_eq!(server_id(&cid, 1, 2), None, "another config");
        assert_eq!(server_id(&cid[..2], 2, 2), None, "too short");
        let mut packet = vec![0x41];
        packet.extend_from_slice(&cid);
        packet.extend_from_slice(b"protected payload");
        assert_eq!(short_header_dcid(&packet), Some(&cid[..]));
        assert_eq!(short_header_dcid(&[0xc3, 1, 2]), None, "long header");
        for cut in 0..packet.len() {
            let _ = short_header_dcid(&packet[..cut]);
        }
        let unroutable = [first_octet(UNROUTABLE, 8), 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(server_id(&unroutable, UNROUTABLE, 2), None);
    }
}
