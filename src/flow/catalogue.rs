//! The one catalogue of built-in plugins: names, roles, layers, parameters and branches.
//!
//! The validator and the executor both read this table, so what loads is exactly what runs.

use std::fmt;

/// How deep a flow inspects the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Transport: a TCP connection or UDP session (listener flows).
    L4,
    /// Carrier: TLS / QUIC / plaintext handshake inspected, not terminated (resolver flows).
    L4Plus,
    /// Application: HTTP requests (application flows).
    L7,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::L4 => "L4",
            Layer::L4Plus => "L4+",
            Layer::L7 => "L7",
        }
    }

    /// Value of the `conn.layer` key.
    pub fn kv_name(self) -> &'static str {
        match self {
            Layer::L4 => "l4",
            Layer::L4Plus => "l4p",
            Layer::L7 => "l7",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Declared type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Str,
    Int,
    Bool,
    Map,
    Array,
    Any,
}

impl Ty {
    pub fn name(self) -> &'static str {
        match self {
            Ty::Str => "string",
            Ty::Int => "integer",
            Ty::Bool => "boolean",
            Ty::Map => "map",
            Ty::Array => "list",
            Ty::Any => "any value",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Returns a branch and may store KV; the flow continues.
    Middleware,
    /// Ends the flow at its layer (proxy, abort, upgrade, respond).
    Terminator,
}

/// What the executor dispatches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Detect,
    Match,
    RateSec,
    RateMin,
    Abort,
    Proxy,
    ProxyNode,
    ProxyDomain,
    Upgrade,
    Upstream,
    Cgi,
    Static,
    Response,
}

impl Builtin {
    /// Middleware that works on the HTTP exchange (request and response) of an L7 flow.
    pub fn is_http_driver(self) -> bool {
        matches!(self, Builtin::Upstream | Builtin::Cgi | Builtin::Static)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
}

#[derive(Debug)]
pub struct PluginSpec {
    pub name: &'static str,
    pub kind: Builtin,
    pub role: Role,
    pub layers: &'static [Layer],
    pub params: &'static [ParamSpec],
    pub branches: &'static [&'static str],
    /// Application protocols the plugin is limited to (`httpx` for the HTTP drivers).
    pub protocols: Option<&'static [&'static str]>,
}

impl PluginSpec {
    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
}

const fn p(name: &'static str, ty: Ty, required: bool) -> ParamSpec {
    ParamSpec { name, ty, required }
}

const ALL: &[Layer] = &[Layer::L4, Layer::L4Plus, Layer::L7];
const STREAM: &[Layer] = &[Layer::L4, Layer::L4Plus];
const APP: &[Layer] = &[Layer::L7];
const BOOL_BRANCHES: &[&str] = &["true", "false"];
const DRIVER_BRANCHES: &[&str] = &["success", "failure"];
const HTTPX: Option<&[&str]> = Some(&["httpx"]);

/// Extra parameters of the proxy terminators (ours): how to pick among several addresses.
const BALANCE: [ParamSpec; 2] = [p("strategy", Ty::Str, false), p("hash_key", Ty::Str, false)];
/// Extra parameter of the proxy terminators (ours): send a PROXY protocol header (`v1`, `v2`).
const SEND_PROXY: ParamSpec = p("proxy_protocol", Ty::Str, false);

