//! The fixed names of the tree, in one typed list: `GET /actors`, the metrics, the chaos
//! routes and the config actor's "who must refresh" all use these, so a rename cannot
//! silently stop a refresh. Listener children are the only dynamic names
//! (`listeners/tcp:PORT`).

/// A fixed actor of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Name {
    Root,
    Config,
    Registries,
    Nodes,
    Certs,
    Plugins,
    Health,
    Acme,
    Memory,
    Quic,
    Listeners,
    Management,
    Metrics,
}

impl Name {
    pub const ALL: [Name; 13] = [
        Name::Root,
        Name::Config,
        Name::Registries,
        Name::Nodes,
        Name::Certs,
        Name::Plugins,
        Name::Health,
        Name::Acme,
        Name::Memory,
        Name::Quic,
        Name::Listeners,
        Name::Management,
        Name::Metrics,
    ];

    /// The tree name (`registries/certs`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Name::Root => "root",
            Name::Config => "config",
            Name::Registries => "registries",
            Name::Nodes => "registries/nodes",
            Name::Certs => "registries/certs",
            Name::Plugins => "registries/plugins",
            Name::Health => "registries/health",
            Name::Acme => "registries/acme",
            Name::Memory => "memory",
            Name::Quic => "quic",
            Name::Listeners => "listeners",
            Name::Management => "management",
            Name::Metrics => "metrics",
        }
    }

    /// The supervisor it runs under (`None` for the root).
    pub const fn parent(self) -> Option<Name> {
        match self {
            Name::Root => None,
            Name::Nodes | Name::Certs | Name::Plugins | Name::Health | Name::Acme => {
                Some(Name::Registries)
            }
            _ => Some(Name::Root),
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_children_sit_under_their_parent() {
        let mut seen = std::collections::HashSet::new();
        for n in Name::ALL {
            assert!(seen.insert(n.as_str()), "{n} twice");
            if let Some(p) = n.parent() {
                let nested = n.as_str().split_once('/').map(|(head, _)| head);
                if p != Name::Root {
                    assert_eq!(nested, Some(p.as_str()), "{n} under {p}");
                }
            }
        }
    }
}
