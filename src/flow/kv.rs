//! The KV store that follows a connection: string keys to string values, with a size cap.

use std::collections::HashMap;

/// Total bytes of keys and values one store may hold; further writes are dropped.
pub const MAX_KV_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Default)]
pub struct Kv {
    map: HashMap<String, String>,
    bytes: usize,
}

impl Kv {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a key; refused (false, logged) when it would pass [`MAX_KV_BYTES`].
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> bool {
        let key = key.into();
        let value = value.into();
        let old = self.map.get(&key).map_or(0, |v| key.len() + v.len());
        let new_total = self.bytes - old + key.len() + value.len();
        if new_total > MAX_KV_BYTES {
            tracing::warn!(key = %key, "KV store full ({MAX_KV_BYTES} bytes); write dropped");
            return false;
        }
        self.bytes = new_total;
        self.map.insert(key, value);
        true
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
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
    }
}
