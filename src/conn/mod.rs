//! The connection as every layer sees it, below the layers themselves: its addresses, the KV
//! it starts with, and the hand-offs that carry it from L4 to the layer that terminates it.
//! L4 knows the carriers only by the traits in [`carrier`]; L7 implements them, and boot
//! wires the two together, so neither layer imports the other.

pub mod carrier;
pub mod socket;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::ListenerKey;
use crate::flow::kv::{Derived, Kv};

pub use carrier::{is_plain_app, Handoff, HttpCarrier, Inbox, QuicCarrier, QuicPort};
pub use socket::Socket;

/// Addresses of one accepted connection or UDP session.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub key: ListenerKey,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// A UUIDv7 as 32 lowercase hex digits.
pub fn uuid_v7() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    uuid_v7_at(ms)
}

/// A UUIDv7 for a moment given in milliseconds since the epoch.
fn uuid_v7_at(ms: u64) -> String {
    let mut b: [u8; 16] = rand::random();
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = (b[6] & 0x0F) | 0x70;
    b[8] = (b[8] & 0x3F) | 0x80;
    // Into a buffer: `hex::encode` pushes one char at a time.
    let mut text = [0u8; 32];
    match hex::encode_to_slice(b, &mut text) {
        Ok(()) => String::from_utf8_lossy(&text).into_owned(),
        Err(_) => hex::encode(b),
    }
}

/// The decimal digits of `n`, written at the end of `buf`: every new connection writes a few
/// numbers, and every response a length, where the formatting machinery costs several times
/// this.
pub fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Appends the decimal digits of `n`.
fn push_decimal(out: &mut String, n: u64) {
    let mut buf = [0u8; 20];
    out.extend(digits(n, &mut buf).iter().map(|&d| char::from(d)));
}

/// `n` in decimal.
pub fn decimal(n: u64) -> String {
    let mut out = String::with_capacity(20);
    push_decimal(&mut out, n);
    out
}

/// The longest text of an IP address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
pub const IP_TEXT_MAX: usize = 45;

/// An address as text, as `Display` writes it, into `buf`; IPv4 without the formatting
/// machinery (about a tenth of the instructions), since connections and requests format
/// their client's.
pub fn ip_bytes(ip: IpAddr, buf: &mut [u8; IP_TEXT_MAX]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let mut d = [0u8; 20];
                let d = digits(octet.into(), &mut d);
                buf[len..len + d.len()].copy_from_slice(d);
                len += d.len();
            }
            &buf[..len]
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let mut c = std::io::Cursor::new(&mut buf[..]);
            // 45 bytes hold any IPv6 address's text.
            let _ = write!(c, "{v6}");
            let len = usize::try_from(c.position()).unwrap_or(0);
            &buf[..len]
        }
    }
}

/// [`ip_bytes`] as a `String` of just its length.
pub fn ip_text(ip: IpAddr) -> String {
    let mut buf = [0u8; IP_TEXT_MAX];
    String::from_utf8_lossy(ip_bytes(ip, &mut buf)).into_owned()
}

/// A listener's name in logs and metrics, `tcp:8080` (its `Display` form), written without
/// the formatting machinery: every new connection needs it.
pub fn listener_label(key: &ListenerKey) -> String {
    let mut out = String::with_capacity(9);
    out.push_str(key.proto.as_str());
    out.push(':');
    push_decimal(&mut out, key.port.into());
    out
}

/// Room in a connection's own table for the keys the layers above add (`conn.layer`,
/// `conn.proto.carrier`, `tls.*`, `http.*`, `req.peek_buffer_hex`) before it grows.
const OWN_KEYS: usize = 6;

/// The L4 keys of a connection (`conn.uuid`, `conn.ip`, `conn.port`, `conn.proto`,
/// `conn.timestamp`, `conn.layer`, `server.ip`, `server.port`), written out when a template
/// first reads one: most connections never do. Its ID and time are those of its start.
///
/// Held by every connection that goes up a layer, for its whole life: addresses without the
/// IPv6 flow and scope a `SocketAddr` carries (no key shows them), 80 bytes with its counts
/// where a `Conn` made it 112.
#[derive(Debug)]
struct ConnKeys {
    peer: IpAddr,
    local: IpAddr,
    peer_port: u16,
    local_port: u16,
    proto: crate::config::Proto,
    /// When the connection started, in milliseconds since the epoch.
    started_ms: u64,
    /// Boxed: held by every connection, made by few.
    keys: OnceLock<Box<Kv>>,
}

/// The keys of [`ConnKeys`].
const CONN_KEYS: [&str; 8] = [
    "conn.uuid",
    "conn.ip",
    "conn.port",
    "conn.proto",
    "conn.timestamp",
    "conn.layer",
    "server.ip",
    "server.port",
];

impl ConnKeys {
    fn of(conn: &Conn, started_ms: u64) -> Self {
        Self {
            peer: conn.peer.ip(),
            local: conn.local.ip(),
            peer_port: conn.peer.port(),
            local_port: conn.local.port(),
            proto: conn.key.proto,
            started_ms,
            keys: OnceLock::new(),
        }
    }