/// Every built-in plugin of Vane 0.9.2 (plus our optional balancing parameters).
pub static BUILTINS: &[PluginSpec] = &[
    PluginSpec {
        name: "internal.protocol.detect",
        kind: Builtin::Detect,
        role: Role::Middleware,
        layers: ALL,
        params: &[p("method", Ty::Str, true), p("payload", Ty::Str, true)],
        branches: BOOL_BRANCHES,
        protocols: None,
    },
    PluginSpec {
        name: "internal.common.match",
        kind: Builtin::Match,
        role: Role::Middleware,
        layers: ALL,
        params: &[
            p("left", Ty::Str, true),
            p("right", Ty::Str, true),
            p("operator", Ty::Str, false),
        ],
        branches: BOOL_BRANCHES,
        protocols: None,
    },
    PluginSpec {
        name: "internal.common.ratelimit.sec",
        kind: Builtin::RateSec,
        role: Role::Middleware,
        layers: ALL,
        params: &[p("key", Ty::Str, true), p("limit", Ty::Int, true)],
        branches: BOOL_BRANCHES,
        protocols: None,
    },
    PluginSpec {
        name: "internal.common.ratelimit.min",
        kind: Builtin::RateMin,
        role: Role::Middleware,
        layers: ALL,
        params: &[p("key", Ty::Str, true), p("limit", Ty::Int, true)],
        branches: BOOL_BRANCHES,
        protocols: None,
    },
    PluginSpec {
        name: "internal.transport.abort",
        kind: Builtin::Abort,
        role: Role::Terminator,
        layers: ALL,
        params: &[],
        branches: &[],
        protocols: None,
    },
    PluginSpec {
        name: "internal.transport.proxy",
        kind: Builtin::Proxy,
        role: Role::Terminator,
        layers: STREAM,
        params: &[
            p("target.ip", Ty::Str, true),
            p("target.port", Ty::Int, true),
            SEND_PROXY,
        ],
        branches: &[],
        protocols: None,
    },
    PluginSpec {
        name: "internal.transport.proxy.node",
        kind: Builtin::ProxyNode,
        role: Role::Terminator,
        layers: STREAM,
        params: &[
            p("target.node", Ty::Str, true),
            p("target.port", Ty::Int, true),
            BALANCE[0],
            BALANCE[1],
            SEND_PROXY,
        ],
        branches: &[],
        protocols: None,
    },
    PluginSpec {
        name: "internal.transport.proxy.domain",
        kind: Builtin::ProxyDomain,
        role: Role::Terminator,
        layers: STREAM,
        params: &[
            p("target.domain", Ty::Str, true),
            p("target.port", Ty::Int, true),
            BALANCE[0],
            BALANCE[1],
            SEND_PROXY,
        ],
        branches: &[],
        protocols: None,
    },
    PluginSpec {
        name: "internal.transport.upgrade",
        kind: Builtin::Upgrade,
        role: Role::Terminator,
        layers: STREAM,
        params: &[p("protocol", Ty::Str, true), p("cert", Ty::Str, false)],
        branches: &[],
        protocols: None,
    },
    PluginSpec {
        name: "internal.driver.upstream",
        kind: Builtin::Upstream,
        role: Role::Middleware,
        layers: APP,
        params: &[
            p("url_prefix", Ty::Str, true),
            p("path", Ty::Str, false),
            p("query", Ty::Str, false),
            p("method", Ty::Str, false),
            p("version", Ty::Str, false),
            p("skip_verify", Ty::Bool, false),
            p("websocket", Ty::Bool, false),
        ],
        branches: DRIVER_BRANCHES,
        protocols: HTTPX,
    },
    PluginSpec {
        name: "internal.driver.cgi",
        kind: Builtin::Cgi,
        role: Role::Middleware,
        layers: APP,
        params: &[
            p("command", Ty::Str, true),
            p("script", Ty::Str, false),
            p("timeout", Ty::Int, false),
            p("method", Ty::Str, false),
            p("uri", Ty::Str, true),
            p("query", Ty::Str, false),
            p("remote_addr", Ty::Str, false),
            p("remote_port", Ty::Str, false),
            p("server_port", Ty::Str, false),
            p("server_name", Ty::Str, false),
            p("doc_root", Ty::Str, false),
            p("path_info", Ty::Str, false),
            p("script_name", Ty::Str, false),
        ],
        branches: DRIVER_BRANCHES,
        protocols: HTTPX,
    },
    PluginSpec {
        name: "internal.driver.static",
        kind: Builtin::Static,
        role: Role::Middleware,
        layers: APP,
        params: &[
            p("root", Ty::Str, true),
            p("uri", Ty::Str, true),
            p("index", Ty::Str, false),
            p("spa", Ty::Bool, false),
            p("browse", Ty::Bool, false),
            p("precompress", Ty::Bool, false),
            p("symlink", Ty::Bool, false),
        ],
        branches: &["success", "not_found", "failure"],
        protocols: HTTPX,
    },
    PluginSpec {
        name: "internal.terminator.response",
        kind: Builtin::Response,
        role: Role::Terminator,
        layers: APP,
        params: &[
            p("status", Ty::Int, false),
            p("headers", Ty::Map, false),
            p("body", Ty::Any, false),
        ],
        branches: &[],
        protocols: None,
    },
];

/// Looks a built-in up by name; `internal.transport.proxy.transparent` is an alias.
pub fn builtin(name: &str) -> Option<&'static PluginSpec> {
    let name = if name == "internal.transport.proxy.transparent" {
        "internal.transport.proxy"
    } else {
        name
    };
    BUILTINS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_and_layers() {
        let p = builtin("internal.transport.proxy.transparent").expect("alias");
        assert_eq!(p.kind, Builtin::Proxy);
        assert!(!p.layers.contains(&Layer::L7));
        assert!(
            builtin("internal.l7.fetch_upstream").is_none(),
            "old names are not valid"
        );
        assert_eq!(
            builtin("internal.driver.static").map(|s| s.branches.len()),
            Some(3)
        );
    }
}
