//! The Huffman code of HPACK (RFC 7541, Appendix B). The code is canonical: codes of one
//! length are consecutive in symbol order and every length starts where the previous one
//! ended, shifted. So the 257 code lengths are all the table there is; the codes, and the
//! limits a decoder compares a 32-bit window against, are worked out from them at compile
//! time.

/// The length in bits of each symbol's code: bytes 0-255, then EOS (256).
const LEN: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0-15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16-31
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // ' ' to '/'
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // '0' to '?'
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // '@' to 'O'
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 'P' to '_'
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // '`' to 'o'
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 'p' to 127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128-143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144-159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160-175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176-191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192-207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208-223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224-239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240-255
    30, // EOS
];

const EOS: u16 = 256;
const MIN_LEN: usize = 5;
const MAX_LEN: usize = 30;

/// What the decoder needs, per code length `l` (index `l`): the first code of that length,
/// the window limit below which a 32-bit MSB-aligned window holds a code no longer than `l`,
/// and where that length's symbols start in `SORTED`.
struct Canonical {
    /// Each symbol's code, aligned to the LSB.
    code: [u32; 257],
    first: [u32; MAX_LEN + 1],
    /// Exclusive: `(first + count) << (32 - l)`, as u64 because the last one is 2^32.
    limit: [u64; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
    /// The symbols in code order (by length, then symbol).
    sorted: [u16; 257],
}

const fn canonical() -> Canonical {
    let mut count = [0u32; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[LEN[s] as usize] += 1;
        s += 1;
    }
    let mut c = Canonical {
        code: [0; 257],
        first: [0; MAX_LEN + 1],
        limit: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        sorted: [0; 257],
    };
    let mut next = [0u32; MAX_LEN + 1];
    let (mut code, mut at) = (0u32, 0u16);
    let mut l = 1;
    while l <= MAX_LEN {
        c.first[l] = code;
        next[l] = code;
        c.offset[l] = at;
        at += count[l] as u16;
        c.limit[l] = ((code + count[l]) as u64) << (32 - l);
        code = (code + count[l]) << 1;
        l += 1;
    }
    // Symbols in increasing order within a length: their codes are consecutive.
    let mut s = 0;
    while s < 257 {
        let l = LEN[s] as usize;
        c.code[s] = next[l];
        c.sorted[(c.offset[l] + (next[l] - c.first[l]) as u16) as usize] = s as u16;
        next[l] += 1;
        s += 1;
    }
    c
}

static TABLE: Canonical = canonical();

/// Why a Huffman string failed to decode (a `COMPRESSION_ERROR` of the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    #[error("the EOS symbol inside a Huffman string")]
    Eos,
    #[error("Huffman padding longer than 7 bits or not all ones")]
    Padding,
}

/// The length `data` takes Huffman-coded, in bytes.
pub fn encoded_len(data: &[u8]) -> usize {
    let bits: usize = data.iter().map(|&b| usize::from(LEN[usize::from(b)])).sum();
    bits.div_ceil(8)
}

/// Appends `data` Huffman-coded, padded with the EOS prefix (ones) to a whole byte.
pub fn encode(data: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in data {
        let l = u32::from(LEN[usize::from(b)]);
        acc = (acc << l) | u64::from(TABLE.code[usize::from(b)]);
        bits += l;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        out.push(((acc << pad) | ((1 << pad) - 1)) as u8);
    }
}

