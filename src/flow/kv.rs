//! The KV store that follows a connection: string keys to string values, with a size cap.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

/// Keys are few and short (`req.path`, `conn.ip`, ...): a fast seeded hash, not SipHash; and
/// most are literals, kept without a copy, as are values known at compile time (`l4`, a
/// protocol, an HTTP version).
type Map = HashMap<Cow<'static, str>, Cow<'static, str>, foldhash::fast::RandomState>;

/// Total bytes of keys and values one store may hold; further writes are dropped.
pub const MAX_KV_BYTES: usize = 64 * 1024;

/// Keys a layered store has room for from the start.
const LAYER_KEYS: usize = 8;

/// Keys read off something else on demand instead of copied in when the store is made: a
/// connection's addresses, ID and start time (read by few flows; writing them for every new
/// connection cost about a tenth of its instructions), a request's method, path and host
/// (borrowed from the request instead of copied for every request).
pub trait Derived: Send + Sync + std::fmt::Debug {
    /// The value of `key` when it is one of these keys (a lookup of any other key must be
    /// cheap: `req.query` without a query is looked up on every proxied request).
    fn get(&self, key: &str) -> Option<&str>;
    /// Every key with its value.
    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_>;
    /// At least the bytes of the keys and values, counted towards the cap from the start.
    fn bytes_bound(&self) -> usize;
}

#[derive(Debug, Clone, Default)]
pub struct Kv {
    map: Map,
    /// Everything under `map`: packed keys, derived ones, the parent's, and the count.
    base: Frozen,
}

/// A store that no longer changes, read under others (a connection's KV under each of its
/// requests'): its keys packed, over keys read on demand and a parent's, without the table a
/// [`Kv`] keeps for writes. 72 bytes, so a connection's context holds it inline instead of a
/// 120-byte allocation per connection.
#[derive(Debug, Clone, Default)]
pub struct Frozen {
    /// Own keys packed for good ([`Kv::pack`]).
    packed: Packed,
    /// Bytes of keys and values counted towards the cap, the parent's and derived included.
    bytes: usize,
    /// Keys read on demand, under the packed ones and over the parent's.
    derived: Option<Arc<dyn Derived>>,
    /// Keys shared with other stores (an HTTP request's view of its connection's KV), read
    /// through instead of copied; own keys shadow them.
    parent: Option<Arc<dyn Derived>>,
}

impl Frozen {
    /// An own key (packed).
    fn owns(&self, key: &str) -> bool {
        self.packed.contains(key)
    }

    fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.packed.get(key) {
            return Some(v);
        }
        if let Some(v) = self.derived.as_deref().and_then(|d| d.get(key)) {
            return Some(v);
        }
        self.parent.as_deref().and_then(|p| p.get(key))
    }

    /// Every key once, but those `shadowed` names: packed first, then the derived and the
    /// parent's they do not shadow.
    fn iter_under<'a>(
        &'a self,
        shadowed: impl Fn(&str) -> bool + Copy + 'a,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let packed = self.packed.iter().filter(move |(k, _)| !shadowed(k));
        let derived = self
            .derived
            .as_deref()
            .into_iter()
            .flat_map(move |d| d.iter().filter(move |(k, _)| !shadowed(k) && !self.owns(k)));
        let parent = self.parent.as_deref().into_iter().flat_map(move |p| {
            p.iter().filter(move |(k, _)| {
                !shadowed(k)
                    && !self.owns(k)
                    && self.derived.as_deref().is_none_or(|d| d.get(k).is_none())
            })
        });
        packed.chain(derived).chain(parent)
    }

    fn is_empty(&self) -> bool {
        self.packed.is_empty()
            && self
                .parent
                .as_deref()
                .is_none_or(|p| p.iter().next().is_none())
            && self
                .derived
                .as_deref()
                .is_none_or(|d| d.iter().next().is_none())
    }
}

impl Derived for Frozen {
    fn get(&self, key: &str) -> Option<&str> {
        Frozen::get(self, key)
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        Box::new(self.iter_under(|_| false))
    }

    fn bytes_bound(&self) -> usize {
        self.bytes
    }
}

impl Derived for Kv {
    fn get(&self, key: &str) -> Option<&str> {
        Kv::get(self, key)
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        Kv::iter(self)
    }

    fn bytes_bound(&self) -> usize {
        self.base.bytes
    }
}

