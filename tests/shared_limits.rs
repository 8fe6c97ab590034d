//! Rate limits shared through a real Redis (`RATELIMIT_REDIS_URL`): several vane processes
//! admit the limit once between them, not once each; when Redis goes away decisions fail open
//! (counted, logged once) and counting resumes when it returns.

mod common;

use std::time::Duration;

use common::redis::Redis;
use common::*;

/// A TCP listener that lets `limit` connections a minute through to `echo`, across instances.
fn limited(cfg: &ConfigDir, port: u16, echo: std::net::SocketAddr, limit: u64) {
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!(
            "connection:\n  internal.common.ratelimit.min:\n    input: {{ key: \"shared\", limit: {limit} }}\n    output:\n      \"true\": {{ internal.transport.proxy: {{ input: {{ target.ip: \"{}\", target.port: {} }} }} }}\n      \"false\": {{ internal.transport.abort: {{}} }}\n",
            echo.ip(),
            echo.port()
        ),
    );
}

fn start(redis: &Redis, echo: std::net::SocketAddr, limit: u64) -> (Vane, u16, ConfigDir) {
    let cfg = ConfigDir::new();
    let port = free_port();
    limited(&cfg, port, echo, limit);
    // Not waiting by connecting: a probe connection would be counted against the limit.
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("RATELIMIT_REDIS_URL", redis.url())],
            wait_ports: vec![],
        },
    );
    assert!(v.wait_log(
        &format!("Tcp listener on port {port} is UP"),
        Duration::from_secs(10)
    ));
    (v, port, cfg)
}

#[test]
fn three_instances_admit_the_limit_once_between_them() {
    let redis = Redis::start();
    let echo = Echo::start("E");
    let gateways: Vec<(Vane, u16, ConfigDir)> =
        (0..3).map(|_| start(&redis, echo.addr, 30)).collect();
    let mut admitted = [0usize; 3];
    for round in 0..30 {
        for (i, (_, port, _)) in gateways.iter().enumerate() {
            if ask_once(*port, &format!("r{round}")).as_deref() == Some(&format!("E:r{round}")) {
                admitted[i] += 1;
            }
        }
    }
    let total: usize = admitted.iter().sum();
    // Each decision is one atomic INCR: no tolerance is needed.
    assert_eq!(total, 30, "admitted per instance: {admitted:?}");
    assert!(admitted.iter().all(|&n| n > 0), "{admitted:?}");
    for (v, _, _) in &gateways {
        assert_eq!(v.metric("vane_ratelimit_redis_up").unwrap_or(0.0), 1.0);
        assert!(v.logs().contains("shared rate limits: counting in Redis"));
    }
}

#[test]
fn redis_down_fails_open_then_counting_resumes() {
    let mut redis = Redis::start();
    let echo = Echo::start("E");
    let (v, port, _cfg) = start(&redis, echo.addr, 5);
    let through = |n: usize| {
        (0..n)
            .filter(|i| ask_once(port, &format!("q{i}")).is_some())
            .count()
    };
    assert_eq!(through(8), 5, "the limit holds while Redis counts");

    redis.stop();
    assert_eq!(through(6), 6, "Redis down: every decision fails open");
    let failures = v.metric_sum("vane_ratelimit_redis_failures_total");
    assert!(failures >= 6.0, "failures counted: {failures}");
    assert_eq!(v.metric("vane_ratelimit_redis_up"), Some(0.0));
    assert_eq!(
        v.count_log("shared rate limits: Redis unavailable"),
        1,
        "one line per change of state:\n{}",
        v.logs()
    );

    redis.restart();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let _ = ask_once(port, "probe");
            v.metric("vane_ratelimit_redis_up") == Some(1.0)
        }),
        "never reconnected:\n{}",
        v.logs()
    );
    assert!(v.logs().contains("Redis answers again"));
    // A fresh Redis: the window starts again (the probes above used some of it).
    let left = through(10);
    assert!(
        (1..=5).contains(&left),
        "counting resumed: {left} of 10 admitted"
    );
}

#[test]
fn a_redis_that_never_answers_costs_the_budget_and_fails_open() {
    // Accepts connections and reads, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    let echo = Echo::start("E");
    let cfg = ConfigDir::new();
    let port = free_port();
    limited(&cfg, port, echo.addr, 1);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("RATELIMIT_REDIS_URL", format!("redis://{addr}/")),
                ("RATELIMIT_REDIS_TIMEOUT_MS", "100".into()),
            ],
            wait_ports: vec![],
        },
    );
    assert!(v.wait_log(
        &format!("Tcp listener on port {port} is UP"),
        Duration::from_secs(10)
    ));
    let started = std::time::Instant::now();
    let through = (0..5)
        .filter(|i| ask_once(port, &format!("q{i}")).is_some())
        .count();
    let took = started.elapsed();
    assert_eq!(through, 5, "a limit of 1, yet every decision failed open");
    assert!(
        took < Duration::from_secs(3),
        "each decision waits the budget, not longer: {took:?}"
    );
    assert!(
        v.metric("vane_ratelimit_redis_failures_total{reason=\"timeout\"}")
            .unwrap_or(0.0)
            >= 5.0,
        "{}",
        v.metrics_text()
    );
}
