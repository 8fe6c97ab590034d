//! The legacy listener format: a priority-ordered list of detect rules with forward targets.

use std::net::{IpAddr, SocketAddr};

use serde_json::Value;

use super::error::{join, Problems};
use crate::flow::template::{Limits, Template};
use crate::upstream::balance::Strategy;

#[derive(Debug, Clone)]
pub enum Detect {
    /// First byte equals this value (`0x16`); longer patterns never match, as in 0.9.2.
    Magic(Option<u8>),
    /// The pattern's bytes occur anywhere in the peeked bytes (despite the name).
    Prefix(Vec<u8>),
    Regex(Option<Pattern>),
    Fallback,
}

/// A legacy `regex` pattern: the linear-time engine whenever it accepts the pattern; only
/// patterns that need look-around or back-references (which 0.9.2's backtracking engine
/// accepted) run on a backtracking engine, bounded by [`BACKTRACK_LIMIT`] steps per match so a
/// hostile client's bytes cannot make a match run away.
#[derive(Debug, Clone)]
pub enum Pattern {
    Linear(regex::Regex),
    Backtracking(Box<fancy_regex::Regex>),
}

/// Steps one backtracking match may take; past it the match fails (and is counted).
pub const BACKTRACK_LIMIT: usize = 100_000;

impl Pattern {
    /// The linear engine's own error when neither engine accepts the pattern.
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        match regex::Regex::new(pattern) {
            Ok(r) => Ok(Pattern::Linear(r)),
            Err(linear) => fancy_regex::RegexBuilder::new(pattern)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map(|r| Pattern::Backtracking(Box::new(r)))
                .map_err(|_| linear),
        }
    }

    pub fn is_match(&self, s: &str) -> bool {
        match self {
            Pattern::Linear(r) => r.is_match(s),
            Pattern::Backtracking(r) => r.is_match(s).unwrap_or_else(|_| {
                metrics::counter!("vane_legacy_regex_aborted_total").increment(1);
                false
            }),
        }
    }
}

impl Detect {
    pub fn matches(&self, peek: &[u8]) -> bool {
        match self {
            Detect::Magic(b) => b.is_some() && peek.first() == b.as_ref(),
            Detect::Prefix(p) => !p.is_empty() && peek.windows(p.len()).any(|w| w == p.as_slice()),
            Detect::Regex(Some(re)) => std::str::from_utf8(peek).is_ok_and(|s| re.is_match(s)),
            Detect::Regex(None) => false,
            Detect::Fallback => true,
        }
    }
}

/// An upstream as written in a legacy target list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetSpec {
    Ip(SocketAddr),
    Node { node: String, port: u16 },
    Domain { domain: String, port: u16 },
}

#[derive(Debug, Clone)]
pub struct Forward {
    pub strategy: Strategy,
    pub targets: Vec<TargetSpec>,
    pub fallbacks: Vec<TargetSpec>,
    /// Key for `strategy: hash` (ours), a template such as `{{conn.ip}}`.
    pub hash_key: Option<Template>,
    /// Send a PROXY protocol header to the target (ours; `proxy_protocol: v1|v2`).
    pub proxy_protocol: Option<crate::l4p::proxy_protocol::Version>,
}

#[derive(Debug, Clone)]
pub enum Destination {
    Forward(Forward),
    Resolver(String),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub priority: u64,
    pub detect: Detect,
    pub destination: Destination,
}

/// Rules sorted by priority.
#[derive(Debug, Clone)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

impl Rules {
    /// Every target and fallback, for health probing.
    pub fn targets(&self) -> impl Iterator<Item = &TargetSpec> {
        self.rules.iter().flat_map(|r| match &r.destination {
            Destination::Forward(f) => f
                .targets
                .iter()
                .chain(f.fallbacks.iter())
                .collect::<Vec<_>>(),
            Destination::Resolver(_) => Vec::new(),
        })
    }
}

fn str_at<'a>(v: &'a Value, key: &str, at: &str, pr: &mut Problems) -> Option<&'a str> {
    match v.get(key) {
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            pr.error(&join(at, key), format!("expected a string, got {other}"));
            None
        }
        None => {
            pr.error(at, format!("missing `{key}`"));
            None
        }
    }
}

fn port_at(v: &Value, at: &str, pr: &mut Problems) -> Option<u16> {
    match v.get("port").and_then(Value::as_u64) {
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(p) => {
            pr.error(&join(at, "port"), format!("port must be 1-65535, got {p}"));
            None
        }
        None => {
            pr.error(at, "missing integer `port`");
            None
        }
    }
}

