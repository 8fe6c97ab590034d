//! What differs between two snapshots, by owner: the config actor tells exactly those owners
//! to refresh, and the reload summary names them.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Entry, ListenerKey, Snapshot};

/// What differs between two snapshots, by owner.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub listeners_added: Vec<ListenerKey>,
    pub listeners_removed: Vec<ListenerKey>,
    pub listeners_changed: Vec<ListenerKey>,
    pub resolvers: Vec<String>,
    pub applications: Vec<String>,
    pub nodes: bool,
    pub plugins: bool,
    pub certs: bool,
    /// `acme.<ext>` or `lazycert.<ext>` (both run by `registries/acme`).
    pub acme: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    pub fn listeners(&self) -> bool {
        !(self.listeners_added.is_empty()
            && self.listeners_removed.is_empty()
            && self.listeners_changed.is_empty())
    }
}

fn diff_map<K: Ord + Clone, T>(
    old: &BTreeMap<K, Arc<Entry<T>>>,
    new: &BTreeMap<K, Arc<Entry<T>>>,
) -> (Vec<K>, Vec<K>, Vec<K>) {
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| !Arc::ptr_eq(o, v)))
        .map(|(k, _)| k.clone())
        .collect();
    (added, removed, changed)
}

/// Compares two snapshots. Entries are shared when unchanged, so this is pointer equality.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Changes {
    let (la, lr, lc) = diff_map(&old.listeners, &new.listeners);
    let (ra, rr, rc) = diff_map(&old.resolvers, &new.resolvers);
    let (aa, ar, ac) = diff_map(&old.applications, &new.applications);
    Changes {
        listeners_added: la,
        listeners_removed: lr,
        listeners_changed: lc,
        resolvers: ra.into_iter().chain(rr).chain(rc).collect(),
        applications: aa.into_iter().chain(ar).chain(ac).collect(),
        nodes: !Arc::ptr_eq(&old.nodes, &new.nodes) && old.nodes.source != new.nodes.source,
        plugins: !Arc::ptr_eq(&old.plugins, &new.plugins)
            && old.plugins.source != new.plugins.source,
        certs: old.certs_stamp != new.certs_stamp,
        acme: (!Arc::ptr_eq(&old.acme, &new.acme) && old.acme.source != new.acme.source)
            || (!Arc::ptr_eq(&old.lazycert, &new.lazycert)
                && old.lazycert.source != new.lazycert.source),
    }
}