/// Keys and values packed into one string, for a store that no longer changes: a connection's
/// own keys (`conn.layer`, `http.host`, `tls.sni`, ...), read under each of its requests'.
/// Five keys held a table of eight slots and a string per value, about 550 bytes for the
/// connection's whole life; packed they take their own length and two words per key. Looked
/// up by a scan, which for a handful of short keys costs less than hashing.
#[derive(Debug, Clone, Default)]
struct Packed {
    text: Box<str>,
    /// Where each key, then its value, ends in `text`.
    ends: Box<[u32]>,
}

impl Packed {
    /// Packs what `pairs` yields (called twice: to size, then to fill).
    fn of<'a, I>(pairs: impl Fn() -> I) -> Self
    where
        I: Iterator<Item = (&'a str, &'a str)>,
    {
        let (mut len, mut n) = (0, 0);
        for (k, v) in pairs() {
            len += k.len() + v.len();
            n += 1;
        }
        let mut text = String::with_capacity(len);
        let mut ends = Vec::with_capacity(2 * n);
        for (k, v) in pairs() {
            for part in [k, v] {
                text.push_str(part);
                // A store holds at most MAX_KV_BYTES, far below u32::MAX.
                ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
            }
        }
        Self {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// Where each key starts, where it ends and its value begins, and where the value ends.
    fn spans(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let mut start = 0usize;
        self.ends.chunks_exact(2).map(move |e| {
            let span = (start, e[0] as usize, e[1] as usize);
            start = span.2;
            span
        })
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.spans().map(|(k, v, end)| {
            let text = &self.text;
            (
                text.get(k..v).unwrap_or_default(),
                text.get(v..end).unwrap_or_default(),
            )
        })
    }

    /// Compares lengths first: most keys looked up here are not here.
    fn get(&self, key: &str) -> Option<&str> {
        let (_, v, end) = self.spans().find(|&(k, v, _)| {
            v - k == key.len() && self.text.as_bytes().get(k..v) == Some(key.as_bytes())
        })?;
        self.text.get(v..end)
    }

    fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl Kv {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with room for `n` keys.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            map: Map::with_capacity_and_hasher(n, Default::default()),
            ..Self::default()
        }
    }

    /// A store of `derived`'s keys alone (which count towards the cap), with room for `n`
    /// keys of its own before its table grows.
    pub fn derived(derived: Arc<dyn Derived>, n: usize) -> Self {
        Self {
            map: Map::with_capacity_and_hasher(n, Default::default()),
            base: Frozen {
                bytes: derived.bytes_bound(),
                derived: Some(derived),
                ..Frozen::default()
            },
        }
    }

    /// An empty store that reads through to `parent` (which counts towards the cap), with
    /// room for the keys of one HTTP request (`req.*`, `res.status`) so filling it does not
    /// grow the table twice.
    pub fn layered(parent: Arc<dyn Derived>) -> Self {
        Self::layer(parent, None)
    }

    /// [`Kv::layered`] with `derived`'s keys between its own and the parent's.
    pub fn layered_over(parent: Arc<dyn Derived>, derived: Arc<dyn Derived>) -> Self {
        Self::layer(parent, Some(derived))
    }

    fn layer(parent: Arc<dyn Derived>, derived: Option<Arc<dyn Derived>>) -> Self {
        Self {
            map: Map::with_capacity_and_hasher(LAYER_KEYS, Default::default()),
            base: Frozen {
                packed: Packed::default(),
                bytes: parent.bytes_bound() + derived.as_deref().map_or(0, Derived::bytes_bound),
                parent: Some(parent),
                derived,
            },
        }
    }

    /// This store as it is, for good: its keys packed, its table dropped.
    pub fn freeze(mut self) -> Frozen {
        self.pack();
        self.base
    }

    /// Sets a key; refused (false, logged) when it would pass [`MAX_KV_BYTES`].
    pub fn set(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> bool {
        self.put(key.into(), Cow::Owned(value.into()))
    }

    /// Sets a key to a value that lives for the whole program, without copying it.
    pub fn set_static(&mut self, key: &'static str, value: &'static str) -> bool {
        self.put(Cow::Borrowed(key), Cow::Borrowed(value))
    }

    fn put(&mut self, key: Cow<'static, str>, value: Cow<'static, str>) -> bool {
        let add = key.len() + value.len();
        // One lookup for both the size check and the write.
        match self.map.entry(key) {
            Entry::Occupied(mut e) => {
                let new_total = self.base.bytes - (e.key().len() + e.get().len()) + add;
                if new_total > MAX_KV_BYTES {
                    tracing::warn!(key = %e.key(), "KV store full ({MAX_KV_BYTES} bytes); write dropped");
                    return false;
                }
                self.base.bytes = new_total;
                e.insert(value);
            }
            Entry::Vacant(e) => {
                let new_total = self.base.bytes + add;
                if new_total > MAX_KV_BYTES {
                    tracing::warn!(key = %e.key(), "KV store full ({MAX_KV_BYTES} bytes); write dropped");
                    return false;
                }
                self.base.bytes = new_total;
                e.insert(value);
            }
        }
        true
    }

    /// Drops this store's own keys that `drop` names, and the room they left.
    pub fn remove_where(&mut self, drop: impl Fn(&str) -> bool) {
        let mut freed = 0;
        self.map.retain(|k, v| {
            let gone = drop(k);
            if gone {
                freed += k.len() + v.len();
            }
            !gone
        });
        if freed > 0 {
            self.map.shrink_to_fit();
        }
        if self.base.packed.iter().any(|(k, _)| drop(k)) {
            let gone = self.base.packed.iter().filter(|(k, _)| drop(k));
            freed += gone.map(|(k, v)| k.len() + v.len()).sum::<usize>();
            self.base.packed = Packed::of(|| self.base.packed.iter().filter(|(k, _)| !drop(k)));
        }
        self.base.bytes -= freed;
    }

    /// Packs the own keys for good (see [`Packed`]), for a store that stops changing here (a
    /// connection's KV as its requests start to read it). A key set afterwards shadows a
    /// packed one, whose bytes still count towards the cap.
    pub fn pack(&mut self) {
        if self.map.is_empty() {
            return;
        }
        let map = std::mem::take(&mut self.map);
        let old = std::mem::take(&mut self.base.packed);
        self.base.packed = Packed::of(|| {
            let own = map.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
            own.chain(old.iter().filter(|(k, _)| !map.contains_key(*k)))
        });
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        if let Some(v) = self.map.get(key) {
            return Some(v);
        }
        self.base.get(key)
    }

    /// Every key once: own values first, then the derived and the parent's they do not
    /// shadow.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        let own = self.map.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
        Box::new(own.chain(self.base.iter_under(|k| self.map.contains_key(k))))
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.base.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_drops_writes_and_replacement_is_accounted() {
        let mut kv = Kv::new();
        assert!(kv.set("a", "x".repeat(MAX_KV_BYTES - 10)));
        assert!(!kv.set("b", "y".repeat(20)), "over the cap");
        assert!(kv.set("a", "small"), "replacing frees the old value");
        assert!(kv.set("b", "y".repeat(20)));
        assert_eq!(kv.get("a"), Some("small"));
        // Static values count the same and replace owned ones.
        assert!(kv.set_static("a", "static"));
        assert_eq!(kv.get("a"), Some("static"));
        assert!(kv.set("big", "x".repeat(MAX_KV_BYTES - 40)));
        assert!(
            !kv.set_static("c", "0123456789"),
            "static values count towards the cap"
        );
    }

    #[test]
    fn layers_read_through_and_shadow() {
        let mut base = Kv::new();
        base.set("conn.ip", "10.0.0.1");
        base.set("req.path", "/old");
        let mut kv = Kv::layered(Arc::new(base));
        kv.set("req.path", "/new");
        assert_eq!(kv.get("conn.ip"), Some("10.0.0.1"));
        assert_eq!(kv.get("req.path"), Some("/new"));
        assert_eq!(kv.len(), 2);
        let mut keys: Vec<_> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
        keys.sort();
        assert_eq!(keys, ["conn.ip=10.0.0.1", "req.path=/new"]);
        assert!(!kv.is_empty());
    }

    /// A packed store reads as its table did, under keys set later and over its parent's;
    /// its table is gone, and dropping packed keys gives their room back.
    #[test]
    fn packed_keys_read_as_before_and_free_the_table() {
        let mut parent = Kv::new();
        parent.set("conn.ip", "10.0.0.1");
        parent.set("http.host", "parent.test");
        let mut kv = Kv::layered(Arc::new(parent));
        kv.set("http.host", "own.test");
        kv.set_static("conn.layer", "l4p");
        kv.set("plugin.x", "1");
        kv.set("tls.sni", "é.test");
        let listed = |kv: &Kv| {
            let mut v: Vec<_> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
            v.sort();
            v
        };
        let before = listed(&kv);
        let bytes = kv.base.bytes;
        kv.pack();
        assert_eq!(kv.map.capacity(), 0, "the table is freed");
        assert_eq!(kv.base.bytes, bytes);
        assert_eq!(listed(&kv), before);
        assert_eq!(
            kv.get("http.host"),
            Some("own.test"),
            "own over the parent's"
        );
        assert_eq!(kv.get("tls.sni"), Some("é.test"));
        assert_eq!(kv.get("conn.ip"), Some("10.0.0.1"));
        assert_eq!(kv.get("conn.i"), None);
        kv.remove_where(|k| k.starts_with("plugin."));
        assert_eq!(kv.get("plugin.x"), None);
        assert_eq!(kv.base.bytes, bytes - "plugin.x1".len());
        kv.set("http.host", "later.test");
        assert_eq!(
            kv.get("http.host"),
            Some("later.test"),
            "set after packing shadows"
        );
        assert_eq!(kv.iter().filter(|(k, _)| *k == "http.host").count(), 1);
        kv.pack();
        assert_eq!(kv.get("http.host"), Some("later.test"));
        assert_eq!(kv.len(), 4);
        assert!(!kv.is_empty());
        // Frozen (as a connection's context holds it), it reads the same under a new layer,
        // and its count goes with it.
        let listed_before = listed(&kv);
        let (bytes, frozen) = (kv.base.bytes, Arc::new(kv.freeze()));
        let mut over = Kv::layered(frozen.clone());
        assert_eq!(over.base.bytes, bytes);
        assert_eq!(listed(&over), listed_before);
        assert_eq!(over.get("conn.ip"), Some("10.0.0.1"), "the parent's parent");
        over.set("tls.sni", "over.test");
        assert_eq!(over.get("tls.sni"), Some("over.test"));
        assert_eq!(frozen.get("tls.sni"), Some("é.test"));
        assert_eq!(over.len(), 4);
    }

    /// Keys worked out once, on the first read, by a store made over them.
    #[derive(Debug, Default)]
    struct Counted {
        made: std::sync::atomic::AtomicUsize,
        keys: std::sync::OnceLock<Kv>,
    }

    impl Counted {
        fn keys(&self) -> &Kv {
            self.keys.get_or_init(|| {
                self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut kv = Kv::new();
                kv.set("conn.ip", "10.0.0.1");
                kv.set_static("conn.layer", "l4");
                kv
            })
        }
    }

    impl Derived for Counted {
        fn get(&self, key: &str) -> Option<&str> {
            matches!(key, "conn.ip" | "conn.layer")
                .then(|| self.keys().get(key))
                .flatten()
        }

        fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
            self.keys().iter()
        }

        fn bytes_bound(&self) -> usize {
            100
        }
    }

    #[test]
    fn derived_keys_are_made_on_first_read_and_shadowed_by_own_and_layered_keys() {
        let derived = Arc::new(Counted::default());
        let mut conn = Kv::derived(derived.clone(), 4);
        conn.set_static("conn.layer", "l7");
        assert_eq!(derived.made.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(conn.get("conn.layer"), Some("l7"), "own keys first");
        let mut req = Kv::layered(Arc::new(conn));
        req.set("req.path", "/");
        assert_eq!(req.get("req.path"), Some("/"));
        assert_eq!(req.get("req.query"), None);
        assert_eq!(derived.made.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(req.get("conn.ip"), Some("10.0.0.1"));
        assert_eq!(req.get("conn.ip"), Some("10.0.0.1"));
        assert_eq!(derived.made.load(std::sync::atomic::Ordering::Relaxed), 1);
        let mut keys: Vec<_> = req.iter().map(|(k, v)| format!("{k}={v}")).collect();
        keys.sort();
        assert_eq!(keys, ["conn.ip=10.0.0.1", "conn.layer=l7", "req.path=/"]);
        // The bound counts towards the cap before any read.
        let mut fresh = Kv::derived(Arc::new(Counted::default()), 0);
        assert!(!fresh.set("big", "x".repeat(MAX_KV_BYTES - 100)));
        assert!(fresh.set("big", "x".repeat(MAX_KV_BYTES - 110)));
    }

    /// A request's derived keys sit between its own and its connection's.
    #[test]
    fn derived_keys_of_a_layer_shadow_the_parent_and_own_keys_shadow_them() {
        let mut conn = Kv::new();
        conn.set("conn.ip", "10.0.0.2");
        conn.set("conn.layer", "l7");
        let mut kv = Kv::layered_over(Arc::new(conn), Arc::new(Counted::default()));
        assert_eq!(
            kv.get("conn.ip"),
            Some("10.0.0.1"),
            "derived over the parent"
        );
        kv.set("conn.ip", "own");
        assert_eq!(kv.get("conn.ip"), Some("own"));
        let mut keys: Vec<_> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
        keys.sort();
        assert_eq!(keys, ["conn.ip=own", "conn.layer=l4"]);
    }
}
