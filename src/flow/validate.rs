//! Load-time validation: turns a flow document into a compiled [`Flow`], reporting every
//! problem with its path. A flow that compiles cannot fail at run time for a reason that
//! loading could have seen.

use std::sync::Arc;

use serde_json::Value;

use super::catalogue::{self, Builtin, Layer, Role, Ty};
use super::step::{Flow, Input, PluginRef, Step};
use super::template::{self, Template, TemplateError};
use crate::config::error::{join, Problems};
use crate::config::plugins::ExternalPlugins;

/// Steps deeper than this are refused (a flow is a tree written by hand; this bounds recursion).
pub const MAX_FLOW_DEPTH: usize = 64;

/// Application protocols an L4+ flow may upgrade to.
pub const L7_PROTOCOLS: &[&str] = &["httpx", "http/1.1", "h1", "h2"];

/// What a flow is validated against.
pub struct Context<'a> {
    pub layer: Layer,
    pub protocol: &'a str,
    pub plugins: &'a ExternalPlugins,
    pub limits: template::Limits,
}

/// Validates and compiles the step under `root_key` (`connection` or `pipeline`).
pub fn compile(
    doc: &Value,
    root_key: &str,
    cx: &Context<'_>,
    problems: &mut Problems,
) -> Option<Flow> {
    let Some(root) = doc.get(root_key) else {
        problems.error("", format!("missing `{root_key}`"));
        return None;
    };
    let mut step = compile_step(root, root_key, 1, cx, problems)?;
    if problems.has_errors() {
        return None;
    }
    set_trails(&mut step, String::new());
    let raw_keys = ["tls.clienthello", "quic.initial"]
        .into_iter()
        .filter(|k| reads(&step, &|key| key == *k))
        .collect();
    let is_upgrade =
        |s: &Step| matches!(&s.plugin, PluginRef::Builtin(spec) if spec.kind == Builtin::Upgrade);
    let reads_kv = step.any(&|s| {
        let templated = s.input.iter().any(|(_, i)| has_template(i));
        templated || is_upgrade(s) || matches!(s.plugin, PluginRef::External(_))
    });
    let upgrades = step.any(&is_upgrade);
    let waits = step.any(&Step::may_wait);
    let reads_http_head = reads(&step, &|k| k.starts_with("http."));
    let constant = super::exec::constant(&step);
    let reads_peek = reads(&step, &|k| k == "req.peek_buffer_hex");
    Some(Flow {
        upgrades,
        root: step,
        layer: cx.layer,
        protocol: cx.protocol.to_string(),
        raw_keys,
        reads_kv,
        reads_peek,
        reads_http_head,
        waits,
        constant,
    })
}

/// True when a template of `step` or of a step below it may read a key `pred` accepts (a key
/// built from other keys counts: it may be any).
fn reads(step: &Step, pred: &dyn Fn(&str) -> bool) -> bool {
    step.any(&|s| s.input.iter().any(|(_, i)| may_read(i, pred)))
}

/// True when `i` has a template that may read a key `pred` accepts.
fn may_read(i: &Input, pred: &dyn Fn(&str) -> bool) -> bool {
    match i {
        Input::Text(t) => t.may_read(pred),
        Input::Lit(_) => false,
        Input::List(items) => items.iter().any(|i| may_read(i, pred)),
        Input::Map(m) => m.iter().any(|(_, v)| may_read(v, pred)),
    }
}

fn has_template(i: &Input) -> bool {
    match i {
        Input::Text(_) => true,
        Input::Lit(_) => false,
        Input::List(items) => items.iter().any(has_template),
        Input::Map(m) => m.iter().any(|(_, v)| has_template(v)),
    }
}

