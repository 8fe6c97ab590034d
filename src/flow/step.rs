//! A compiled flow: the validated tree of steps the executor walks.

use std::sync::Arc;

use serde_json::Value;

use super::catalogue::{Layer, PluginSpec};
use super::template::Template;
use crate::config::plugins::ExternalPlugin;

/// Which plugin a step runs.
#[derive(Debug, Clone)]
pub enum PluginRef {
    Builtin(&'static PluginSpec),
    External(Arc<ExternalPlugin>),
}

/// A parameter value with its templates parsed.
#[derive(Debug, Clone)]
pub enum Input {
    /// A string containing placeholders.
    Text(Template),
    /// Anything without placeholders, used as is.
    Lit(Value),
    List(Vec<Input>),
    Map(Vec<(String, Input)>),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub plugin: PluginRef,
    /// The name as written in the file (aliases kept, for logs and scoped keys).
    pub name: String,
    /// `name` with dots replaced by underscores, used in flow paths and scoped keys.
    pub sanitized: String,
    /// The flow path to this step (each step's `sanitized` name and the branch taken, joined
    /// with dots; empty at the root): where the keys an external plugin stores are scoped.
    /// Worked out at load: the flow is a tree, so it is the same on every run.
    pub trail: String,
    pub input: Vec<(String, Input)>,
    pub output: Vec<(String, Step)>,
    /// Where the step sits in its file, for run-time errors.
    pub at: String,
    /// Pre-compiled regex for `internal.common.match` with a literal pattern.
    pub regex: Option<Arc<regex::Regex>>,
    /// `vane_plugin_duration_seconds{plugin}` handle, looked up once per step, not per run.
    pub timer: std::sync::OnceLock<metrics::Histogram>,
    /// Bodies this step's templates read ([`REQ_BODY`], [`RES_BODY`]); they are buffered
    /// before its inputs resolve.
    pub bodies: u8,
    /// Literal parameters parsed once at load, so a run does not parse them again.
    pub fixed: Fixed,
}

/// The typed form of a step's literal (non-templated) parameters, filled in by validation
/// after it checked them. A templated parameter stays `None` and is parsed per run.
#[derive(Debug, Clone, Default)]
pub struct Fixed {
    /// `proxy_protocol` (`v1` | `v2`).
    pub proxy_header: Option<crate::l4p::proxy_protocol::Version>,
    /// `strategy` of the node and domain proxies.
    pub strategy: Option<crate::upstream::balance::Strategy>,
    /// `target.port`.
    pub port: Option<u16>,
    /// `target.ip` of `internal.transport.proxy`.
    pub ip: Option<std::net::IpAddr>,
    /// `payload` of `internal.protocol.detect`, decoded from hex.
    pub payload: Option<Vec<u8>>,
    /// `operator` of `internal.common.match` when literal or absent (`==`); the inner `None`
    /// is an operator nobody knows, which always yields `false`.
    pub operator: Option<Option<crate::plugins::matcher::Operator>>,
    /// `limit` of the rate limiters.
    pub limit: Option<u64>,
}

/// A template reads `req.body` or `req.body_hex`.
pub const REQ_BODY: u8 = 1;
/// A template reads `res.body` or `res.body_hex`.
pub const RES_BODY: u8 = 2;

/// Which bodies the text of a step's inputs reads.
pub fn bodies_read(input_text: &str) -> u8 {
    let mut m = 0;
    if input_text.contains("req.body") {
        m |= REQ_BODY;
    }
    if input_text.contains("res.body") {
        m |= RES_BODY;
    }
    m
}

impl Step {
    /// Whether running this step may wait: an HTTP driver, an external plugin, a rate limit
    /// (which may ask a shared store), or a step that reads a body it must first buffer.
    pub fn may_wait(&self) -> bool {
        self.bodies != 0
            || match &self.plugin {
                PluginRef::External(_) => true,
                PluginRef::Builtin(spec) => {
                    spec.kind.is_http_driver()
                        || matches!(
                            spec.kind,
                            crate::flow::catalogue::Builtin::RateSec
                                | crate::flow::catalogue::Builtin::RateMin
                        )
                }
            }
    }

    pub fn record_duration(&self, secs: f64) {
        self.timer.get_or_init(|| metrics::histogram!("vane_plugin_duration_seconds", "plugin" => self.name.clone())).record(secs);
    }
}

impl Step {
    /// True when this step or any step below it matches `pred`.
    pub fn any(&self, pred: &dyn Fn(&Step) -> bool) -> bool {
        pred(self) || self.output.iter().any(|(_, s)| s.any(pred))
    }

    pub fn branch(&self, name: &str) -> Option<&Step> {
        self.output.iter().find(|(b, _)| b == name).map(|(_, s)| s)
    }

    pub fn input(&self, name: &str) -> Option<&Input> {
        self.input.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// A validated flow document.
#[derive(Debug, Clone)]
pub struct Flow {
    pub root: Step,
    pub layer: Layer,
    /// Protocol context: `tcp`/`udp` for listeners, the resolver or application name otherwise.
    pub protocol: String,
    /// Raw-payload keys (`tls.clienthello`, `quic.initial`) some template reads; they are only
    /// hex-encoded into the KV when listed here.
    pub raw_keys: Vec<&'static str>,
    /// Whether anything in the flow reads the KV store (a template, an external plugin, or an
    /// upgrade that carries it on); when not, the L4 layer skips building it.
    pub reads_kv: bool,
    /// Whether a template reads `req.peek_buffer_hex`; when not, TCP connections are not peeked.
    pub reads_peek: bool,
    /// Whether a template may read a key of the plaintext request head the L4+ stage finds
    /// (`http.method`, `http.path`, `http.host`); when no resolver or application flow does,
    /// the head is not parsed for them ([`crate::config::Snapshot::reads_http_head`]).
    pub reads_http_head: bool,
    /// Whether some step hands the connection up a layer (`internal.transport.upgrade`).
    pub upgrades: bool,
    /// Whether some step may wait ([`Step::may_wait`]); a flow where none does runs without
    /// a deadline timer, as nothing in it can be late.
    pub waits: bool,
    /// The decision of a flow that is one terminator with literal inputs (a listener's
    /// `internal.transport.upgrade { protocol: http }`), made at load: a run only returns it.
    pub constant: Option<super::exec::Decision>,
}

impl Flow {
    pub fn mentions(&self, key: &str) -> bool {
        self.raw_keys.contains(&key)
    }
}
