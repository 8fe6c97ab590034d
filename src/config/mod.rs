//! The config dir: files, formats, validation, the published snapshot and hot reload.

pub mod acme;
pub mod compat;
pub mod convert;
pub mod diff;
pub mod error;
pub mod format;
pub mod lazycert;
pub mod legacy;
pub mod load;
pub mod nodes;
pub mod plugins;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::flow::step::Flow;

/// Transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A listener is keyed by port and transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for ListenerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.proto.as_str(), self.port)
    }
}

/// What a listener file holds.
#[derive(Debug, Clone)]
pub enum ListenerDoc {
    Flow(Box<Flow>),
    Legacy(legacy::Rules),
}

/// A listener: its flow or rules, and its connection options.
#[derive(Debug, Clone)]
pub struct Listener {
    pub mode: ListenerDoc,
    /// Accept a PROXY protocol header from these balancers (ours; key `proxy_protocol`).
    pub accept_proxy: Option<AcceptProxy>,
    /// UDP only (key `per_datagram`): run the flow for every datagram, as Vane 0.9.2 did,
    /// instead of once per session.
    pub per_datagram: bool,
}

impl Listener {
    /// Whether its connections may be handed up a layer (an `internal.transport.upgrade` in
    /// its flow), where the client's first data (a request, a ClientHello) is answered at
    /// once and the answer can carry the ACK.
    pub fn upgrades(&self) -> bool {
        matches!(&self.mode, ListenerDoc::Flow(f) if f.upgrades)
    }
}

/// `proxy_protocol: { trusted: [CIDR, ...], required: true }` in a TCP listener file.
#[derive(Debug, Clone)]
pub struct AcceptProxy {
    pub trusted: Vec<crate::l4p::proxy_protocol::Cidr>,
    /// When true, a trusted peer that sends no valid header is refused.
    pub required: bool,
}

impl AcceptProxy {
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}

/// One loaded entry with the parsed document it came from (for change detection).
#[derive(Debug)]
pub struct Entry<T> {
    /// Path relative to the config dir.
    pub file: String,
    pub source: Value,
    pub doc: T,
}

/// Everything loaded from the config dir; published whole, read lock-free.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub generation: u64,
    pub listeners: BTreeMap<ListenerKey, Arc<Entry<Listener>>>,
    pub resolvers: BTreeMap<String, Arc<Entry<Flow>>>,
    pub applications: BTreeMap<String, Arc<Entry<Flow>>>,
    pub nodes: Arc<Entry<nodes::Nodes>>,
    pub plugins: Arc<Entry<plugins::ExternalPlugins>>,
    /// `acme.<ext>`: certificates vane obtains itself.
    pub acme: Arc<Entry<acme::AcmeDoc>>,
    /// `lazycert.<ext>`: 0.9.2's LazyCert integration (`None` doc when absent).
    pub lazycert: Arc<Entry<Option<lazycert::LazyCert>>>,
    /// Change stamp of `certs/` (the certs registry reloads when it moves).
    pub certs_stamp: u64,
    /// Whether any resolver or application flow may read the `http.*` keys of a plaintext
    /// request head; when none does, the L4+ stage does not parse the head for them (a tenth
    /// of the L4+ stage's work for a new HTTP connection).
    pub reads_http_head: bool,
}

impl<T: Default> Default for Entry<T> {
    fn default() -> Self {
        Self {
            file: String::new(),
            source: Value::Null,
            doc: T::default(),
        }
    }
}
