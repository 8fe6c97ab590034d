//! HPACK (RFC 7541): the decoder of a connection's request header blocks, with its dynamic
//! table, and the encoder of response header blocks.
//!
//! The encoder keeps no dynamic table and writes no Huffman: every field is a literal
//! "without indexing", its name indexed when the static table has it. A response costs a few
//! bytes more than with a table, and the connection keeps no encoder state between
//! responses: an idle connection pays nothing for it, and nothing needs to be in sync.

use std::collections::VecDeque;

use super::huffman::{self, HuffmanError};

/// The static table (Appendix A), index 1 first.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Per-entry overhead a table's size counts besides the name and value (section 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Why a header block could not be decoded: a `COMPRESSION_ERROR` of the whole connection,
/// since the peer's table and ours may now differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("index {0} is in neither table")]
    BadIndex(usize),
    #[error("table size update to {0}, above the limit we set")]
    SizeAboveLimit(usize),
    #[error("table size update after the first field of a block")]
    LateSizeUpdate,
    #[error("{0}")]
    Huffman(#[from] HuffmanError),
}

/// One decoded field. Its bytes are only checked by HPACK's rules; what HTTP allows in a name
/// or value is for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// Sent as "never indexed": a proxy must forward it that way too.
    pub sensitive: bool,
}

/// An entry of the dynamic table: name and value in one allocation.
#[derive(Debug)]
struct Entry {
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn name(&self) -> &[u8] {
        &self.bytes[..self.name_len]
    }

    fn value(&self) -> &[u8] {
        &self.bytes[self.name_len..]
    }

    fn size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// Where Huffman-coded strings are decoded to while a block is read. The caller owns it, so
/// that a connection waiting for its next request need not (one per thread will do).
#[derive(Debug, Default)]
pub struct Scratch {
    name: Vec<u8>,
    value: Vec<u8>,
}

/// The request side of a connection's header compression.
#[derive(Debug)]
pub struct Decoder {
    /// Newest first: dynamic index 62 is `entries[0]`.
    entries: VecDeque<Entry>,
    size: usize,
    /// The size the peer last set with an update.
    max: usize,
    /// The most it may set: our SETTINGS_HEADER_TABLE_SIZE.
    limit: usize,
}

impl Decoder {
    /// A decoder whose table may grow to `limit` bytes (as sections 4.1 and 4.2 count them),
    /// the SETTINGS_HEADER_TABLE_SIZE the connection announces.
    pub fn new(limit: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            size: 0,
            max: limit,
            limit,
        }
    }

    /// The dynamic table's size as section 4.1 counts it.
    pub fn table_size(&self) -> usize {
        self.size
    }

    /// Decodes one whole header block (a HEADERS frame's fragment and its CONTINUATIONs),
    /// giving each field to `f` in order. An error, the decoder's or `f`'s, stops decoding
    /// with the table out of step with the peer's: the connection must end. A field `f`
    /// objects to only for its stream must be noted and decoding go on.
    pub fn decode<E: From<HpackError>>(
        &mut self,
        block: &[u8],
        scratch: &mut Scratch,
        mut f: impl FnMut(Field<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut at = 0;
        let mut fields = 0usize;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                // Indexed field (6.1).
                let index = integer(block, &mut at, 7)?;
                let (name, value) = self.get(index)?;
                f(Field {
                    name,
                    value,
                    sensitive: false,
                })?;
            } else if first & 0xe0 == 0x20 {
                // Table size update (6.3): only before the block's first field.
                if fields > 0 {
                    return Err(HpackError::LateSizeUpdate.into());
                }
                let size = integer(block, &mut at, 5)?;
                if size > self.limit {
                    return Err(HpackError::SizeAboveLimit(size).into());
                }
                self.max = size;
                self.evict_to(size);
                continue;
            } else {
                // Literals (6.2): with incremental indexing (01), without (0000), never
                // indexed (0001).
                let (prefix, index_it) = if first & 0x40 != 0 {
                    (6, true)
                } else {
                    (4, false)
                };
                let sensitive = !index_it && first & 0x10 != 0;
                let name_index = integer(block, &mut at, prefix)?;
                let Scratch {
                    name: nbuf,
                    value: vbuf,
                } = scratch;
                let name: &[u8] = if name_index == 0 {
                    string(block, &mut at, nbuf)?
                } else {
                    // Copied: inserting the field may evict the entry its name is in.
                    nbuf.clear();
                    nbuf.extend_from_slice(self.get(name_index)?.0);
                    &nbuf[..]
                };
                let value = string(block, &mut at, vbuf)?;
                if index_it {
                    self.insert(name, value);
                }
                f(Field {
                    name,
                    value,
                    sensitive,
                })?;
            }
            fields += 1;
        }
        Ok(())
    }

    fn get(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        match index {
            1..=61 => {
                let (n, v) = STATIC[index - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            _ => index
                .checked_sub(62)
                .and_then(|i| self.entries.get(i))
                .map(|e| (e.name(), e.value()))
                .ok_or(HpackError::BadIndex(index)),
        }
    }

    fn insert(&mut self, name: &[u8], value: &[u8]) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        if size > self.max {
            // Larger than the table: it empties it and is not added (4.4).
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max - size);
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        self.entries.push_front(Entry {
            bytes: bytes.into_boxed_slice(),
            name_len: name.len(),
        });
        self.size += size;
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => break,
            }
        }
    }
}

