//! The PROXY protocol (v1 text, v2 binary), sans-IO: parse the header a trusted balancer puts
//! in front of a connection, and encode one for an upstream.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIG: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// A v1 header is at most this long (including CRLF).
const V1_MAX: usize = 107;
/// Largest v2 header we accept (16-byte prefix + addresses + TLVs).
const V2_MAX: usize = 16 + 536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        match s.to_ascii_lowercase().as_str() {
            "v1" | "1" => Some(Version::V1),
            "v2" | "2" => Some(Version::V2),
            _ => None,
        }
    }
}

/// What the bytes at the start of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed to decide.
    NeedMore,
    /// A complete header of `len` bytes; addresses are absent for `LOCAL`/`UNKNOWN`.
    Header {
        version: Version,
        src: Option<SocketAddr>,
        dst: Option<SocketAddr>,
        len: usize,
    },
    /// The bytes do not start a PROXY header at all (the client speaks first itself).
    Absent,
    /// A PROXY header that is broken.
    Invalid(&'static str),
}

/// Parses a PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::NeedMore;
    }
    if buf[0] == b'P' {
        return parse_v1(buf);
    }
    if buf[0] == V2_SIG[0] {
        return parse_v2(buf);
    }
    Parsed::Absent
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let prefix = b"PROXY ";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Parsed::Absent;
    }
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid("v1 header too long")
        } else {
            Parsed::NeedMore
        };
    };
    let Ok(line) = std::str::from_utf8(&buf[6..end]) else {
        return Parsed::Invalid("v1 header is not text");
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let len = end + 2;
    match parts.first().copied() {
        Some("UNKNOWN") => Parsed::Header {
            version: Version::V1,
            src: None,
            dst: None,
            len,
        },
        Some(fam @ ("TCP4" | "TCP6")) if parts.len() == 5 => {
            let ip = |s: &str| -> Option<IpAddr> {
                let ip: IpAddr = s.parse().ok()?;
                (ip.is_ipv4() == (fam == "TCP4")).then_some(ip)
            };
            let port = |s: &str| -> Option<u16> {
                if s.len() > 1 && s.starts_with('0') {
                    None
                } else {
                    s.parse().ok()
                }
            };
            match (ip(parts[1]), ip(parts[2]), port(parts[3]), port(parts[4])) {
                (Some(s), Some(d), Some(sp), Some(dp)) => Parsed::Header {
                    version: Version::V1,
                    src: Some(SocketAddr::new(s, sp)),
                    dst: Some(SocketAddr::new(d, dp)),
                    len,
                },
                _ => Parsed::Invalid("bad v1 addresses"),
            }
        }
        _ => Parsed::Invalid("bad v1 header"),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let n = buf.len().min(12);
    if buf[..n] != V2_SIG[..n] {
        return Parsed::Absent;
    }
    if buf.len() < 16 {
        return Parsed::NeedMore;
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("bad v2 version");
    }
    let body = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + body;
    if len > V2_MAX {
        return Parsed::Invalid("v2 header too long");
    }
    if buf.len() < len {
        return Parsed::NeedMore;
    }
    let a = &buf[16..len];
    match ver_cmd & 0x0F {
        0 => {
            return Parsed::Header {
                version: Version::V2,
                src: None,
                dst: None,
                len,
            }
        }
        1 => {}
        _ => return Parsed::Invalid("bad v2 command"),
    }
    let (src, dst) = match fam >> 4 {
        0 => (None, None),
        1 if a.len() >= 12 => {
            let s = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let d = Ipv4Addr::new(a[4], a[5], a[6], a[7]);
            (
                Some(SocketAddr::new(s.into(), u16::from_be_bytes([a[8], a[9]]))),
                Some(SocketAddr::new(
                    d.into(),
                    u16::from_be_bytes([a[10], a[11]]),
                )),
            )
        }
        2 if a.len() >= 36 => {
            let ip = |b: &[u8]| -> Ipv6Addr {
                let mut x = [0u8; 16];
                x.copy_from_slice(&b[..16]);
                x.into()
            };
            (
                Some(SocketAddr::new(
                    ip(&a[0..16]).into(),
                    u16::from_be_bytes([a[32], a[33]]),
                )),
                Some(SocketAddr::new(
                    ip(&a[16..32]).into(),
                    u16::from_be_bytes([a[34], a[35]]),
                )),
            )
        }
        1 | 2 => return Parsed::Invalid("v2 address block too short"),
        _ => (None, None),
    };
    Parsed::Header {
        version: Version::V2,
        src,
        dst,
        len,
    }
}

/// Encodes a header for `src` -> `dst` (both must be the same family; otherwise v1 `UNKNOWN`
/// or v2 `LOCAL` is produced).
pub fn encode(version: Version, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = (unmap(src), unmap(dst));
    match version {
        Version::V1 => match (src, dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => format!(
                "PROXY TCP4 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
            .into_bytes(),
            (SocketAddr::V6(s), SocketAddr::V6(d)) => format!(
                "PROXY TCP6 {} {} {} {}\r\n",
                s.ip(),
                d.ip(),
                s.port(),
                d.port()
            )
            .into_bytes(),
            _ => b"PROXY UNKNOWN\r\n".to_vec(),
        },
        Version::V2 => {
            let mut out = V2_SIG.to_vec();
            match (src, dst) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
                (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                    out.extend_from_slice(&[0x21, 0x21, 0, 36]);
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
                _ => out.extend_from_slice(&[0x20, 0x00, 0, 0]),
            }
            out
        }
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d` (dual-stack listeners report IPv4 clients that way).
fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, b)) => (ip.parse::<IpAddr>().ok()?, b.parse::<u8>().ok()?),
            None => {
                let ip = s.parse::<IpAddr>().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Cidr { net: ip, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) if self.net.is_ipv4() => {
                v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip)
            }
            other => other,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.bits)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.bits)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn round_trips_v1_and_v2_for_both_families() {
        for (s, d) in [
            ("192.0.2.1:5000", "198.51.100.2:443"),
            ("[2001:db8::1]:5000", "[2001:db8::2]:443"),
        ] {
            for v in [Version::V1, Version::V2] {
                let mut h = encode(v, sa(s), sa(d));
                let len = h.len();
                h.extend_from_slice(b"payload");
                assert_eq!(
                    parse(&h),
                    Parsed::Header {
                        version: v,
                        src: Some(sa(s)),
                        dst: Some(sa(d)),
                        len
                    },
                    "{v:?} {s}"
                );
                for cut in 0..len {
                    assert_eq!(parse(&h[..cut]), Parsed::NeedMore, "{v:?} prefix {cut}");
                }
            }
        }
    }

    #[test]
    fn local_unknown_and_garbage() {
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nGET"),
            Parsed::Header {
                version: Version::V1,
                src: None,
                dst: None,
                len: 15
            }
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Absent);
        assert!(
            matches!(parse(b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n"), Parsed::Invalid(_)),
            "family mismatch"
        );
        assert!(
            matches!(
                parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
                Parsed::Invalid(_)
            ),
            "leading zero port"
        );
        assert_eq!(parse(&[b'P'; 200]), Parsed::Absent);
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend(std::iter::repeat_n(b'1', 150));
        assert!(
            matches!(parse(&long), Parsed::Invalid(_)),
            "no CRLF within 107 bytes"
        );
        let mut local = V2_SIG.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&local),
            Parsed::Header {
                version: Version::V2,
                src: None,
                dst: None,
                len: 16
            }
        );
        let mut bad = V2_SIG.to_vec();
        bad.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse(&bad), Parsed::Invalid(_)), "short v4 block");
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(c.contains("10.200.1.1".parse().expect("ip")));
        assert!(
            c.contains("::ffff:10.1.1.1".parse().expect("ip")),
            "mapped v4"
        );
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(Cidr::parse("::1")
            .expect("v6")
            .contains("::1".parse().expect("ip")));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
        assert!(Cidr::parse("0.0.0.0/0")
            .expect("all")
            .contains("8.8.8.8".parse().expect("ip")));
    }
}