fn compile_step(
    v: &Value,
    at: &str,
    depth: usize,
    cx: &Context<'_>,
    pr: &mut Problems,
) -> Option<Step> {
    if depth > MAX_FLOW_DEPTH {
        pr.error(at, format!("flow deeper than {MAX_FLOW_DEPTH} steps"));
        return None;
    }
    let Some(map) = v.as_object() else {
        pr.error(at, "a step must be a map with exactly one plugin name");
        return None;
    };
    if map.len() != 1 {
        let names: Vec<&str> = map.keys().map(String::as_str).collect();
        pr.error(
            at,
            format!(
                "a step must name exactly one plugin, found {}: {names:?}",
                map.len()
            ),
        );
        return None;
    }
    let (name, body) = map.iter().next()?;
    let at = join(at, name);
    let (plugin, params, branches, role) = match lookup(name, cx) {
        Some(x) => x,
        None => {
            pr.error(&at, format!("unknown plugin `{name}`"));
            return None;
        }
    };
    let body = match body {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m.clone(),
        _ => {
            pr.error(
                &at,
                "a plugin instance must be a map with `input` and `output`",
            );
            return None;
        }
    };
    for k in body.keys() {
        if k != "input" && k != "output" {
            pr.warn(
                &join(&at, k),
                "ignored: a step has only `input` and `output`",
            );
        }
    }
    if let PluginRef::Builtin(spec) = &plugin {
        if !spec.layers.contains(&cx.layer) {
            let allowed: Vec<&str> = spec.layers.iter().map(|l| l.as_str()).collect();
            pr.error(
                &at,
                format!(
                    "`{name}` cannot run at {} (only at {})",
                    cx.layer,
                    allowed.join(", ")
                ),
            );
        }
        if let Some(protos) = spec.protocols {
            if !protos.iter().any(|p| p.eq_ignore_ascii_case(cx.protocol)) {
                pr.error(
                    &at,
                    format!(
                        "`{name}` only runs in the application `{}`, not `{}`",
                        protos.join("`, `"),
                        cx.protocol
                    ),
                );
            }
        }
    }
    let input = compile_input(body.get("input"), &at, &params, cx, pr);
    let mut output = Vec::new();
    match body.get("output") {
        None | Some(Value::Null) => {}
        Some(Value::Object(out)) => {
            if role == Role::Terminator && !out.is_empty() {
                pr.warn(
                    &join(&at, "output"),
                    "a terminator ends the flow; its `output` never runs",
                );
            }
            for (branch, next) in out {
                let bat = join(&join(&at, "output"), branch);
                if role == Role::Middleware && !branches.iter().any(|b| b == branch) {
                    pr.error(
                        &bat,
                        format!(
                            "`{name}` has no branch `{branch}` (it returns: {})",
                            branches.join(", ")
                        ),
                    );
                    continue;
                }
                if let Some(s) = compile_step(next, &bat, depth + 1, cx, pr) {
                    output.push((branch.clone(), s));
                }
            }
        }
        Some(_) => pr.error(
            &join(&at, "output"),
            "`output` must be a map of branch -> step",
        ),
    }
    if role == Role::Middleware {
        for b in &branches {
            if !output.iter().any(|(n, _)| n == b) && !pr.has_errors() {
                pr.warn(&at, format!("branch `{b}` is not handled; a connection taking it ends the flow with an error"));
            }
        }
    }
    let mut step = Step {
        sanitized: name.replace('.', "_"),
        trail: String::new(),
        name: name.clone(),
        plugin,
        input,
        output,
        at: at.clone(),
        regex: None,
        timer: std::sync::OnceLock::new(),
        bodies: body
            .get("input")
            .map_or(0, |i| super::step::bodies_read(&i.to_string())),
        fixed: Default::default(),
    };
    check_semantics(&mut step, cx, pr);
    Some(step)
}

/// Each step's [`Step::trail`]: the steps and branches from the root to it.
fn set_trails(step: &mut Step, trail: String) {
    for (branch, next) in &mut step.output {
        let next_trail = if trail.is_empty() {
            format!("{}.{branch}", step.sanitized)
        } else {
            format!("{trail}.{}.{branch}", step.sanitized)
        };
        set_trails(next, next_trail);
    }
    step.trail = trail;
}

type Lookup = (PluginRef, Vec<(String, Ty, bool)>, Vec<String>, Role);

fn lookup(name: &str, cx: &Context<'_>) -> Option<Lookup> {
    if let Some(spec) = catalogue::builtin(name) {
        let params = spec
            .params
            .iter()
            .map(|p| (p.name.to_string(), p.ty, p.required))
            .collect();
        let branches = spec.branches.iter().map(|b| b.to_string()).collect();
        return Some((PluginRef::Builtin(spec), params, branches, spec.role));
    }
    let ext = cx.plugins.get(name)?;
    let params = ext
        .params
        .iter()
        .map(|p| (p.name.clone(), Ty::Str, p.required))
        .collect();
    Some((
        PluginRef::External(Arc::clone(ext)),
        params,
        ext.branches(),
        Role::Middleware,
    ))
}

/// A whole-string placeholder (`{{...}}`) is accepted for any declared type.
fn is_whole_template(s: &str) -> bool {
    s.starts_with("{{") && s.ends_with("}}")
}