/// An integer with an `n`-bit prefix (5.1), at most 2^32 - 1.
fn integer(block: &[u8], at: &mut usize, n: u32) -> Result<usize, HpackError> {
    let mask = (1u32 << n) - 1;
    let first = *block.get(*at).ok_or(HpackError::Truncated)?;
    *at += 1;
    let mut value = u64::from(first) & u64::from(mask);
    if value < u64::from(mask) {
        return Ok(value as usize);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        value += u64::from(b & 0x7f) << shift;
        if value > u64::from(u32::MAX) {
            return Err(HpackError::IntegerOverflow);
        }
        if b & 0x80 == 0 {
            return Ok(value as usize);
        }
        shift += 7;
        if shift > 28 {
            return Err(HpackError::IntegerOverflow);
        }
    }
}

/// A string literal (5.2): borrowed from the block when raw, decoded into `buf` when
/// Huffman-coded.
fn string<'a>(
    block: &'a [u8],
    at: &mut usize,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], HpackError> {
    let huffman = block.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let end = at.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*at..end).ok_or(HpackError::Truncated)?;
    *at = end;
    if huffman {
        buf.clear();
        huffman::decode(raw, buf)?;
        Ok(buf)
    } else {
        Ok(raw)
    }
}

/// Appends an integer with an `n`-bit prefix, the prefix's other bits `flags`.
fn put_integer(out: &mut Vec<u8>, flags: u8, n: u32, value: usize) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// The static index of a response field's name, for the names a response carries often.
fn static_name(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"accept-ranges" => 18,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"date" => 33,
        b"etag" => 34,
        b"expires" => 36,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// Appends `:status`: indexed when the static table has the code, else a literal.
pub fn encode_status(out: &mut Vec<u8>, status: u16) {
    let index = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => 0,
    };
    if index != 0 {
        out.push(0x80 | index);
        return;
    }
    // Without indexing, name ":status" (8).
    put_integer(out, 0, 4, 8);
    let mut text = [0u8; 3];
    let s = status.min(999);
    text[0] = b'0' + (s / 100) as u8;
    text[1] = b'0' + (s / 10 % 10) as u8;
    text[2] = b'0' + (s % 10) as u8;
    put_string(out, &text);
}