/// Appends the bytes `data` codes. Each symbol is found from a 32-bit window of the input:
/// the shortest length whose limit the window is under (most symbols of a header are 5-7
/// bits, so one to three comparisons), then its index among that length's codes.
pub fn decode(data: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let mut acc: u64 = 0;
    // Valid bits in `acc`, the lowest ones.
    let mut bits = 0u32;
    let mut input = data.iter();
    loop {
        while bits <= 56 {
            match input.next() {
                Some(&b) => {
                    acc = (acc << 8) | u64::from(b);
                    bits += 8;
                }
                None => break,
            }
        }
        if bits == 0 {
            return Ok(());
        }
        // The next 32 bits, MSB-aligned; past the end of the input it reads ones, like EOS
        // padding, so a symbol is only taken if it fits in the bits there are.
        let window = if bits >= 32 {
            (acc >> (bits - 32)) as u32
        } else {
            ((acc << (32 - bits)) as u32) | ((1u32 << (32 - bits)) - 1)
        };
        let mut l = MIN_LEN;
        while l < MAX_LEN && u64::from(window) >= TABLE.limit[l] {
            l += 1;
        }
        if l as u32 > bits {
            // What is left is shorter than any code it starts: padding, at most 7 bits of
            // ones (the window filled the rest with ones, so any zero made a shorter code).
            let tail = acc & ((1 << bits) - 1);
            return if bits <= 7 && tail == (1 << bits) - 1 {
                Ok(())
            } else {
                Err(HuffmanError::Padding)
            };
        }
        let code = window >> (32 - l);
        let sym = TABLE.sorted[usize::from(TABLE.offset[l]) + (code - TABLE.first[l]) as usize];
        if sym == EOS {
            return Err(HuffmanError::Eos);
        }
        out.push(sym as u8);
        bits -= l as u32;
        acc &= (1 << bits) - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::hex;
    use super::*;

    #[test]
    fn the_code_is_complete_and_matches_the_rfc() {
        // Kraft: a complete prefix code fills the code space exactly.
        let sum: u64 = LEN
            .iter()
            .map(|&l| 1u64 << (MAX_LEN - usize::from(l)))
            .sum();
        assert_eq!(sum, 1 << MAX_LEN);
        // Codes as RFC 7541 Appendix B lists them (hex, LSB-aligned).
        for (sym, code) in [
            (0usize, 0x1ff8u32),
            (b' ' as usize, 0x14),
            (b'0' as usize, 0x0),
            (b'a' as usize, 0x3),
            (b'\\' as usize, 0x7fff0),
            (10, 0x3fff_fffc),
            (195, 0x7fff1),
            (255, 0x3ff_ffee),
            (256, 0x3fff_ffff),
        ] {
            assert_eq!(TABLE.code[sym], code, "symbol {sym}");
        }
    }

    #[test]
    fn rfc_7541_appendix_c_strings() {
        for (text, coded) in [
            ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
            ("no-cache", "a8eb 1064 9cbf"),
            ("custom-key", "25a8 49e9 5ba9 7d7f"),
            ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
            ("302", "6402"),
            ("private", "aec3 771a 4b"),
            (
                "Mon, 21 Oct 2013 20:13:21 GMT",
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
            ),
            (
                "https://www.example.com",
                "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
            ),
        ] {
            let mut out = Vec::new();
            encode(text.as_bytes(), &mut out);
            assert_eq!(out, hex(coded), "encoding {text}");
            assert_eq!(encoded_len(text.as_bytes()), out.len());
            let mut back = Vec::new();
            decode(&out, &mut back).unwrap();
            assert_eq!(back, text.as_bytes());
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for n in [0, 1, 2, 3, 7, 100, all.len()] {
            let mut coded = Vec::new();
            encode(&all[..n], &mut coded);
            let mut back = Vec::new();
            decode(&coded, &mut back).unwrap();
            assert_eq!(back, &all[..n]);
        }
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // 'a' is 00011: padded with 000 instead of 111.
        assert_eq!(decode(&[0b0001_1000], &mut out), Err(HuffmanError::Padding));
        // A whole byte of ones after a symbol ('&', 8 bits): 8 bits of padding.
        out.clear();
        assert_eq!(decode(&[0xf8, 0xff], &mut out), Err(HuffmanError::Padding));
        out.clear();
        assert_eq!(decode(&[0xf8], &mut out), Ok(()));
        assert_eq!(out, b"&");
        // EOS itself (30 ones), then padding.
        out.clear();
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HuffmanError::Eos)
        );
        // A byte that starts a longer code and ends there.
        out.clear();
        assert_eq!(decode(&[0xfe], &mut out), Err(HuffmanError::Padding));
        // 'a' and three ones of padding; nothing at all.
        out.clear();
        assert_eq!(decode(&[0b0001_1111], &mut out), Ok(()));
        assert_eq!(out, b"a");
        assert_eq!(decode(&[], &mut out), Ok(()));
    }
}