fn compile_input(
    v: Option<&Value>,
    at: &str,
    params: &[(String, Ty, bool)],
    cx: &Context<'_>,
    pr: &mut Problems,
) -> Vec<(String, Input)> {
    let iat = join(at, "input");
    let map = match v {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            pr.error(&iat, "`input` must be a map of parameter -> value");
            return Vec::new();
        }
    };
    for (name, _, required) in params {
        if *required && !map.contains_key(name) {
            pr.error(&iat, format!("missing required parameter `{name}`"));
        }
    }
    let mut out = Vec::new();
    for (k, val) in &map {
        let pat = join(&iat, k);
        let Some((_, ty, _)) = params.iter().find(|(n, _, _)| n == k) else {
            let known: Vec<&str> = params.iter().map(|(n, _, _)| n.as_str()).collect();
            pr.error(
                &pat,
                format!(
                    "unknown parameter (expected one of: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            );
            continue;
        };
        let templated = val.as_str().is_some_and(is_whole_template);
        if !templated && !type_matches(*ty, val) {
            pr.error(
                &pat,
                format!("expected {}, got {}", ty.name(), describe(val)),
            );
            continue;
        }
        if let Some(input) = compile_value(val, &pat, 0, cx, pr) {
            out.push((k.clone(), input));
        }
    }
    out
}

fn type_matches(ty: Ty, v: &Value) -> bool {
    match ty {
        Ty::Str => v.is_string(),
        Ty::Int => v.is_i64() || v.is_u64(),
        Ty::Bool => v.is_boolean(),
        Ty::Map => v.is_object(),
        Ty::Array => v.is_array(),
        Ty::Any => true,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
    }
}

fn compile_value(
    v: &Value,
    at: &str,
    depth: usize,
    cx: &Context<'_>,
    pr: &mut Problems,
) -> Option<Input> {
    Some(match v {
        Value::String(s) if template::has_placeholder(s) => match Template::parse(s, cx.limits) {
            Ok(t) if t.is_dynamic() => Input::Text(t),
            Ok(_) => Input::Lit(v.clone()),
            Err(TemplateError::Unclosed) => {
                pr.error(at, "template has an unclosed `{{`");
                return None;
            }
            Err(e) => {
                pr.warn(
                    at,
                    format!("template not resolved ({e}); the text is used as written"),
                );
                Input::Lit(v.clone())
            }
        },
        Value::Array(items) if depth < cx.limits.parse_depth => Input::List(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, x)| compile_value(x, &join(at, &i.to_string()), depth + 1, cx, pr))
                .collect(),
        ),
        Value::Object(m) if depth < cx.limits.parse_depth => Input::Map(
            m.iter()
                .filter_map(|(k, x)| {
                    Some((
                        k.clone(),
                        compile_value(x, &join(at, k), depth + 1, cx, pr)?,
                    ))
                })
                .collect(),
        ),
        other => Input::Lit(other.clone()),
    })
}

fn literal<'a>(step: &'a Step, name: &str) -> Option<&'a Value> {
    match step.input(name) {
        Some(Input::Lit(v)) => Some(v),
        _ => None,
    }
}

