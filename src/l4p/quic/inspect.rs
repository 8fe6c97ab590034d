//! Per-connection Initial inspection: feed it the client's datagrams until the ClientHello
//! (possibly spread over several packets and datagrams) is complete.

use std::collections::BTreeMap;

use super::keys::InitialKeys;
use super::packet::{self, LongType, PacketError};
use crate::l4p::clienthello::{self, ClientHello};

/// Bounds of one pending inspection (`QUIC_MAX_PENDING_PACKETS`, `QUIC_SESSION_BUFFER_LIMIT`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_datagrams: usize,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_datagrams: 5,
            max_bytes: 65_536,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("not a QUIC Initial: {0}")]
    Packet(#[from] PacketError),
    #[error("no ClientHello within {0} datagrams")]
    TooManyDatagrams(usize),
    #[error("more than {0} bytes pending")]
    TooLarge(usize),
    #[error("ClientHello: {0}")]
    Hello(#[from] clienthello::ParseError),
}

/// What the client said, once its ClientHello is complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub version: u32,
    pub dcid: Vec<u8>,
    pub scid: Vec<u8>,
    pub token: Vec<u8>,
    pub hello: ClientHello,
}

/// CRYPTO stream data by offset.
#[derive(Default)]
struct Fragments {
    parts: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl Fragments {
    fn insert(&mut self, offset: u64, data: &[u8]) {
        self.bytes += data.len();
        self.parts.entry(offset).or_insert_with(|| data.to_vec());
    }

    /// The bytes contiguous from offset 0.
    fn contiguous(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        for (off, data) in &self.parts {
            let off = *off as usize;
            if off > out.len() {
                break;
            }
            let skip = out.len() - off;
            if skip < data.len() {
                out.extend_from_slice(&data[skip..]);
            }
        }
        out
    }
}

/// Walks the frames of a decrypted Initial and keeps CRYPTO data.
fn frames(mut b: &[u8], crypto: &mut Fragments) -> Result<(), PacketError> {
    while let Some(&ty) = b.first() {
        let mut pos = 0;
        let ty_v = packet::varint(b, &mut pos)?;
        match ty_v {
            0x00 => {
                // PADDING: skip the whole run.
                let n = b.iter().take_while(|x| **x == 0).count().max(1);
                pos = n;
            }
            0x01 => {}
            0x02 | 0x03 => {
                packet::varint(b, &mut pos)?;
                packet::varint(b, &mut pos)?;
                let ranges = packet::varint(b, &mut pos)?;
                packet::varint(b, &mut pos)?;
                for _ in 0..ranges.min(1024) {
                    packet::varint(b, &mut pos)?;
                    packet::varint(b, &mut pos)?;
                }
                if ty_v == 0x03 {
                    for _ in 0..3 {
                        packet::varint(b, &mut pos)?;
                    }
                }
            }
            0x06 => {
                let off = packet::varint(b, &mut pos)?;
                let len = packet::varint(b, &mut pos)? as usize;
                let data = b.get(pos..pos + len).ok_or(PacketError::Truncated)?;
                crypto.insert(off, data);
                pos += len;
            }
            _ => {
                let _ = ty;
                return Ok(());
            }
        }
        b = &b[pos..];
    }
    Ok(())
}

/// The inspection of one client connection (keyed by its original DCID).
pub struct Inspector {
    version: u32,
    dcid: Vec<u8>,
    scid: Vec<u8>,
    token: Vec<u8>,
    keys: InitialKeys,
    crypto: Fragments,
    datagrams: usize,
    bytes: usize,
    limits: Limits,
}

impl Inspector {
    /// Starts from the first datagram (which must begin with an Initial packet).
    pub fn new(first: &[u8], limits: Limits) -> Result<Inspector, InspectError> {
        let h = packet::parse_long(first)?;
        // A client's first Initial precedes any transport parameters, so its fixed bit is set.
        if first[0] & 0x40 == 0 || h.ty != LongType::Initial || h.dcid.len() < 8 {
            return Err(PacketError::Malformed.into());
        }
        let keys = InitialKeys::client(h.version, &h.dcid).ok_or(PacketError::Malformed)?;
        Ok(Inspector {
            version: h.version,
            dcid: h.dcid,
            scid: h.scid,
            token: h.token,
            keys,
            crypto: Fragments::default(),
            datagrams: 0,
            bytes: 0,
            limits,
        })
    }

    pub fn dcid(&self) -> &[u8] {
        &self.dcid
    }

    /// Adds a datagram; `Ok(Some(..))` once the ClientHello is complete.
    pub fn push(&mut self, datagram: &[u8]) -> Result<Option<Inspected>, InspectError> {
        self.datagrams += 1;
        self.bytes += datagram.len();
        if self.bytes > self.limits.max_bytes {
            return Err(InspectError::TooLarge(self.limits.max_bytes));
        }
        let mut rest = datagram;
        while !rest.is_empty() {
            let h = match packet::parse_long(rest) {
                Ok(h) => h,
                // Padding or a short-header packet after the coalesced ones.
                Err(_) => break,
            };
            if h.ty == LongType::Initial && h.dcid == self.dcid {
                let plain = self.keys.open(&rest[..h.end], &h)?;
                frames(&plain, &mut self.crypto)?;
            }
            rest = &rest[h.end..];
        }
        let data = self.crypto.contiguous();
        if data.len() >= 4 {
            let need = 4 + (u32::from_be_bytes([0, data[1], data[2], data[3]]) as usize);
            if data.len() >= need {
                let hello = clienthello::parse(&data[..need])?;
                return Ok(Some(Inspected {
                    version: self.version,
                    dcid: self.dcid.clone(),
                    scid: self.scid.clone(),
                    token: self.token.clone(),
                    hello,
                }));
            }
        }
        if self.datagrams >= self.limits.max_datagrams {
            return Err(InspectError::TooManyDatagrams(self.limits.max_datagrams));
        }
        if self.crypto.bytes > self.limits.max_bytes {
            return Err(InspectError::TooLarge(self.limits.max_bytes));
        }
        Ok(None)
    }
}