fn target(v: &Value, at: &str, pr: &mut Problems) -> Option<TargetSpec> {
    let port = port_at(v, at, pr);
    if let Some(ip) = v.get("ip") {
        let ip = ip.as_str().unwrap_or_default();
        return match ip.parse::<IpAddr>() {
            Ok(ip) => Some(TargetSpec::Ip(SocketAddr::new(ip, port?))),
            Err(_) => {
                pr.error(&join(at, "ip"), format!("`{ip}` is not an IP address"));
                None
            }
        };
    }
    if let Some(node) = v.get("node") {
        let node = node.as_str().unwrap_or_default().to_string();
        return Some(TargetSpec::Node { node, port: port? });
    }
    if let Some(domain) = v.get("domain") {
        let domain = domain.as_str().unwrap_or_default().to_string();
        if domain.is_empty() || domain.len() > 253 {
            pr.error(&join(at, "domain"), "domain must be 1-253 characters");
            return None;
        }
        return Some(TargetSpec::Domain {
            domain,
            port: port?,
        });
    }
    pr.error(at, "a target needs `ip`, `node` or `domain`");
    None
}

fn targets(v: Option<&Value>, at: &str, pr: &mut Problems) -> Vec<TargetSpec> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| target(t, &join(at, &i.to_string()), pr))
            .collect(),
        Some(_) => {
            pr.error(at, "expected a list of targets");
            Vec::new()
        }
    }
}

fn detect(v: &Value, at: &str, pr: &mut Problems) -> Option<Detect> {
    let method = str_at(v, "method", at, pr)?.to_ascii_lowercase();
    let pattern = str_at(v, "pattern", at, pr)?;
    if pattern.is_empty() {
        pr.error(&join(at, "pattern"), "pattern must not be empty");
    }
    let pat = join(at, "pattern");
    Some(match method.as_str() {
        "magic" => {
            let hex = pattern.trim_start_matches("0x").trim_start_matches("0X");
            let byte = if hex.len() <= 2 {
                u8::from_str_radix(hex, 16).ok()
            } else {
                None
            };
            if byte.is_none() {
                pr.warn(
                    &pat,
                    format!("magic `{pattern}` is not one byte (0xNN); it never matches"),
                );
            }
            Detect::Magic(byte)
        }
        "prefix" => Detect::Prefix(pattern.as_bytes().to_vec()),
        "regex" => match Pattern::new(pattern) {
            Ok(r) => {
                if matches!(r, Pattern::Backtracking(_)) {
                    pr.warn(
                        &pat,
                        format!("uses look-around or back-references: matched by a backtracking engine, at most {BACKTRACK_LIMIT} steps per connection"),
                    );
                }
                Detect::Regex(Some(r))
            }
            Err(e) => {
                pr.warn(
                    &pat,
                    format!("invalid regular expression, never matches: {e}"),
                );
                Detect::Regex(None)
            }
        },
        "fallback" => Detect::Fallback,
        other => {
            pr.error(
                &join(at, "method"),
                format!("unknown detect method `{other}` (magic, prefix, regex, fallback)"),
            );
            return None;
        }
    })
}