/// Checks that need the meaning of a plugin, on literal (non-templated) values.
fn check_semantics(step: &mut Step, cx: &Context<'_>, pr: &mut Problems) {
    let PluginRef::Builtin(spec) = &step.plugin else {
        return;
    };
    let at = join(&step.at, "input");
    if let Some(Value::Number(n)) = literal(step, "target.port") {
        match n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        {
            Some(p) => step.fixed.port = Some(p),
            None => pr.error(
                &join(&at, "target.port"),
                format!("port must be 1-65535, got {n}"),
            ),
        }
    }
    if let Some(Value::String(v)) = literal(step, "proxy_protocol") {
        match crate::l4p::proxy_protocol::Version::parse(v) {
            Some(version) => step.fixed.proxy_header = Some(version),
            None => pr.error(
                &join(&at, "proxy_protocol"),
                format!("expected v1 or v2, got `{v}`"),
            ),
        }
    }
    if step.input("proxy_protocol").is_some() && cx.protocol == "udp" {
        pr.error(
            &join(&at, "proxy_protocol"),
            "the PROXY protocol is sent on TCP connections only",
        );
    }
    match spec.kind {
        Builtin::Proxy => {
            if let Some(Value::String(ip)) = literal(step, "target.ip") {
                match ip.parse::<std::net::IpAddr>() {
                    Ok(ip) => step.fixed.ip = Some(ip),
                    Err(_) => pr.error(&join(&at, "target.ip"), format!("`{ip}` is not an IP address (use internal.transport.proxy.domain for names)")),
                }
            }
        }
        Builtin::ProxyNode | Builtin::ProxyDomain => {
            if let Some(Value::String(s)) = literal(step, "strategy") {
                match crate::upstream::balance::Strategy::parse(s) {
                    Some(strategy) => step.fixed.strategy = Some(strategy),
                    None => pr.error(&join(&at, "strategy"), format!("unknown strategy `{s}` (random, serial, fastest, round_robin, least_conn, hash)")),
                }
            }
        }
        Builtin::Detect => {
            if let Some(Value::String(p)) = literal(step, "payload") {
                match hex::decode(p) {
                    Ok(bytes) => step.fixed.payload = Some(bytes),
                    Err(e) => pr.error(&join(&at, "payload"), format!("not hex: {e}")),
                }
            }
            if let Some(Value::String(m)) = literal(step, "method") {
                if !["http", "tls", "dns", "quic"].contains(&m.as_str()) {
                    pr.warn(
                        &join(&at, "method"),
                        format!(
                            "unknown method `{m}` always yields `false` (http, tls, dns, quic)"
                        ),
                    );
                }
            }
        }
        Builtin::Match => {
            let op = literal(step, "operator")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase);
            if let Some(op) = &op {
                if crate::plugins::matcher::Operator::parse(op).is_none() {
                    pr.warn(
                        &join(&at, "operator"),
                        format!("unknown operator `{op}` always yields `false`"),
                    );
                }
            }
            if step.input("operator").is_none() {
                step.fixed.operator = Some(Some(crate::plugins::matcher::Operator::Eq));
            } else if let Some(op) = &op {
                step.fixed.operator = Some(crate::plugins::matcher::Operator::parse(op));
            }
            let is_regex = op
                .as_deref()
                .and_then(crate::plugins::matcher::Operator::parse)
                == Some(crate::plugins::matcher::Operator::Regex);
            if is_regex {
                if let Some(Value::String(re)) = literal(step, "right") {
                    match regex::Regex::new(re) {
                        Ok(r) => step.regex = Some(Arc::new(r)),
                        Err(e) => pr.error(
                            &join(&at, "right"),
                            format!("invalid regular expression: {e}"),
                        ),
                    }
                }
            }
        }
        Builtin::RateSec | Builtin::RateMin => {
            if let Some(Value::Number(n)) = literal(step, "limit") {
                match n.as_u64() {
                    Some(limit) => step.fixed.limit = Some(limit),
                    None => pr.error(
                        &join(&at, "limit"),
                        format!("limit must be a non-negative integer, got {n}"),
                    ),
                }
            }
        }
        Builtin::Upgrade => {
            if let Some(Value::String(proto)) = literal(step, "protocol") {
                check_upgrade(proto, cx, &join(&at, "protocol"), pr);
            }
            if cx.layer == Layer::L4 && step.input("cert").is_some() {
                pr.warn(
                    &join(&at, "cert"),
                    "`cert` only applies to a TLS upgrade at L4+; ignored here",
                );
            }
        }
        _ => {}
    }
}

/// Upgrades only go up a layer, which also rules out cycles between resolvers.
fn check_upgrade(proto: &str, cx: &Context<'_>, at: &str, pr: &mut Problems) {
    let p = proto.to_ascii_lowercase();
    match cx.layer {
        Layer::L4 if cx.protocol == "udp" && p != "quic" => {
            pr.error(
                at,
                format!("a UDP listener can only upgrade to `quic`, not `{proto}`"),
            );
        }
        Layer::L4 if cx.protocol == "tcp" && p == "quic" => {
            pr.error(at, "a TCP listener cannot upgrade to `quic`");
        }
        Layer::L4Plus if !L7_PROTOCOLS.contains(&p.as_str()) => {
            pr.error(at, format!("an L4+ resolver can only upgrade to L7 ({}); `{proto}` would loop back into a resolver", L7_PROTOCOLS.join(", ")));
        }
        Layer::L4Plus if (cx.protocol == "tls" || cx.protocol == "quic") && p != "httpx" => {
            pr.error(
                at,
                format!(
                    "a `{}` resolver upgrades to `httpx`, not `{proto}`",
                    cx.protocol
                ),
            );
        }
        _ => {}
    }
}
