//! Initial packet protection: keys from the client's DCID, header protection, AEAD.

use aws_lc_rs::aead::{self, quic, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;

use super::packet::{self, LongHeader, PacketError, V2};

const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand_label(prk: &hkdf::Prk, label: &str, len: usize) -> Vec<u8> {
    let full = format!("tls13 {label}");
    let out_len = (len as u16).to_be_bytes();
    let label_len = [full.len() as u8];
    let ctx_len = [0u8];
    let info: [&[u8]; 4] = [&out_len, &label_len, full.as_bytes(), &ctx_len];
    let mut out = vec![0u8; len];
    // The lengths are fixed and small, so expansion cannot fail.
    if let Ok(okm) = prk.expand(&info, Len(len)) {
        let _ = okm.fill(&mut out);
    }
    out
}

/// The client's Initial keys for one connection.
pub struct InitialKeys {
    pub key: Vec<u8>,
    pub iv: Vec<u8>,
    pub hp: Vec<u8>,
    aead: LessSafeKey,
    hpk: quic::HeaderProtectionKey,
}

impl InitialKeys {
    /// Derives the client Initial keys of `version` from the client's original DCID.
    pub fn client(version: u32, dcid: &[u8]) -> Option<InitialKeys> {
        let (salt, prefix) = if version == V2 {
            (&SALT_V2, "quicv2 ")
        } else {
            (&SALT_V1, "quic ")
        };
        let initial = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(dcid);
        let client_secret = expand_label(&initial, "client in", 32);
        let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &client_secret);
        let key = expand_label(&prk, &format!("{prefix}key"), 16);
        let iv = expand_label(&prk, &format!("{prefix}iv"), 12);
        let hp = expand_label(&prk, &format!("{prefix}hp"), 16);
        let aead = LessSafeKey::new(UnboundKey::new(&aead::AES_128_GCM, &key).ok()?);
        let hpk = quic::HeaderProtectionKey::new(&quic::AES_128, &hp).ok()?;
        Some(InitialKeys {
            key,
            iv,
            hp,
            aead,
            hpk,
        })
    }

    fn nonce(&self, pn: u64) -> Option<Nonce> {
        let mut n = [0u8; 12];
        n.copy_from_slice(&self.iv);
        for (i, b) in pn.to_be_bytes().iter().enumerate() {
            n[4 + i] ^= b;
        }
        Some(Nonce::assume_unique_for_key(n))
    }

    /// Removes header protection and decrypts one Initial packet; returns the plaintext frames.
    pub fn open(&self, packet: &[u8], h: &LongHeader) -> Result<Vec<u8>, PacketError> {
        let sample = packet
            .get(h.pn_offset + 4..h.pn_offset + 20)
            .ok_or(PacketError::Truncated)?;
        let mask = self
            .hpk
            .new_mask(sample)
            .map_err(|_| PacketError::Malformed)?;
        let mut header = packet[..h.pn_offset + 4].to_vec();
        header[0] ^= mask[0] & 0x0f;
        let pn_len = usize::from(header[0] & 0x03) + 1;
        let mut pn = 0u64;
        for i in 0..pn_len {
            header[h.pn_offset + i] ^= mask[1 + i];
            pn = (pn << 8) | u64::from(header[h.pn_offset + i]);
        }
        header.truncate(h.pn_offset + pn_len);
        let mut payload = packet
            .get(h.pn_offset + pn_len..h.end)
            .ok_or(PacketError::Truncated)?
            .to_vec();
        let nonce = self.nonce(pn).ok_or(PacketError::Malformed)?;
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(&header[..]), &mut payload)
            .map_err(|_| PacketError::Malformed)?;
        Ok(plain.to_vec())
    }

    /// Encrypts and protects an Initial packet (used by tests to build client packets).
    pub fn seal(&self, version: u32, dcid: &[u8], scid: &[u8], pn: u32, frames: &[u8]) -> Vec<u8> {
        let mut out =
            vec![0xc0 | (packet::type_bits(version, packet::LongType::Initial) << 4) | 0x03];
        out.extend_from_slice(&version.to_be_bytes());
        out.push(dcid.len() as u8);
        out.extend_from_slice(dcid);
        out.push(scid.len() as u8);
        out.extend_from_slice(scid);
        out.push(0);
        let len = 4 + frames.len() + 16;
        packet::put_varint(&mut out, len as u64);
        let pn_offset = out.len();
        out.extend_from_slice(&pn.to_be_bytes());
        let mut payload = frames.to_vec();
        if let Some(nonce) = self.nonce(u64::from(pn)) {
            let _ = self
                .aead
                .seal_in_place_append_tag(nonce, Aad::from(&out[..]), &mut payload);
        }
        out.extend_from_slice(&payload);
        if let Ok(mask) = self.hpk.new_mask(&out[pn_offset + 4..pn_offset + 20]) {
            out[0] ^= mask[0] & 0x0f;
            for i in 0..4 {
                out[pn_offset + i] ^= mask[1 + i];
            }
        }
        out
    }
}
