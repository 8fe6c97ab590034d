//! QUIC packet headers and variable-length integers.

/// QUIC version 1 (RFC 9000).
pub const V1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const V2: u32 = 0x6b33_43cf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
}

/// A parsed long header (protected fields untouched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongHeader {
    pub version: u32,
    pub ty: LongType,
    pub dcid: Vec<u8>,
    pub scid: Vec<u8>,
    pub token: Vec<u8>,
    /// Offset of the (protected) packet number within the packet.
    pub pn_offset: usize,
    /// Offset just past this packet (coalesced packets follow).
    pub end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("truncated")]
    Truncated,
    #[error("not a long-header packet")]
    NotLong,
    #[error("unsupported version")]
    Version,
    #[error("malformed")]
    Malformed,
}

/// Reads a variable-length integer at `*pos`, advancing it.
pub fn varint(b: &[u8], pos: &mut usize) -> Result<u64, PacketError> {
    let first = *b.get(*pos).ok_or(PacketError::Truncated)?;
    let len = 1usize << (first >> 6);
    let bytes = b.get(*pos..*pos + len).ok_or(PacketError::Truncated)?;
    let mut v = u64::from(first & 0x3f);
    for x in &bytes[1..] {
        v = (v << 8) | u64::from(*x);
    }
    *pos += len;
    Ok(v)
}

/// Encodes a variable-length integer (for tests and re-encoding).
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=63 => out.push(v as u8),
        64..=16383 => out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        16384..=1_073_741_823 => out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

fn long_type(version: u32, bits: u8) -> LongType {
    // RFC 9369 rotates the type codes.
    let bits = if version == V2 { (bits + 3) % 4 } else { bits };
    match bits {
        0 => LongType::Initial,
        1 => LongType::ZeroRtt,
        2 => LongType::Handshake,
        _ => LongType::Retry,
    }
}

/// The wire bits of a long packet type for `version`.
pub fn type_bits(version: u32, ty: LongType) -> u8 {
    let bits = match ty {
        LongType::Initial => 0,
        LongType::ZeroRtt => 1,
        LongType::Handshake => 2,
        LongType::Retry => 3,
    };
    if version == V2 {
        (bits + 1) % 4
    } else {
        bits
    }
}

fn cid(b: &[u8], pos: &mut usize) -> Result<Vec<u8>, PacketError> {
    let len = *b.get(*pos).ok_or(PacketError::Truncated)? as usize;
    if len > 20 {
        return Err(PacketError::Malformed);
    }
    let v = b
        .get(*pos + 1..*pos + 1 + len)
        .ok_or(PacketError::Truncated)?
        .to_vec();
    *pos += 1 + len;
    Ok(v)
}

/// Parses the long header of the packet starting at `b[0]`. The fixed bit is not required:
/// peers that negotiated `grease_quic_bit` (RFC 9287) randomise it.
pub fn parse_long(b: &[u8]) -> Result<LongHeader, PacketError> {
    let first = *b.first().ok_or(PacketError::Truncated)?;
    if first & 0x80 == 0 {
        return Err(PacketError::NotLong);
    }
    let version = u32::from_be_bytes(
        b.get(1..5)
            .ok_or(PacketError::Truncated)?
            .try_into()
            .map_err(|_| PacketError::Truncated)?,
    );
    if version != V1 && version != V2 {
        return Err(PacketError::Version);
    }
    let ty = long_type(version, (first >> 4) & 0x03);
    let mut pos = 5;
    let dcid = cid(b, &mut pos)?;
    let scid = cid(b, &mut pos)?;
    if ty == LongType::Retry {
        return Ok(LongHeader {
            version,
            ty,
            dcid,
            scid,
            token: Vec::new(),
            pn_offset: b.len(),
            end: b.len(),
        });
    }
    let mut token = Vec::new();
    if ty == LongType::Initial {
        let tl = varint(b, &mut pos)? as usize;
        token = b.get(pos..pos + tl).ok_or(PacketError::Truncated)?.to_vec();
        pos += tl;
    }
    let len = varint(b, &mut pos)? as usize;
    let end = pos.checked_add(len).ok_or(PacketError::Malformed)?;
    if end > b.len() || len < 20 {
        return Err(if end > b.len() {
            PacketError::Truncated
        } else {
            PacketError::Malformed
        });
    }
    Ok(LongHeader {
        version,
        ty,
        dcid,
        scid,
        token,
        pn_offset: pos,
        end,
    })
}

/// The destination connection ID of `b` when it is a v1 or v2 Initial packet (checked without
/// parsing the rest: this runs for every datagram of a forwarded QUIC session).
pub fn initial_dcid(b: &[u8]) -> Option<&[u8]> {
    let first = *b.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    let version = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?);
    if version != V1 && version != V2 {
        return None;
    }
    if long_type(version, (first >> 4) & 0x03) != LongType::Initial {
        return None;
    }
    let len = *b.get(5)? as usize;
    if len > 20 {
        return None;
    }
    b.get(6..6 + len)
}

/// Destination connection ID of a short-header packet, given the CID length in use (the fixed
/// bit may be greased, so only the form bit is checked).
pub fn short_dcid(b: &[u8], len: usize) -> Option<&[u8]> {
    let first = *b.first()?;
    if first & 0x80 != 0 {
        return None;
    }
    b.get(1..1 + len)
}
