//! Real flows through the executor, without a gateway: compiled by the validator from the
//! same documents a config dir holds, run against a plain [`Env`].

use std::time::Duration;

use serde_json::{json, Value};

use super::catalogue::Layer;
use super::exec::{self, Decision, Driven, DriverError, Exchange, FlowError, ProxyTo, Upstream};
use super::kv::Kv;
use super::step::Flow;
use super::validate::{compile, Context};
use super::Env;
use crate::config::error::Problems;
use crate::config::plugins::ExternalPlugins;
use crate::plugins::external::Caller;
use crate::plugins::ratelimit::RateLimiter;
use crate::upstream::balance::Strategy;

fn env(timeout: Duration, max_template_result: usize) -> Env {
    let limiter = |secs| RateLimiter::new(Duration::from_secs(secs), 1 << 20, 256);
    Env {
        max_template_result,
        rate_sec: limiter(1),
        rate_min: limiter(60),
        plugins: Caller::new(std::path::Path::new("."), Duration::from_secs(1), timeout),
        timeout,
        ticks: crate::ticks::Ticks::for_wait(timeout, 8),
        shared: std::sync::OnceLock::new(),
    }
}

fn flow(layer: Layer, root_key: &str, doc: Value) -> Flow {
    let plugins = ExternalPlugins::new();
    let cx = Context {
        layer,
        protocol: if layer == Layer::L7 { "httpx" } else { "tcp" },
        plugins: &plugins,
        limits: Default::default(),
    };
    let mut problems = Problems::for_file("test");
    let f = compile(&doc, root_key, &cx, &mut problems);
    let errors: Vec<String> = problems
        .list
        .iter()
        .filter(|p| p.severity == crate::config::error::Severity::Error)
        .map(|p| p.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    f.expect("compiled")
}

fn l4(doc: Value) -> Flow {
    flow(Layer::L4, "connection", doc)
}

fn kv(pairs: &[(&str, &str)]) -> Kv {
    let mut kv = Kv::new();
    for (k, v) in pairs {
        kv.set(k.to_string(), *v);
    }
    kv
}

async fn run(f: &Flow, kv: &mut Kv, env: &Env) -> Result<Decision, FlowError> {
    exec::run(f, kv, env).await
}

fn proxy(port: u16) -> Value {
    json!({"internal.transport.proxy": {"input": {"target.ip": "127.0.0.1", "target.port": port}}})
}

fn to(port: u16) -> Decision {
    Decision::Proxy(ProxyTo {
        upstream: Upstream::Ip(([127, 0, 0, 1], port).into()),
        header: None,
    })
}

#[tokio::test]
async fn a_match_takes_its_branch_to_the_terminator() {
    let f = l4(json!({"connection": {"internal.common.match": {
        "input": {"left": "{{conn.ip}}", "right": "10.0.0.1"},
        "output": {"true": proxy(1001), "false": {"internal.transport.abort": {}}}
    }}}));
    let e = env(Duration::from_secs(5), 1024);
    assert_eq!(
        run(&f, &mut kv(&[("conn.ip", "10.0.0.1")]), &e).await.ok(),
        Some(to(1001))
    );
    assert_eq!(
        run(&f, &mut kv(&[("conn.ip", "10.0.0.2")]), &e).await.ok(),
        Some(Decision::Abort)
    );
}

/// Each step knows the flow path that leads to it, as the executor once built it on every
/// run: the scope of the keys an external plugin stores (`plugin.<trail>.<name>.<key>`).
#[test]
fn steps_know_their_trail_from_the_root() {
    let f = l4(json!({"connection": {"internal.common.match": {
        "input": {"left": "{{conn.ip}}", "right": "10.0.0.1"},
        "output": {"true": proxy(1001), "false": {"internal.common.ratelimit.sec": {
            "input": {"key": "{{conn.ip}}", "limit": 1},
            "output": {"true": proxy(1002), "false": {"internal.transport.abort": {}}}
        }}}
    }}}));
    let root = &f.root;
    assert_eq!(root.trail, "");
    let limit = root.branch("false").expect("false branch");
    assert_eq!(limit.trail, "internal_common_match.false");
    let abort = limit.branch("false").expect("nested false branch");
    assert_eq!(
        abort.trail,
        "internal_common_match.false.internal_common_ratelimit_sec.false"
    );
    assert_eq!(
        exec::scoped_key(&abort.trail, &abort.sanitized, "user"),
        "plugin.internal_common_match.false.internal_common_ratelimit_sec.false.internal_transport_abort.user"
    );
    assert_eq!(
        exec::scoped_key(&root.trail, &root.sanitized, "user"),
        "plugin.internal_common_match.user"
    );
}

/// A flow of steps that cannot wait is known at load and runs without a deadline timer; one
/// step that may wait (a rate limit here) anywhere in the tree puts the whole flow under it.
#[tokio::test]
async fn flows_that_cannot_wait_are_known_at_load() {
    let now = l4(json!({"connection": {"internal.common.match": {
        "input": {"left": "{{conn.ip}}", "right": "10.0.0.1"},
        "output": {"true": proxy(1001), "false": {"internal.transport.abort": {}}}
    }}}));
    assert!(!now.waits);
    let limited = l4(json!({"connection": {"internal.common.match": {
        "input": {"left": "{{conn.ip}}", "right": "10.0.0.1"},
        "output": {"true": proxy(1001), "false": {"internal.common.ratelimit.sec": {
            "input": {"key": "{{conn.ip}}", "limit": 1},
            "output": {"true": proxy(1002), "false": {"internal.transport.abort": {}}}
        }}}
    }}}));
    assert!(limited.waits);
    let e = env(Duration::from_secs(5), 1024);
    let mut ip = kv(&[("conn.ip", "10.0.0.2")]);
    assert_eq!(run(&limited, &mut ip, &e).await.ok(), Some(to(1002)));
    assert_eq!(run(&limited, &mut ip, &e).await.ok(), Some(Decision::Abort));
}

#[tokio::test]
async fn literal_parameters_are_typed_at_load_and_used_as_such() {
    let f = l4(json!({"connection": {"internal.transport.proxy.node": {
        "input": {"target.node": "web", "target.port": 8080, "strategy": "serial", "proxy_protocol": "v2"}
    }}}));
    assert_eq!(
        f.root.fixed.strategy,
        Some(Strategy::parse("serial").expect("strategy"))
    );
    assert_eq!(f.root.fixed.port, Some(8080));
    assert!(f.root.fixed.proxy_header.is_some());
    let d = run(&f, &mut Kv::new(), &env(Duration::from_secs(5), 1024)).await;
    match d {
        Ok(Decision::Proxy(ProxyTo {
            upstream:
                Upstream::Node {
                    node,
                    port,
                    strategy,
                    key: None,
                },
            header: Some(_),
        })) => {
            assert_eq!((node.as_str(), port), ("web", 8080));
            assert_eq!(Some(strategy), f.root.fixed.strategy);
        }
        other => panic!("{other:?}"),
    }
    // The same parameters from templates are parsed per run (and can fail there).
    let t = l4(json!({"connection": {"internal.transport.proxy": {
        "input": {"target.ip": "{{x}}", "target.port": "{{p}}"}
    }}}));
    assert!(t.root.fixed.ip.is_none() && t.root.fixed.port.is_none());
    let m = l4(json!({"connection": {"internal.common.match": {
        "input": {"left": "a", "right": "a", "operator": "Starts_With"},
        "output": {"true": proxy(1), "false": {"internal.transport.abort": {}}}
    }}}));
    assert_eq!(
        m.root.fixed.operator,
        Some(Some(crate::plugins::matcher::Operator::StartsWith))
    );
    let e = env(Duration::from_secs(5), 1024);
    assert_eq!(
        run(&t, &mut kv(&[("x", "127.0.0.1"), ("p", "1002")]), &e)
            .await
            .ok(),
        Some(to(1002))
    );
    let bad = run(&t, &mut kv(&[("x", "not-an-ip"), ("p", "1")]), &e).await;
    assert!(
        matches!(bad, Err(FlowError::Param { ref param, .. }) if param == "target.ip"),
        "{bad:?}"
    );
}

#[tokio::test]
async fn a_branch_nobody_configured_stalls_with_the_step_path() {
    let f = l4(json!({"connection": {"internal.common.match": {
        "input": {"left": "a", "right": "{{v}}"},
        "output": {"true": {"internal.transport.abort": {}}}
    }}}));
    let r = run(
        &f,
        &mut kv(&[("v", "b")]),
        &env(Duration::from_secs(5), 1024),
    )
    .await;
    match r {
        Err(FlowError::Stalled { branch, plugin, .. }) => {
            assert_eq!(branch, "false");
            assert_eq!(plugin, "internal.common.match");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_rate_limit_counts_per_key_within_its_window() {
    let f = l4(json!({"connection": {"internal.common.ratelimit.sec": {
        "input": {"key": "{{conn.ip}}", "limit": 2},
        "output": {"true": proxy(1003), "false": {"internal.transport.abort": {}}}
    }}}));
    let e = env(Duration::from_secs(5), 1024);
    let mut got = Vec::new();
    for ip in ["1.1.1.1", "1.1.1.1", "1.1.1.1", "2.2.2.2"] {
        got.push(
            run(&f, &mut kv(&[("conn.ip", ip)]), &e)
                .await
                .expect("decides"),
        );
    }
    assert_eq!(got, vec![to(1003), to(1003), Decision::Abort, to(1003)]);
}

#[tokio::test]
async fn template_results_stop_at_the_limit() {
    let doc = json!({"connection": {"internal.common.match": {
        "input": {"left": "{{a}}{{a}}{{a}}", "right": "xxxxxxxxxxxx", "operator": "=="},
        "output": {"true": proxy(1004), "false": {"internal.transport.abort": {}}}
    }}});
    let f = l4(doc);
    let mut four = kv(&[("a", "xxxx")]);
    assert_eq!(
        run(&f, &mut four, &env(Duration::from_secs(5), 1024))
            .await
            .ok(),
        Some(to(1004))
    );
    // With a 10-byte limit the third piece no longer fits: "xxxxxxxx" != the right side.
    let mut four = kv(&[("a", "xxxx")]);
    assert_eq!(
        run(&f, &mut four, &env(Duration::from_secs(5), 10))
            .await
            .ok(),
        Some(Decision::Abort)
    );
}

/// An HTTP exchange whose driver never answers (an upstream that hangs).
struct Hanging;

impl Exchange for Hanging {
    fn lookup(&self, _: &str) -> Option<String> {
        None
    }

    fn buffer<'a>(
        &'a mut self,
        _: u8,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }

    fn drive<'a>(
        &'a mut self,
        _: super::catalogue::Builtin,
        _: super::exec::Inputs<'a>,
        _: &'a mut Kv,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Driven, DriverError>> + Send + 'a>>
    {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn the_executor_owns_the_flow_deadline() {
    let f = flow(
        Layer::L7,
        "pipeline",
        json!({"pipeline": {"internal.driver.upstream": {
            "input": {"url_prefix": "http://127.0.0.1:1"},
            "output": {"success": {"internal.terminator.response": {"input": {"status": 200}}},
                       "failure": {"internal.terminator.response": {"input": {"status": 502}}}}
        }}}),
    );
    let e = env(Duration::from_millis(50), 1024);
    let started = std::time::Instant::now();
    let mut x = Hanging;
    let r = exec::run_with(&f, &mut Kv::new(), &e, Some(&mut x)).await;
    assert!(matches!(r, Err(FlowError::Timeout(_))), "{r:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(50) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Without an exchange the same driver is refused, not hung.
    let r = exec::run(&f, &mut Kv::new(), &e).await;
    assert!(matches!(r, Err(FlowError::Plugin { .. })), "{r:?}");
}

/// A small deterministic generator (xorshift), so a failing tree prints a seed that replays it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A flow tree as the reference interpreter sees it.
enum Tree {
    Match {
        key: &'static str,
        right: &'static str,
        op: &'static str,
        yes: Box<Tree>,
        no: Box<Tree>,
    },
    Limit {
        key: &'static str,
        limit: u64,
        yes: Box<Tree>,
        no: Box<Tree>,
    },
    Proxy(u16),
    Abort,
}

const KEYS: [&str; 3] = ["conn.ip", "tls.sni", "http.host"];
const VALUES: [&str; 3] = ["a", "b", "ab"];
const OPS: [&str; 4] = ["==", "!=", "contains", "starts_with"];

fn gen(rng: &mut Rng, depth: u32, next_port: &mut u16) -> Tree {
    let leaf = depth == 0 || rng.below(4) == 0;
    if leaf {
        if rng.below(3) == 0 {
            return Tree::Abort;
        }
        *next_port += 1;
        return Tree::Proxy(*next_port);
    }
    let mut sub = |rng: &mut Rng| Box::new(gen(rng, depth - 1, next_port));
    if rng.below(5) == 0 {
        let key = KEYS[rng.below(3) as usize];
        let limit = rng.below(3);
        let (yes, no) = (sub(rng), sub(rng));
        return Tree::Limit {
            key,
            limit,
            yes,
            no,
        };
    }
    let key = KEYS[rng.below(3) as usize];
    let right = VALUES[rng.below(3) as usize];
    let op = OPS[rng.below(4) as usize];
    let (yes, no) = (sub(rng), sub(rng));
    Tree::Match {
        key,
        right,
        op,
        yes,
        no,
    }
}

fn doc(t: &Tree) -> Value {
    match t {
        Tree::Match {
            key,
            right,
            op,
            yes,
            no,
        } => json!({"internal.common.match": {
            "input": {"left": format!("{{{{{key}}}}}"), "right": right, "operator": op},
            "output": {"true": doc(yes), "false": doc(no)}
        }}),
        Tree::Limit {
            key,
            limit,
            yes,
            no,
        } => json!({"internal.common.ratelimit.min": {
            "input": {"key": format!("{{{{{key}}}}}"), "limit": limit},
            "output": {"true": doc(yes), "false": doc(no)}
        }}),
        Tree::Proxy(p) => proxy(*p),
        Tree::Abort => json!({"internal.transport.abort": {}}),
    }
}

/// What the tree decides for `kv`; `counts` plays the rate-limit table (one window).
fn reference(
    t: &Tree,
    kv: &[(&str, &str)],
    counts: &mut std::collections::HashMap<String, u64>,
) -> Decision {
    let get = |k: &str| {
        kv.iter()
            .find(|(x, _)| *x == k)
            .map(|(_, v)| *v)
            .unwrap_or("")
    };
    match t {
        Tree::Match {
            key,
            right,
            op,
            yes,
            no,
        } => {
            let left = get(key);
            let b = match *op {
                "==" => left == *right,
                "!=" => left != *right,
                "contains" => left.contains(right),
                _ => left.starts_with(right),
            };
            reference(if b { yes } else { no }, kv, counts)
        }
        Tree::Limit {
            key,
            limit,
            yes,
            no,
        } => {
            let n = counts.entry(get(key).to_string()).or_default();
            *n += 1;
            reference(if *n <= *limit { yes } else { no }, kv, counts)
        }
        Tree::Proxy(p) => to(*p),
        Tree::Abort => Decision::Abort,
    }
}

#[tokio::test]
async fn random_flow_trees_decide_as_the_reference_interpreter() {
    let base: u64 = std::env::var("FLOW_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f10e);
    for i in 0..150u64 {
        let seed = base.wrapping_add(i).max(1);
        let mut rng = Rng(seed);
        let mut port = 2000;
        let tree = gen(&mut rng, 4, &mut port);
        let f = l4(json!({ "connection": doc(&tree) }));
        let e = env(Duration::from_secs(5), 1024);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..6 {
            let pairs: Vec<(&str, &str)> = KEYS
                .iter()
                .map(|k| (*k, VALUES[rng.below(3) as usize]))
                .collect();
            let want = reference(&tree, &pairs, &mut counts);
            let got = run(&f, &mut kv(&pairs), &e).await;
            assert_eq!(
                got.ok(),
                Some(want),
                "seed {seed} (FLOW_SEED={seed} replays it), kv {pairs:?}"
            );
        }
    }
}

/// A flow that is one terminator with literal inputs is decided at load, and its run returns
/// what walking it returns; anything else (a template, a middleware, a proxy) walks.
#[tokio::test]
async fn literal_terminators_are_decided_at_load_as_a_walk_decides_them() {
    let env = env(Duration::from_secs(1), 1024);
    let upgrade = |input: Value| json!({"internal.transport.upgrade": {"input": input}});
    let cases = [
        (upgrade(json!({"protocol": "HTTP"})), true),
        (upgrade(json!({"protocol": "tls", "cert": "pinned"})), true),
        (json!({"internal.transport.abort": {}}), true),
        (upgrade(json!({"protocol": "{{conn.proto}}"})), false),
        (proxy(9), false),
        (
            json!({"internal.common.match": {
                "input": {"left": "a", "right": "a"},
                "output": {"true": upgrade(json!({"protocol": "http"})), "false": {"internal.transport.abort": {}}}
            }}),
            false,
        ),
    ];
    for (doc, constant) in cases {
        let f = l4(json!({ "connection": doc }));
        assert_eq!(f.constant.is_some(), constant, "{doc}");
        let walked = Flow {
            constant: None,
            ..f.clone()
        };
        let ran = run(&f, &mut kv(&[("conn.proto", "tcp")]), &env).await;
        let walk = run(&walked, &mut kv(&[("conn.proto", "tcp")]), &env).await;
        assert_eq!(ran.ok(), walk.ok(), "{doc}");
    }
}
