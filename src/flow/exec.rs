//! The executor: walks a compiled flow from its root, one branch per step, until a terminator
//! decides what happens to the connection. Terminators are returned as a [`Decision`]; the
//! layer that owns the connection carries it out.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::Instrument;

use super::catalogue::Builtin;
use super::kv::Kv;
use super::step::{Flow, Input, PluginRef, Step};
use super::Env;
use crate::plugins::external::CallError;
use crate::plugins::{detect, matcher};
use crate::ticks::Late;
use crate::upstream::balance::Strategy;

/// Where a proxy terminator sends the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Ip(std::net::SocketAddr),
    Node {
        node: String,
        port: u16,
        strategy: Strategy,
        key: Option<String>,
    },
    Domain {
        domain: String,
        port: u16,
        strategy: Strategy,
        key: Option<String>,
    },
}

/// A proxy terminator's target and how to open the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTo {
    pub upstream: Upstream,
    /// Send a PROXY protocol header first (`proxy_protocol: v1|v2`).
    pub header: Option<crate::l4p::proxy_protocol::Version>,
}

/// The terminator's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Proxy(ProxyTo),
    Abort,
    Upgrade {
        protocol: String,
        cert: Option<String>,
    },
    /// `internal.terminator.response` (L7): the resolved `status`, `headers` and `body`
    /// inputs; the HTTP layer builds the response from them.
    Respond {
        status: Option<Value>,
        headers: Option<Value>,
        body: Option<Value>,
    },
}

/// What an HTTP driver step returns: the branch and what to store under scoped keys.
pub type Driven = (Cow<'static, str>, Vec<(String, String)>);

/// The HTTP exchange an application flow works on (L7). The executor asks it for keys
/// computed on demand (`req.header.<name>`, ...) and hands it the HTTP drivers, which read
/// and fill the request and response it holds.
pub trait Exchange: Send {
    fn lookup(&self, key: &str) -> Option<String>;
    /// Buffers the bodies a step is about to read (`bodies`: [`super::step::REQ_BODY`] ...).
    fn buffer<'a>(
        &'a mut self,
        bodies: u8,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;
    fn drive<'a>(
        &'a mut self,
        kind: Builtin,
        inputs: Inputs<'a>,
        kv: &'a mut Kv,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Driven, DriverError>> + Send + 'a>>;
}

/// Why an HTTP driver step failed (the flow then fails with the step's path).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A parameter the driver needs is missing or unusable.
    #[error("parameter `{param}`: {msg}")]
    Param { param: &'static str, msg: String },
    /// The request could not be carried out (an upstream that cannot be reached, a file
    /// that cannot be read, a program that failed).
    #[error("{0}")]
    Failed(String),
}

impl DriverError {
    pub fn param(param: &'static str, msg: impl Into<String>) -> Self {
        Self::Param {
            param,
            msg: msg.into(),
        }
    }
}

impl From<String> for DriverError {
    fn from(msg: String) -> Self {
        Self::Failed(msg)
    }
}

impl From<&str> for DriverError {
    fn from(msg: &str) -> Self {
        Self::Failed(msg.to_string())
    }
}

type Extra<'a> = &'a dyn Exchange;

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{at}: flow stalled at `{plugin}`: branch `{branch}` not configured in output")]
    Stalled {
        at: String,
        plugin: String,
        branch: String,
    },
    #[error("{at}: parameter `{param}`: {msg}")]
    Param {
        at: String,
        param: String,
        msg: String,
    },
    #[error("{at}: {msg}")]
    Plugin { at: String, msg: String },
    #[error("Flow execution timed out after {0}s")]
    Timeout(u64),
}

/// A step's inputs with their templates rendered. Literal inputs are borrowed from the
/// compiled step, names too; only templates produce new values. The HTTP drivers read them
/// as they are: building a JSON map for each request cost an allocation per input and a
/// copy of each literal.
#[derive(Debug, Default)]
pub struct Inputs<'s>(Vec<(&'s str, Cow<'s, Value>)>);

impl<'s> Inputs<'s> {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// The input `name` when it is text.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// Each input, owned.
    pub fn into_map(self) -> serde_json::Map<String, Value> {
        self.0
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_owned()))
            .collect()
    }
}

impl<'s> FromIterator<(&'s str, Cow<'s, Value>)> for Inputs<'s> {
    fn from_iter<I: IntoIterator<Item = (&'s str, Cow<'s, Value>)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

struct Resolved<'s> {
    step: &'s Step,
    values: Inputs<'s>,
}

