//! Upstream health: failover when a target dies and recovery when it returns, within two
//! probe intervals.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;

#[test]
fn failover_and_recovery_within_two_probe_intervals() {
    let a = Echo::start("A");
    let b = Echo::start("B");
    let a_port = a.addr.port();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!(
            "protocols:\n  - name: pool\n    priority: 1\n    detect: {{ method: fallback, pattern: x }}\n    destination:\n      type: forward\n      forward:\n        strategy: serial\n        targets: [ {{ ip: 127.0.0.1, port: {a_port} }}, {{ ip: 127.0.0.1, port: {} }} ]\n",
            b.addr.port()
        ),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("HEALTH_TCP_INTERVAL_SECS", "1".into()),
                ("HEALTH_TCP_CONNECT_TIMEOUT_MS", "300".into()),
            ],
            wait_ports: vec![port],
        },
    );
    let tags = |n: usize| {
        (0..n)
            .filter_map(|i| ask_once(port, &format!("{i}")))
            .map(|r| r[..1].to_string())
            .collect::<Vec<_>>()
    };
    let both = tags(6);
    assert!(
        both.contains(&"A".to_string()) && both.contains(&"B".to_string()),
        "{both:?}"
    );

    // A dies: within two intervals every connection goes to B.
    a.stop();
    drop(a);
    std::thread::sleep(Duration::from_millis(2200));
    let after = tags(6);
    assert_eq!(
        after,
        vec!["B"; 6],
        "all traffic fails over to B\n{}",
        v.logs()
    );
    assert!(
        wait_until(Duration::from_secs(2), || v.metric(&format!(
            "vane_upstream_healthy{{target=\"127.0.0.1:{a_port}\"}}"
        )) == Some(0.0)),
        "{}",
        v.metrics_text()
    );

    // A comes back on the same port: used again within two intervals.
    let l = TcpListener::bind(("127.0.0.1", a_port)).expect("rebind A");
    let _a2 = Echo::on(l, "A");
    assert!(
        v.wait_log(
            &format!("127.0.0.1:{a_port} has recovered"),
            Duration::from_millis(2500)
        ),
        "{}",
        v.logs()
    );
    let back = tags(6);
    assert!(back.contains(&"A".to_string()), "A serves again: {back:?}");
}

#[test]
fn node_targets_skip_unhealthy_addresses() {
    // The echo listens on 127.0.0.1 only, so the node's second address (127.0.0.2, same port)
    // refuses connections: probes mark it down and balancing skips it.
    let a = Echo::start("A");
    let p = a.addr.port();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write("nodes.yaml", &format!("nodes:\n  - name: pool\n    ips:\n      - {{ address: 127.0.0.1, ports: [{p}], type: ipv4 }}\n      - {{ address: 127.0.0.2, ports: [{p}], type: ipv4 }}\n"));
    cfg.write(&format!("listener/[{port}]/tcp.yaml"), &format!("connection:\n  internal.transport.proxy.node:\n    input: {{ target.node: pool, target.port: {p}, strategy: round_robin }}\n"));
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("HEALTH_TCP_INTERVAL_SECS", "1".into())],
            wait_ports: vec![port],
        },
    );
    assert!(
        wait_until(Duration::from_secs(3), || v.metric(&format!(
            "vane_upstream_healthy{{target=\"127.0.0.2:{p}\"}}"
        )) == Some(0.0)),
        "{}",
        v.metrics_text()
    );
    for i in 0..6 {
        assert_eq!(
            ask_once(port, &format!("{i}")).as_deref(),
            Some(format!("A:{i}").as_str()),
            "connection {i}"
        );
    }
}

/// UDP has no connect to probe: an ICMP error (a closed port) marks the target, new sessions
/// avoid it for `HEALTH_UDP_UNHEALTHY_TTL_SECS`, a session whose send there is refused is
/// replaced (with that datagram), and the mark expires.
#[test]
fn udp_targets_are_marked_by_icmp_errors_and_avoided_until_the_mark_expires() {
    let echo = UdpEcho::start("U", Duration::ZERO);
    let p = echo.addr.port();
    let cfg = ConfigDir::new();
    // 127.0.0.2 has nothing on that port: datagrams there earn an ICMP port unreachable.
    cfg.write(
        "nodes.yaml",
        &format!("nodes:\n  - name: pair\n    ips:\n      - {{ address: 127.0.0.2, ports: [{p}], type: ipv4 }}\n      - {{ address: 127.0.0.1, ports: [{p}], type: ipv4 }}\n"),
    );
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/udp.yaml"),
        &format!("connection:\n  internal.transport.proxy.node:\n    input: {{ target.node: pair, target.port: {p}, strategy: round_robin }}\n"),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("HEALTH_UDP_UNHEALTHY_TTL_SECS", "2".into()),
                ("HEALTH_UDP_CLEANUP_INTERVAL_SECS", "1".into()),
            ],
            wait_ports: vec![],
        },
    );
    v.wait_udp(port);
    let mut unanswered = Vec::new();
    for i in 0..8 {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let msg = format!("q{i}");
        let first = udp_ask(&sock, port, &msg, Duration::from_millis(400));
        let answer = first.or_else(|| udp_ask(&sock, port, &msg, Duration::from_millis(400)));
        if answer.as_deref() != Some(&format!("U:{msg}")) {
            unanswered.push(i);
        }
    }
    assert!(
        unanswered.is_empty(),
        "clients never answered: {unanswered:?}\n{}",
        v.logs()
    );
    assert!(
        v.logs()
            .contains(&format!("Marked UDP target 127.0.0.2:{p} as unavailable")),
        "{}",
        v.logs()
    );
    assert!(
        v.wait_log(
            &format!("UDP target 127.0.0.2:{p} is tried again"),
            Duration::from_secs(8)
        ),
        "{}",
        v.logs()
    );
}
