//! Sans-IO TLS ClientHello parsing: bytes in, facts out. No sockets, no allocation beyond the
//! result, every length checked, so it can be fuzzed directly.
//!
//! [`assemble`] walks TLS records (a ClientHello may span several) and returns the complete
//! handshake message; [`parse`] reads the message into a [`ClientHello`].

use std::fmt::Write as _;

/// What the record layer holds so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assembled {
    /// Not a TLS handshake record.
    NotTls,
    /// The ClientHello is incomplete: at least this many bytes are needed in total.
    NeedMore(usize),
    /// The handshake message (type, length and body) and the bytes of records it took.
    Complete {
        message: Vec<u8>,
        records_len: usize,
    },
}

/// Why a ClientHello could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("truncated")]
    Truncated,
    #[error("not a ClientHello")]
    NotClientHello,
    #[error("malformed")]
    Malformed,
}

/// Collects the first handshake message from TLS records in `buf`.
pub fn assemble(buf: &[u8]) -> Assembled {
    let mut message = Vec::new();
    let mut pos = 0usize;
    loop {
        if buf.len() < pos + 5 {
            return if pos == 0 && !buf.is_empty() && buf[0] != 0x16 {
                Assembled::NotTls
            } else {
                Assembled::NeedMore(pos + 5)
            };
        }
        if buf[pos] != 0x16 || buf[pos + 1] != 0x03 {
            return Assembled::NotTls;
        }
        let len = u16::from_be_bytes([buf[pos + 3], buf[pos + 4]]) as usize;
        if len == 0 {
            return Assembled::NotTls;
        }
        let end = pos + 5 + len;
        if buf.len() < end {
            return Assembled::NeedMore(end);
        }
        message.extend_from_slice(&buf[pos + 5..end]);
        pos = end;
        if message.len() >= 4 {
            let need = 4 + (u32::from_be_bytes([0, message[1], message[2], message[3]]) as usize);
            if message.len() >= need {
                message.truncate(need);
                return Assembled::Complete {
                    message,
                    records_len: pos,
                };
            }
        }
    }
}

/// The facts of a ClientHello that routing can use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    pub legacy_version: u16,
    pub session_id: Vec<u8>,
    pub cipher_suites: Vec<u16>,
    pub compression: Vec<u8>,
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    pub supported_versions: Vec<u16>,
    pub supported_groups: Vec<u16>,
    pub signature_algorithms: Vec<u16>,
    pub key_share_groups: Vec<u16>,
    pub psk_modes: Vec<u8>,
    pub renegotiation_info: bool,
    pub grease: bool,
}

/// GREASE values (RFC 8701): 0x?A?A with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if self.b.len() < n {
            return Err(ParseError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ParseError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Result<&'a [u8], ParseError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], ParseError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

fn u16s(b: &[u8]) -> Result<Vec<u16>, ParseError> {
    if !b.len().is_multiple_of(2) {
        return Err(ParseError::Malformed);
    }
    Ok(b.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect())
}

/// Parses a handshake message (as returned by [`assemble`], or a QUIC CRYPTO stream).
pub fn parse(message: &[u8]) -> Result<ClientHello, ParseError> {
    let mut r = Reader { b: message };
    if r.u8()? != 1 {
        return Err(ParseError::NotClientHello);
    }
    let len = {
        let b = r.take(3)?;
        u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize
    };
    let mut r = Reader { b: r.take(len)? };
    let mut ch = ClientHello {
        legacy_version: r.u16()?,
        ..Default::default()
    };
    r.take(32)?;
    ch.session_id = r.vec16_or_8_session()?;
    ch.cipher_suites = u16s(r.vec16()?)?;
    ch.compression = r.vec8()?.to_vec();
    if r.is_empty() {
        return Ok(ch);
    }
    let mut ext = Reader { b: r.vec16()? };
    while !ext.is_empty() {
        let ty = ext.u16()?;
        let mut body = Reader { b: ext.vec16()? };
        ch.grease |= is_grease(ty);
        match ty {
            0 => {
                let mut list = Reader { b: body.vec16()? };
                while !list.is_empty() {
                    let kind = list.u8()?;
                    let name = list.vec16()?;
                    if kind == 0 && ch.sni.is_none() {
                        ch.sni = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            16 => {
                let mut list = Reader { b: body.vec16()? };
                while !list.is_empty() {
                    ch.alpn
                        .push(String::from_utf8_lossy(list.vec8()?).into_owned());
                }
            }
            43 => ch.supported_versions = u16s(body.vec8()?)?,
            10 => ch.supported_groups = u16s(body.vec16()?)?,
            13 => ch.signature_algorithms = u16s(body.vec16()?)?,
            51 => {
                let mut list = Reader { b: body.vec16()? };
                while !list.is_empty() {
                    ch.key_share_groups.push(list.u16()?);
                    list.vec16()?;
                }
            }
            45 => ch.psk_modes = body.vec8()?.to_vec(),
            0xff01 => ch.renegotiation_info = true,
            _ => {}
        }
    }
    for v in ch
        .cipher_suites
        .iter()
        .chain(&ch.supported_versions)
        .chain(&ch.supported_groups)
        .chain(&ch.key_share_groups)
    {
        ch.grease |= is_grease(*v);
    }
    Ok(ch)
}

impl Reader<'_> {
    /// The session id is a one-byte-length vector of at most 32 bytes.
    fn vec16_or_8_session(&mut self) -> Result<Vec<u8>, ParseError> {
        let id = self.vec8()?;
        if id.len() > 32 {
            return Err(ParseError::Malformed);
        }
        Ok(id.to_vec())
    }
}

/// A server name as routing sees it: lower-cased, only letters, digits, `.`, `-`, `_`.
pub fn normalize_sni(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn hex_list16(v: &[u16], drop_grease: bool) -> String {
    let mut out = String::new();
    for x in v.iter().filter(|x| !(drop_grease && is_grease(**x))) {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{x:04x}");
    }
    out
}

fn hex_list8(v: &[u8]) -> String {
    v.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl ClientHello {
    /// The `tls.*` KV entries of this ClientHello (prefix `tls` or `quic` for the SNI key).
    pub fn kv(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("tls.version.legacy", format!("{:04x}", self.legacy_version)),
            ("tls.session_id", hex::encode(&self.session_id)),
            ("tls.cipher_suites", hex_list16(&self.cipher_suites, true)),
            ("tls.compression", hex_list8(&self.compression)),
            (
                "tls.supported_versions",
                hex_list16(&self.supported_versions, true),
            ),
            (
                "tls.supported_groups",
                hex_list16(&self.supported_groups, true),
            ),
            (
                "tls.signature_algorithms",
                hex_list16(&self.signature_algorithms, false),
            ),
            (
                "tls.key_share_groups",
                hex_list16(&self.key_share_groups, true),
            ),
            ("tls.psk_modes", hex_list8(&self.psk_modes)),
            (
                "tls.has_renegotiation_info",
                self.renegotiation_info.to_string(),
            ),
            ("tls.has_grease", self.grease.to_string()),
        ];
        if let Some(sni) = &self.sni {
            out.push(("tls.sni", normalize_sni(sni)));
        }
        if !self.alpn.is_empty() {
            out.push(("tls.alpn", self.alpn.join(",")));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests;