impl Resolved<'_> {
    fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    fn err(&self, param: &str, msg: impl Into<String>) -> FlowError {
        FlowError::Param {
            at: self.step.at.clone(),
            param: param.into(),
            msg: msg.into(),
        }
    }

    fn str(&self, name: &str) -> Result<&str, FlowError> {
        match self.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.err(name, format!("expected a string, got {other}"))),
            None => Err(self.err(name, "missing")),
        }
    }

    fn opt_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// An integer, or the text of a resolved template that parses as one.
    fn int(&self, name: &str) -> Result<i64, FlowError> {
        match self.get(name) {
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| self.err(name, format!("{n} is not an integer"))),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map_err(|_| self.err(name, format!("`{s}` is not an integer"))),
            Some(other) => Err(self.err(name, format!("expected an integer, got {other}"))),
            None => Err(self.err(name, "missing")),
        }
    }

    fn port(&self) -> Result<u16, FlowError> {
        if let Some(p) = self.step.fixed.port {
            return Ok(p);
        }
        let p = self.int("target.port")?;
        u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| self.err("target.port", format!("{p} is not a port")))
    }

    fn proxy_to(&self, upstream: Upstream) -> Result<Outcome, FlowError> {
        let header = match self.opt_str("proxy_protocol") {
            _ if self.step.fixed.proxy_header.is_some() => self.step.fixed.proxy_header,
            None => None,
            Some(v) => Some(
                crate::l4p::proxy_protocol::Version::parse(v)
                    .ok_or_else(|| self.err("proxy_protocol", format!("`{v}` is not v1 or v2")))?,
            ),
        };
        Ok(Outcome::Done(Decision::Proxy(ProxyTo { upstream, header })))
    }

    fn strategy(&self) -> Result<Strategy, FlowError> {
        if let Some(s) = self.step.fixed.strategy {
            return Ok(s);
        }
        match self.opt_str("strategy") {
            None => Ok(Strategy::Random),
            Some(s) => Strategy::parse(s)
                .ok_or_else(|| self.err("strategy", format!("unknown strategy `{s}`"))),
        }
    }
}

fn resolve<'s>(input: &'s Input, kv: &Kv, extra: Option<Extra<'_>>, max: usize) -> Cow<'s, Value> {
    match input {
        Input::Lit(v) => Cow::Borrowed(v),
        other => Cow::Owned(resolve_owned(other, kv, extra, max)),
    }
}

fn resolve_owned(input: &Input, kv: &Kv, extra: Option<Extra<'_>>, max: usize) -> Value {
    match input {
        Input::Lit(v) => v.clone(),
        Input::Text(t) => Value::String(t.render(
            &|k: &str| {
                kv.get(k)
                    .map(Cow::Borrowed)
                    .or_else(|| extra.and_then(|x| x.lookup(k)).map(Cow::Owned))
            },
            max,
        )),
        Input::List(items) => Value::Array(
            items
                .iter()
                .map(|i| resolve_owned(i, kv, extra, max))
                .collect(),
        ),
        Input::Map(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), resolve_owned(v, kv, extra, max)))
                .collect(),
        ),
    }
}

/// Runs `flow` against `kv` until a terminator decides, within the flow deadline
/// ([`FlowError::Timeout`]; a flow none of whose steps waits cannot pass it). Middleware
/// output is stored under scoped keys; a missing branch or a bad parameter is an error with
/// the step's path.
pub async fn run(flow: &Flow, kv: &mut Kv, env: &Env) -> Result<Decision, FlowError> {
    run_with(flow, kv, env, None).await
}

/// [`run`] for an HTTP request: `exchange` answers keys the KV store does not hold and runs
/// the HTTP drivers.
pub async fn run_with(
    flow: &Flow,
    kv: &mut Kv,
    env: &Env,
    exchange: Option<&mut dyn Exchange>,
) -> Result<Decision, FlowError> {
    if let Some(decision) = &flow.constant {
        return Ok(decided(&flow.root, decision));
    }
    if !flow.waits {
        // Nothing here can wait, so nothing can be late: no deadline timer to arm and drop.
        return walk_now(flow, kv, env, exchange.as_deref());
    }
    env.ticks
        .within(env.timeout, walk(flow, kv, env, exchange))
        .await
        .unwrap_or_else(|Late| Err(FlowError::Timeout(env.timeout.as_secs())))
}