/// Appends one field as a literal without indexing (never indexed when `sensitive`). `name`
/// must be lowercase, as HTTP/2 requires.
pub fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8], sensitive: bool) {
    let flags = if sensitive { 0x10 } else { 0x00 };
    match static_name(name) {
        Some(i) => put_integer(out, flags, 4, i),
        None => {
            out.push(flags);
            put_string(out, name);
        }
    }
    put_string(out, value);
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, HpackError> {
        let mut out = Vec::new();
        d.decode(block, &mut Scratch::default(), |f: Field<'_>| {
            out.push((
                String::from_utf8_lossy(f.name).into_owned(),
                String::from_utf8_lossy(f.value).into_owned(),
            ));
            Ok::<_, HpackError>(())
        })?;
        Ok(out)
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn integers_of_rfc_7541_c1() {
        let mut out = Vec::new();
        put_integer(&mut out, 0, 5, 10);
        put_integer(&mut out, 0, 5, 1337);
        put_integer(&mut out, 0, 8, 42);
        assert_eq!(out, [0x0a, 0x1f, 0x9a, 0x0a, 0x2a]);
        let mut at = 0;
        assert_eq!(integer(&out, &mut at, 5), Ok(10));
        assert_eq!(integer(&out, &mut at, 5), Ok(1337));
        assert_eq!(integer(&out, &mut at, 8), Ok(42));
        // Past 2^32, and a continuation that never ends.
        let mut at = 0;
        assert_eq!(
            integer(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f], &mut at, 5),
            Err(HpackError::IntegerOverflow)
        );
        let mut at = 0;
        assert_eq!(
            integer(&[0x1f, 0x80, 0x80], &mut at, 5),
            Err(HpackError::Truncated)
        );
    }

    /// RFC 7541 C.3 (without Huffman) and C.4 (with): three requests on one connection, the
    /// table carried from each to the next.
    #[test]
    fn requests_of_rfc_7541_c3_and_c4() {
        for blocks in [
            [
                "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
                "8286 84be 5808 6e6f 2d63 6163 6865",
                "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
            ],
            [
                "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
                "8286 84be 5886 a8eb 1064 9cbf",
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ],
        ] {
            let mut d = Decoder::new(4096);
            let first = [
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ];
            assert_eq!(decode_all(&mut d, &hex(blocks[0])).unwrap(), pairs(&first));
            assert_eq!(d.table_size(), 57);
            let mut second = first.to_vec();
            second.push(("cache-control", "no-cache"));
            assert_eq!(decode_all(&mut d, &hex(blocks[1])).unwrap(), pairs(&second));
            assert_eq!(d.table_size(), 110);
            let third = [
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ];
            assert_eq!(decode_all(&mut d, &hex(blocks[2])).unwrap(), pairs(&third));
            assert_eq!(d.table_size(), 164);
        }
    }

    /// RFC 7541 C.5: responses with a 256-byte table, entries evicted as new ones come.
    #[test]
    fn responses_of_rfc_7541_c5_evict() {
        let mut d = Decoder::new(256);
        let b1 = "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 \
                  3133 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 \
                  7861 6d70 6c65 2e63 6f6d";
        assert_eq!(
            decode_all(&mut d, &hex(b1)).unwrap(),
            pairs(&[
                (":status", "302"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(d.table_size(), 222);
        // ":status: 307" evicts ":status: 302".
        assert_eq!(
            decode_all(&mut d, &hex("4803 3330 37c1 c0bf")).unwrap(),
            pairs(&[
                (":status", "307"),
                ("cache-control", "private"),
                ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
                ("location", "https://www.example.com"),
            ])
        );
        assert_eq!(d.table_size(), 222);
        assert_eq!(
            decode_all(&mut d, &hex("c1")).unwrap(),
            pairs(&[("cache-control", "private")])
        );
        // Index 66 is past the four entries the table holds.
        assert_eq!(
            decode_all(&mut d, &hex("c2")),
            Err(HpackError::BadIndex(66))
        );
    }

    #[test]
    fn size_updates_are_bounded_and_come_first() {
        let mut d = Decoder::new(4096);
        decode_all(&mut d, &hex("418c f1e3 c2e5 f23a 6ba0 ab90 f4ff 82")).unwrap();
        assert_eq!(d.table_size(), 57);
        // Update to 0 empties the table; one above the limit is refused.
        assert_eq!(
            decode_all(&mut d, &hex("20 82")).unwrap(),
            pairs(&[(":method", "GET")])
        );
        assert_eq!(d.table_size(), 0);
        assert_eq!(
            decode_all(&mut d, &hex("be")),
            Err(HpackError::BadIndex(62))
        );
        assert_eq!(
            decode_all(&mut d, &hex("3fe2 1f")),
            Err(HpackError::SizeAboveLimit(4097))
        );
        assert_eq!(
            decode_all(&mut d, &hex("82 20")),
            Err(HpackError::LateSizeUpdate)
        );
        // With the table at 0 nothing is kept.
        decode_all(&mut d, &hex("4001 6101 62")).unwrap();
        assert_eq!(d.table_size(), 0);
    }

    #[test]
    fn never_indexed_is_told_and_truncation_is_an_error() {
        let mut d = Decoder::new(4096);
        let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
        let mut seen = Vec::new();
        d.decode(&block, &mut Scratch::default(), |f: Field<'_>| {
            seen.push((f.name.to_vec(), f.value.to_vec(), f.sensitive));
            Ok::<_, HpackError>(())
        })
        .unwrap();
        assert_eq!(seen, [(b"password".to_vec(), b"secret".to_vec(), true)]);
        assert_eq!(d.table_size(), 0);
        for cut in 1..block.len() {
            assert_eq!(
                decode_all(&mut d, &block[..cut]),
                Err(HpackError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn what_the_encoder_writes_decodes_back() {
        let mut out = Vec::new();
        encode_status(&mut out, 200);
        encode_status(&mut out, 302);
        encode_field(&mut out, b"content-type", b"text/plain", false);
        encode_field(&mut out, b"x-request-id", b"abc", false);
        encode_field(&mut out, b"set-cookie", b"s=1", true);
        let long = "v".repeat(300);
        encode_field(&mut out, b"x-long", long.as_bytes(), false);
        let mut d = Decoder::new(4096);
        assert_eq!(
            decode_all(&mut d, &out).unwrap(),
            pairs(&[
                (":status", "200"),
                (":status", "302"),
                ("content-type", "text/plain"),
                ("x-request-id", "abc"),
                ("set-cookie", "s=1"),
                ("x-long", &long),
            ])
        );
        assert_eq!(d.table_size(), 0, "the encoder never indexes");
        // The static table's codes, byte for byte: 200 is index 8, content-type is name 31.
        assert_eq!(out[0], 0x88);
        assert_eq!(&out[6..9], &[0x0f, 0x10, 0x0a]);
    }
}