/// Parses and validates a legacy document (`protocols: [...]`); `None` when it has errors.
pub fn parse(doc: &Value, pr: &mut Problems) -> Option<Rules> {
    let Some(list) = doc.get("protocols").and_then(Value::as_array) else {
        pr.error("protocols", "expected a list of rules");
        return None;
    };
    let name_re = regex::Regex::new("^[a-z0-9_-]+$").ok()?;
    let mut rules = Vec::new();
    let mut priorities = std::collections::HashMap::new();
    for (i, r) in list.iter().enumerate() {
        let at = format!("protocols.{i}");
        let name = str_at(r, "name", &at, pr).map(str::to_ascii_lowercase);
        if let Some(n) = &name {
            if !name_re.is_match(n) {
                pr.error(
                    &join(&at, "name"),
                    format!("`{n}` must match ^[a-z0-9_-]+$"),
                );
            }
        }
        let priority = match r.get("priority").and_then(Value::as_u64) {
            Some(p) if p >= 1 => Some(p),
            _ => {
                pr.error(&join(&at, "priority"), "priority must be an integer >= 1");
                None
            }
        };
        if let Some(p) = priority {
            if let Some(prev) = priorities.insert(p, i) {
                pr.error(
                    &join(&at, "priority"),
                    format!("priority {p} is already used by protocols.{prev}"),
                );
            }
        }
        let det = r
            .get("detect")
            .and_then(|d| detect(d, &join(&at, "detect"), pr));
        if r.get("detect").is_none() {
            pr.error(&at, "missing `detect`");
        }
        if let Some(Value::Object(s)) = r.get("session") {
            if s.get("timeout").and_then(Value::as_u64) == Some(0) {
                pr.error(&join(&at, "session.timeout"), "timeout must be > 0");
            }
        }
        let dat = join(&at, "destination");
        let dest = match r.get("destination") {
            None => {
                pr.error(&at, "missing `destination`");
                None
            }
            Some(d) => match d.get("type").and_then(Value::as_str) {
                Some("forward") => {
                    let fat = join(&dat, "forward");
                    let f = d.get("forward").cloned().unwrap_or(Value::Null);
                    let strategy = match f.get("strategy").and_then(Value::as_str) {
                        None => Some(Strategy::Random),
                        Some(s) => Strategy::parse(s).or_else(|| {
                            pr.error(&join(&fat, "strategy"), format!("unknown strategy `{s}`"));
                            None
                        }),
                    };
                    let t = targets(f.get("targets"), &join(&fat, "targets"), pr);
                    if t.is_empty() {
                        pr.error(&join(&fat, "targets"), "at least one target is required");
                    }
                    let fb = targets(f.get("fallbacks"), &join(&fat, "fallbacks"), pr);
                    let hash_key = f.get("hash_key").and_then(Value::as_str).and_then(|k| {
                        Template::parse(k, Limits::default())
                            .map_err(|e| pr.error(&join(&fat, "hash_key"), e.to_string()))
                            .ok()
                    });
                    let proxy_protocol = f.get("proxy_protocol").and_then(|p| {
                        let v = p
                            .as_str()
                            .and_then(crate::l4p::proxy_protocol::Version::parse);
                        if v.is_none() {
                            pr.error(
                                &join(&fat, "proxy_protocol"),
                                format!("expected v1 or v2, got {p}"),
                            );
                        }
                        v
                    });
                    strategy.map(|strategy| {
                        Destination::Forward(Forward {
                            strategy,
                            targets: t,
                            fallbacks: fb,
                            hash_key,
                            proxy_protocol,
                        })
                    })
                }
                Some("resolver") => match d.get("resolver").and_then(Value::as_str) {
                    Some(r) => Some(Destination::Resolver(r.to_string())),
                    None => {
                        pr.error(&dat, "`type: resolver` needs `resolver: <name>`");
                        None
                    }
                },
                other => {
                    pr.error(
                        &join(&dat, "type"),
                        format!("expected `forward` or `resolver`, got {other:?}"),
                    );
                    None
                }
            },
        };
        if let (Some(name), Some(priority), Some(detect), Some(destination)) =
            (name, priority, det, dest)
        {
            rules.push(Rule {
                name,
                priority,
                detect,
                destination,
            });
        }
    }
    if pr.has_errors() {
        return None;
    }
    rules.sort_by_key(|r| r.priority);
    Some(Rules { rules })
}

#[cfg(test)]
mod pattern_tests {
    use super::*;

    #[test]
    fn linear_when_possible_backtracking_only_for_look_around() {
        let plain = Pattern::new("^(GET|POST) ").expect("plain");
        assert!(matches!(plain, Pattern::Linear(_)));
        let ahead = Pattern::new("^GET (?!/admin)").expect("look-ahead");
        assert!(matches!(ahead, Pattern::Backtracking(_)));
        assert!(ahead.is_match("GET /index.html HTTP/1.1"));
        assert!(!ahead.is_match("GET /admin HTTP/1.1"));
        let back = Pattern::new(r"^(\w+) \1\b").expect("back-reference");
        assert!(back.is_match("echo echo"));
        assert!(!back.is_match("echo ohce"));
        assert!(Pattern::new("(unclosed").is_err());
    }

    #[test]
    fn a_runaway_match_stops_at_the_step_limit() {
        // Exponential for a backtracking engine without a limit.
        let evil = Pattern::new("^(a|a)*(?=c)").expect("pattern");
        assert!(matches!(evil, Pattern::Backtracking(_)));
        assert!(!evil.is_match(&"a".repeat(64)));
    }
}