/// The decision of a flow whose root is a terminator that needs nothing but its literal
/// inputs ([`Flow::constant`]): an upgrade or an abort. `None` for any other flow, and for
/// inputs a run would reject (a protocol that is not a string), which a run then reports.
pub fn constant(root: &Step) -> Option<Decision> {
    let PluginRef::Builtin(spec) = &root.plugin else {
        return None;
    };
    if !root.output.is_empty() {
        return None;
    }
    let mut values = Vec::with_capacity(root.input.len());
    for (name, input) in &root.input {
        let Input::Lit(v) = input else {
            return None;
        };
        values.push((name.as_str(), Cow::Borrowed(v)));
    }
    let r = Resolved {
        step: root,
        values: Inputs(values),
    };
    match spec.kind {
        Builtin::Abort => Some(Decision::Abort),
        Builtin::Upgrade => upgrade(&r).ok(),
        _ => None,
    }
}

/// `internal.transport.upgrade`'s decision, at a run or at load ([`constant`]).
fn upgrade(r: &Resolved<'_>) -> Result<Decision, FlowError> {
    Ok(Decision::Upgrade {
        protocol: r.str("protocol")?.to_ascii_lowercase(),
        cert: r.opt_str("cert").map(str::to_string),
    })
}

/// A constant flow's run: its step is logged, traced and timed as a walk would (the time is
/// that of handing out a decision made at load, nothing to measure).
fn decided(step: &Step, decision: &Decision) -> Decision {
    tracing::debug!(at = %step.at, "Executing plugin {}", step.name);
    let decision = crate::spans::plugin_span(&step.name, &step.at).in_scope(|| decision.clone());
    step.record_duration(0.0);
    decision
}