    fn keys(&self) -> &Kv {
        self.keys.get_or_init(|| {
            let mut kv = Kv::with_capacity(CONN_KEYS.len());
            kv.set("conn.uuid", uuid_v7_at(self.started_ms));
            kv.set("conn.ip", ip_text(self.peer));
            kv.set("conn.port", decimal(self.peer_port.into()));
            kv.set_static("conn.proto", self.proto.as_str());
            kv.set("conn.timestamp", decimal(self.started_ms / 1000));
            kv.set_static("conn.layer", "l4");
            kv.set("server.ip", ip_text(self.local));
            kv.set("server.port", decimal(self.local_port.into()));
            kv.pack();
            Box::new(kv)
        })
    }
}

impl Derived for ConnKeys {
    /// Works all of them out on the first read of one.
    fn get(&self, key: &str) -> Option<&str> {
        if !CONN_KEYS.contains(&key) {
            return None;
        }
        self.keys().get(key)
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        self.keys().iter()
    }

    fn bytes_bound(&self) -> usize {
        // Key lengths, then the longest values: 32 hex digits, two addresses, two ports,
        // `tcp`/`udp`, a 20-digit number and `l4`.
        let keys: usize = CONN_KEYS.iter().map(|k| k.len()).sum();
        keys + 32 + 2 * IP_TEXT_MAX + 2 * 5 + 3 + 20 + 2
    }
}

/// The L4 keys every listener flow starts with, written out on their first read.
pub fn base_kv(conn: &Conn) -> Kv {
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Kv::derived(Arc::new(ConnKeys::of(conn, started_ms)), OWN_KEYS)
}

/// The KV a listener flow starts with: none at all when the flow reads no KV (a plain proxy
/// pays nothing), and the peeked bytes only when a template reads them.
pub fn listener_kv(conn: &Conn, flow: &crate::flow::step::Flow, peeked: &[u8]) -> Kv {
    let mut kv = if flow.reads_kv {
        base_kv(conn)
    } else {
        Kv::new()
    };
    if flow.reads_peek {
        kv.set("req.peek_buffer_hex", hex::encode(peeked));
    }
    kv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_has_version_and_variant_bits() {
        let u = uuid_v7();
        assert_eq!(u.len(), 32);
        assert_eq!(&u[12..13], "7");
        assert!(matches!(&u[16..17], "8" | "9" | "a" | "b"), "{u}");
    }

    #[test]
    fn addresses_and_numbers_read_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.20.3.99",
            "::1",
            "::ffff:1.2.3.4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "1:2:3:4:5:6:7:8",
        ] {
            let parsed: IpAddr = ip.parse().expect("ip");
            assert_eq!(ip_text(parsed), parsed.to_string());
            let mut buf = [0u8; IP_TEXT_MAX];
            assert_eq!(ip_bytes(parsed, &mut buf), parsed.to_string().as_bytes());
        }
        for n in [0, 7, 10, 65535, 1_764_000_000, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
        }
        for key in [
            ListenerKey {
                port: 8080,
                proto: crate::config::Proto::Tcp,
            },
            ListenerKey {
                port: 53,
                proto: crate::config::Proto::Udp,
            },
        ] {
            assert_eq!(listener_label(&key), key.to_string());
        }
    }

    #[test]
    fn base_kv_names_both_ends() {
        let conn = Conn {
            key: ListenerKey {
                port: 8080,
                proto: crate::config::Proto::Tcp,
            },
            peer: "127.0.0.1:5000".parse().expect("addr"),
            local: "127.0.0.1:8080".parse().expect("addr"),
        };
        let kv = base_kv(&conn);
        assert_eq!(kv.get("conn.ip"), Some("127.0.0.1"));
        assert_eq!(kv.get("conn.port"), Some("5000"));
        assert_eq!(kv.get("server.port"), Some("8080"));
        assert_eq!(kv.get("conn.proto"), Some("tcp"));
        assert_eq!(kv.get("conn.layer"), Some("l4"));
    }

    /// The bound counted towards the cap before the keys exist covers the longest ones.
    #[test]
    fn conn_keys_fit_their_bound() {
        let widest = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535";
        let conn = Conn {
            key: ListenerKey {
                port: 65535,
                proto: crate::config::Proto::Tcp,
            },
            peer: widest.parse().expect("addr"),
            local: widest.parse().expect("addr"),
        };
        let keys = ConnKeys::of(&conn, u64::MAX);
        // What every connection that goes up a layer holds: its allocation class.
        assert!(std::mem::size_of::<ConnKeys>() + 16 <= 80);
        let used: usize = keys.keys().iter().map(|(k, v)| k.len() + v.len()).sum();
        assert_eq!(keys.keys().len(), CONN_KEYS.len());
        assert!(CONN_KEYS.iter().all(|k| Derived::get(&keys, k).is_some()));
        assert_eq!(Derived::get(&keys, "req.path"), None);
        assert!(
            used <= keys.bytes_bound(),
            "{used} > {}",
            keys.bytes_bound()
        );
    }
}