/// [`walk`] for a flow none of whose steps waits ([`Flow::waits`]).
fn walk_now(
    flow: &Flow,
    kv: &mut Kv,
    env: &Env,
    exchange: Option<&dyn Exchange>,
) -> Result<Decision, FlowError> {
    let mut step = &flow.root;
    loop {
        let outcome = run_now(step, kv, env, exchange.map(|x| x as Extra<'_>))?;
        match outcome {
            Outcome::Branch(branch) => step = advance(step, &branch)?,
            Outcome::Done(d) => return Ok(d),
        }
    }
}

async fn walk(
    flow: &Flow,
    kv: &mut Kv,
    env: &Env,
    mut exchange: Option<&mut dyn Exchange>,
) -> Result<Decision, FlowError> {
    let mut step = &flow.root;
    loop {
        let outcome = if step.may_wait() {
            run_waiting(step, kv, env, exchange.as_deref_mut()).await?
        } else {
            run_now(step, kv, env, exchange.as_deref().map(|x| x as Extra<'_>))?
        };
        match outcome {
            Outcome::Branch(branch) => step = advance(step, &branch)?,
            Outcome::Done(d) => return Ok(d),
        }
    }
}

/// Runs a step that may wait ([`Step::may_wait`]): its body buffered first when it reads
/// one, an HTTP driver, a rate limit with a shared store, an external plugin; what it stores
/// goes under keys scoped by the flow path that led to it ([`Step::trail`](super::step::Step::trail)).
async fn run_waiting<'x>(
    step: &Step,
    kv: &mut Kv,
    env: &Env,
    mut exchange: Option<&mut (dyn Exchange + 'x)>,
) -> Result<Outcome, FlowError> {
    let started = Instant::now();
    if step.bodies != 0 {
        if let Some(x) = exchange.as_deref_mut() {
            x.buffer(step.bodies).await;
        }
    }
    let r = resolved(step, kv, exchange.as_deref().map(|x| x as Extra<'_>), env);
    let (branch, store) = match &step.plugin {
        PluginRef::Builtin(spec) if spec.kind.is_http_driver() => {
            let Some(x) = exchange else {
                return Err(FlowError::Plugin {
                    at: step.at.clone(),
                    msg: format!("`{}` runs only in HTTP applications", step.name),
                });
            };
            let (branch, store) = x
                .drive(spec.kind, r.values, kv)
                .instrument(crate::spans::plugin_span(&step.name, &step.at))
                .await
                .map_err(|e| FlowError::Plugin {
                    at: step.at.clone(),
                    msg: e.to_string(),
                })?;
            step.record_duration(started.elapsed().as_secs_f64());
            (branch, store)
        }
        PluginRef::Builtin(spec)
            if matches!(spec.kind, Builtin::RateSec | Builtin::RateMin)
                && env.shared.get().is_some() =>
        {
            let (window, key, limit) = rate_inputs(spec.kind, &r)?;
            // Boxed, as is the external call below: their futures are large and rare, and
            // inline they would grow every request's state (moved into a box each time a
            // request starts).
            let allowed = Box::pin(env.rate_hit(window, key, limit))
                .instrument(crate::spans::plugin_span(&step.name, &step.at))
                .await;
            step.record_duration(started.elapsed().as_secs_f64());
            return Ok(bool_branch(allowed));
        }
        PluginRef::Builtin(spec) => return run_builtin(&r, spec.kind, env, started),
        PluginRef::External(p) => {
            let input = Value::Object(r.values.into_map());
            let (branch, store) = match Box::pin(env.plugins.call(p, &input))
                .instrument(crate::spans::plugin_span(&step.name, &step.at))
                .await
            {
                Ok(v) => (Cow::Owned(v.branch), v.store.unwrap_or_default()),
                Err(CallError::Quiet) => (
                    Cow::Borrowed("failure"),
                    [("error".to_string(), "circuit_breaker_active".to_string())].into(),
                ),
                Err(CallError::Failed(_)) => (Cow::Borrowed("failure"), Default::default()),
            };
            let store = store
                .into_iter()
                .filter(|(k, _)| {
                    let braced = k.contains('{') || k.contains('}');
                    if braced {
                        tracing::error!(plugin = %p.name, "security: store key `{k}` contains braces; dropped");
                    }
                    !braced
                })
                .collect();
            (branch, store)
        }
    };
    for (k, v) in store {
        kv.set(scoped_key(&step.trail, &step.sanitized, &k), v);
    }
    Ok(Outcome::Branch(branch))
}

/// The inputs of `step`, resolved against the KV and the request.
#[inline(always)]
fn resolved<'s>(step: &'s Step, kv: &Kv, extra: Option<Extra<'_>>, env: &Env) -> Resolved<'s> {
    let max = env.max_template_result;
    let values = step
        .input
        .iter()
        .map(|(k, v)| (k.as_str(), resolve(v, kv, extra, max)))
        .collect();
    // 0.9.2's line, which debugging scripts look for.
    tracing::debug!(at = %step.at, "Executing plugin {}", step.name);
    Resolved { step, values }
}

/// Runs a step that does not wait: a built-in that is not an HTTP driver or a rate limit.
#[inline(always)]
fn run_now(
    step: &Step,
    kv: &Kv,
    env: &Env,
    extra: Option<Extra<'_>>,
) -> Result<Outcome, FlowError> {
    let started = Instant::now();
    let r = resolved(step, kv, extra, env);
    match &step.plugin {
        PluginRef::Builtin(spec) => run_builtin(&r, spec.kind, env, started),
        // `Step::may_wait` keeps these in `walk`, which can wait for them.
        PluginRef::External(_) => Err(FlowError::Plugin {
            at: step.at.clone(),
            msg: format!("`{}` cannot run here", step.name),
        }),
    }
}

/// A built-in step's work, inside its span, and its duration recorded.
#[inline(always)]
fn run_builtin(
    r: &Resolved<'_>,
    kind: Builtin,
    env: &Env,
    started: Instant,
) -> Result<Outcome, FlowError> {
    let step = r.step;
    let outcome =
        crate::spans::plugin_span(&step.name, &step.at).in_scope(|| builtin(kind, r, env))?;
    step.record_duration(started.elapsed().as_secs_f64());
    Ok(outcome)
}

/// The step a branch leads to.
#[inline(always)]
fn advance<'f>(step: &'f Step, branch: &str) -> Result<&'f Step, FlowError> {
    step.branch(branch).ok_or_else(|| FlowError::Stalled {
        at: step.at.clone(),
        plugin: step.name.clone(),
        branch: branch.to_string(),
    })
}

enum Outcome {
    Branch(Cow<'static, str>),
    Done(Decision),
}

/// A rate limit's window, key and limit.
fn rate_inputs<'r>(
    kind: Builtin,
    r: &'r Resolved<'_>,
) -> Result<(Duration, &'r str, u64), FlowError> {
    let limit = match r.step.fixed.limit {
        Some(l) => l,
        None => {
            u64::try_from(r.int("limit")?).map_err(|_| r.err("limit", "must not be negative"))?
        }
    };
    let window = Duration::from_secs(if kind == Builtin::RateSec { 1 } else { 60 });
    Ok((window, r.str("key")?, limit))
}

fn bool_branch(b: bool) -> Outcome {
    Outcome::Branch(Cow::Borrowed(if b { "true" } else { "false" }))
}

fn builtin(kind: Builtin, r: &Resolved<'_>, env: &Env) -> Result<Outcome, FlowError> {
    Ok(match kind {
        Builtin::Detect => {
            let method = r.str("method")?;
            let payload = match &r.step.fixed.payload {
                Some(p) => Cow::Borrowed(p.as_slice()),
                None => Cow::Owned(
                    hex::decode(r.str("payload")?)
                        .map_err(|e| r.err("payload", format!("not hex: {e}")))?,
                ),
            };
            bool_branch(detect::matches(method, &payload))
        }
        Builtin::Match => {
            let op = match r.step.fixed.operator {
                Some(op) => op,
                None => matcher::Operator::parse(r.opt_str("operator").unwrap_or("==")),
            };
            bool_branch(matcher::eval(
                op,
                r.str("left")?,
                r.str("right")?,
                r.step.regex.as_deref(),
            ))
        }
        Builtin::RateSec | Builtin::RateMin => {
            let (window, key, limit) = rate_inputs(kind, r)?;
            bool_branch(env.rate_hit_local(window, key, limit))
        }
        Builtin::Abort => Outcome::Done(Decision::Abort),
        Builtin::Proxy => {
            let ip = match r.step.fixed.ip {
                Some(ip) => ip,
                None => {
                    let ip = r.str("target.ip")?;
                    ip.parse()
                        .map_err(|_| r.err("target.ip", format!("`{ip}` is not an IP address")))?
                }
            };
            r.proxy_to(Upstream::Ip((ip, r.port()?).into()))?
        }
        Builtin::ProxyNode => r.proxy_to(Upstream::Node {
            node: r.str("target.node")?.to_string(),
            port: r.port()?,
            strategy: r.strategy()?,
            key: r.opt_str("hash_key").map(str::to_string),
        })?,
        Builtin::ProxyDomain => r.proxy_to(Upstream::Domain {
            domain: r.str("target.domain")?.to_string(),
            port: r.port()?,
            strategy: r.strategy()?,
            key: r.opt_str("hash_key").map(str::to_string),
        })?,
        Builtin::Upgrade => Outcome::Done(upgrade(r)?),
        Builtin::Response => Outcome::Done(Decision::Respond {
            status: r.get("status").cloned(),
            headers: r.get("headers").cloned(),
            body: r.get("body").cloned(),
        }),
        Builtin::Upstream | Builtin::Cgi | Builtin::Static => {
            // Dispatched to the exchange before this point.
            return Err(FlowError::Plugin {
                at: r.step.at.clone(),
                msg: format!("`{}` runs only in HTTP applications", r.step.name),
            });
        }
    })
}

/// The KV key a middleware's stored value goes to: `plugin.<flow path>.<plugin>.<key>`.
pub fn scoped_key(path: &str, sanitized: &str, key: &str) -> String {
    if path.is_empty() {
        format!("plugin.{sanitized}.{key}")
    } else {
        format!("plugin.{path}.{sanitized}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_size<'a, A: 'a, B: 'a, C: 'a, D, F>(_: fn(&'a A, &'a mut B, &'a C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request runs a flow: an external plugin's call or a shared-store rate check
    /// inline would make each request's state three or four times larger.
    #[test]
    fn a_flow_run_state_stays_small() {
        let size = state_size(run_with);
        eprintln!("flow run state: {size} bytes");
        assert!(size <= 768, "{size} bytes");
    }

    #[test]
    fn scoped_keys_follow_the_flow_path() {
        assert_eq!(
            scoped_key("", "internal_protocol_detect", "method"),
            "plugin.internal_protocol_detect.method"
        );
        assert_eq!(
            scoped_key(
                "internal_protocol_detect.true",
                "internal_common_ratelimit_sec",
                "count"
            ),
            "plugin.internal_protocol_detect.true.internal_common_ratelimit_sec.count"
        );
    }
}
