//! L4 proxying over real sockets: TCP and UDP, by ip, node and domain, flow branches,
//! legacy rules, formats, limits and timeouts.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

#[test]
fn tcp_flow_proxies_to_an_ip_and_counts_the_connection() {
    let up = Echo::start("A");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let v = Vane::start(&cfg, &[port]);
    let label = format!("vane_connections_total{{listener=\"tcp:{port}\",protocol=\"tcp\"}}");
    // The readiness probe of the harness was a connection too: wait until it is counted (the
    // series exists at 0 from the bind on), or it would be counted with ours.
    assert!(wait_until(Duration::from_secs(3), || v
        .metric(&label)
        .is_some_and(|n| n >= 1.0)));
    let before = v.metric(&label).unwrap_or(0.0);
    let mut c = Client::connect(port).expect("connect");
    assert_eq!(c.ask("hello").as_deref(), Some("A:hello"));
    assert_eq!(
        c.ask("again").as_deref(),
        Some("A:again"),
        "same connection keeps relaying"
    );
    drop(c);
    assert!(
        wait_until(Duration::from_secs(3), || v.metric(&label)
            == Some(before + 1.0)),
        "{}",
        v.metrics_text()
    );
    let active = format!("vane_connections_active{{listener=\"tcp:{port}\",protocol=\"tcp\"}}");
    assert!(
        wait_until(Duration::from_secs(3), || v.metric(&active) == Some(0.0)),
        "active gauge back to 0"
    );
}

/// A listener that only relays keeps Linux's quick ACKs for a new connection's first data
/// (a client that writes twice before it reads would wait on a delayed one): the client's
/// first bytes are acknowledged at once while the upstream says nothing. Listeners that
/// upgrade hold that ACK for the answer instead (`l7` h1_wire).
#[test]
fn a_relay_listener_acknowledges_the_first_data_at_once() {
    let up = silent::hanging_upstream();
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up);
    let _v = Vane::start(&cfg, &[port]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    let before = tcp_info::segments_in(&s);
    std::io::Write::write_all(&mut s, b"hello\n").expect("write");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        tcp_info::segments_in(&s) - before,
        1,
        "the first data was not acknowledged at once"
    );
}

#[test]
fn udp_flow_proxies_and_late_replies_still_arrive() {
    // 0.9.2 stopped relaying replies after 500 ms of silence; sessions here live on.
    let up = UdpEcho::start("U", Duration::from_millis(1200));
    let cfg = ConfigDir::new();
    let port = free_port();
    let tcp_guard = free_port();
    cfg.write(&format!("listener/[{port}]/udp.yaml"), &proxy_flow(up.addr));
    cfg.tcp_proxy(tcp_guard, up.addr);
    let v = Vane::start(&cfg, &[tcp_guard]);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert_eq!(
        udp_ask(&sock, port, "ping", Duration::from_secs(5)).as_deref(),
        Some("U:ping")
    );
    assert_eq!(
        udp_ask(&sock, port, "second", Duration::from_secs(5)).as_deref(),
        Some("U:second"),
        "same session, same upstream socket"
    );
    let active = format!("vane_connections_active{{listener=\"udp:{port}\",protocol=\"udp\"}}");
    assert_eq!(v.metric(&active), Some(1.0), "one live UDP session");
}

fn branching_flow(http: std::net::SocketAddr, limited: std::net::SocketAddr) -> String {
    format!(
        r#"connection:
  internal.protocol.detect:
    input: {{ method: http, payload: "{{{{req.peek_buffer_hex}}}}" }}
    output:
      "true":
        internal.transport.proxy:
          input: {{ target.ip: "{hip}", target.port: {hport} }}
      "false":
        internal.common.match:
          input: {{ left: "{{{{conn.ip}}}}", right: "127.0.0.1", operator: equals }}
          output:
            "true":
              internal.common.ratelimit.min:
                input: {{ key: "{{{{conn.ip}}}}-{{{{server.port}}}}", limit: 3 }}
                output:
                  "true":
                    internal.transport.proxy:
                      input: {{ target.ip: "{lip}", target.port: {lport} }}
                  "false":
                    internal.transport.abort: {{}}
            "false":
              internal.transport.abort: {{}}
"#,
        hip = http.ip(),
        hport = http.port(),
        lip = limited.ip(),
        lport = limited.port()
    )
}

#[test]
fn detect_match_ratelimit_and_abort_branches() {
    let web = Echo::start("WEB");
    let other = Echo::start("RAW");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &branching_flow(web.addr, other.addr),
    );
    // No readiness probe: a probe connection would itself count against the rate limit.
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![],
            wait_ports: vec![],
        },
    );
    assert!(v.wait_log(&format!("port {port} is UP"), Duration::from_secs(5)));
    // HTTP-looking bytes take the detect=true branch.
    assert_eq!(
        ask_once(port, "GET / HTTP/1.1").as_deref(),
        Some("WEB:GET / HTTP/1.1")
    );
    // Other bytes from 127.0.0.1 pass the rate limiter three times a minute, then abort.
    let answers: Vec<Option<String>> = (0..5).map(|i| ask_once(port, &format!("raw{i}"))).collect();
    let passed = answers
        .iter()
        .filter(|a| a.as_deref().is_some_and(|s| s.starts_with("RAW:")))
        .count();
    assert_eq!(passed, 3, "{answers:?}");
    assert!(
        answers[3].is_none() && answers[4].is_none(),
        "the 4th and 5th are aborted: {answers:?}"
    );
}

#[test]
fn proxy_node_and_domain_via_a_dns_stub() {
    let up = Echo::start("N");
    let dns = DnsStub::start(&["vane.local"]);
    let cfg = ConfigDir::new();
    let (pn, pd, px) = (free_port(), free_port(), free_port());
    cfg.write(
        "nodes.yaml",
        &format!("nodes:\n  - name: web\n    ips:\n      - {{ address: 127.0.0.1, ports: [{}], type: ipv4 }}\n", up.addr.port()),
    );
    cfg.write(
        &format!("listener/[{pn}]/tcp.yaml"),
        &format!("connection:\n  internal.transport.proxy.node:\n    input: {{ target.node: web, target.port: {}, strategy: round_robin }}\n", up.addr.port()),
    );
    let domain_flow = |name: &str| {
        format!("connection:\n  internal.transport.proxy.domain:\n    input: {{ target.domain: {name}, target.port: {} }}\n", up.addr.port())
    };
    cfg.write(
        &format!("listener/[{pd}]/tcp.yaml"),
        &domain_flow("vane.local"),
    );
    cfg.write(
        &format!("listener/[{px}]/tcp.yaml"),
        &domain_flow("missing.example"),
    );
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("NAMESERVER1_PORT", dns.port.to_string()),
                ("NAMESERVER2_PORT", dns.port.to_string()),
            ],
            wait_ports: vec![pn, pd, px],
        },
    );
    assert_eq!(ask_once(pn, "node").as_deref(), Some("N:node"));
    assert_eq!(ask_once(pd, "domain").as_deref(), Some("N:domain"));
    assert_eq!(
        ask_once(px, "nxdomain"),
        None,
        "an unresolvable name closes the connection"
    );
}

#[test]
fn legacy_rules_detect_prefix_and_fallback_with_serial_balancing() {
    let a = Echo::start("A");
    let b = Echo::start("B");
    let c = Echo::start("C");
    let fb = Echo::start("FB");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!(
            "protocols:\n  - name: Special\n    priority: 1\n    detect: {{ method: prefix, pattern: \"SPECIAL\" }}\n    destination:\n      type: forward\n      forward:\n        strategy: serial\n        targets: [ {{ ip: 127.0.0.1, port: {} }}, {{ ip: 127.0.0.1, port: {} }}, {{ ip: 127.0.0.1, port: {} }} ]\n  - name: rest\n    priority: 2\n    detect: {{ method: fallback, pattern: any }}\n    destination:\n      type: forward\n      forward:\n        targets: [ {{ ip: 127.0.0.1, port: {} }} ]\n",
            a.addr.port(),
            b.addr.port(),
            c.addr.port(),
            fb.addr.port()
        ),
    );
    let _v = Vane::start(&cfg, &[port]);
    let mut counts = std::collections::HashMap::new();
    for i in 0..30 {
        let r = ask_once(port, &format!("x SPECIAL {i}")).expect("answer");
        *counts
            .entry(r.split(':').next().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(counts.get("A"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("B"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("C"), Some(&10), "{counts:?}");
    assert_eq!(
        ask_once(port, "anything else").as_deref(),
        Some("FB:anything else")
    );
}

#[test]
fn all_formats_and_ron_behave_the_same() {
    let up = Echo::start("F");
    let cfg = ConfigDir::new();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let (ip, p) = (up.addr.ip(), up.addr.port());
    cfg.write(
        &format!("listener/[{}]/tcp.yaml", ports[0]),
        &proxy_flow(up.addr),
    );
    cfg.write(
        &format!("listener/[{}]/tcp.yml", ports[1]),
        &proxy_flow(up.addr),
    );
    cfg.write(&format!("listener/[{}]/tcp.json", ports[2]), &format!(r#"{{"connection": {{"internal.transport.proxy": {{"input": {{"target.ip": "{ip}", "target.port": {p}}}}}}}}}"#));
    cfg.write(&format!("listener/[{}]/tcp.toml", ports[3]), &format!("[connection.\"internal.transport.proxy\".input]\n\"target.ip\" = \"{ip}\"\n\"target.port\" = {p}\n"));
    cfg.write(
        &format!("listener/[{}]/tcp.ron", ports[4]),
        &format!(r#"( protocols: [ ( name: "all", priority: 1, detect: (method: "fallback", pattern: "x"), destination: (type: "forward", forward: Some((strategy: "serial", targets: [(ip: "{ip}", port: {p})]))) ) ] )"#),
    );
    let _v = Vane::start(&cfg, &ports);
    for port in ports {
        assert_eq!(
            ask_once(port, "fmt").as_deref(),
            Some("F:fmt"),
            "port {port}"
        );
    }
}

#[test]
fn per_ip_connection_limit_rejects_and_counts() {
    let up = Echo::start("L");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("MAX_CONNECTIONS_PER_IP", "2".into())],
            wait_ports: vec![],
        },
    );
    assert!(wait_until(Duration::from_secs(5), || v
        .logs()
        .contains(&format!("port {port} is UP"))));
    let mut c1 = Client::connect(port).expect("c1");
    let mut c2 = Client::connect(port).expect("c2");
    assert_eq!(c1.ask("1").as_deref(), Some("L:1"));
    assert_eq!(c2.ask("2").as_deref(), Some("L:2"));
    let mut c3 = Client::connect(port).expect("tcp accepts, vane drops");
    assert_eq!(
        c3.ask("3"),
        None,
        "third connection from the same IP is dropped"
    );
    assert!(wait_until(Duration::from_secs(3), || v
        .metric("vane_connections_rejected_total{reason=\"max_connections_per_ip\"}")
        .unwrap_or(0.0)
        >= 1.0));
    drop(c1);
    assert!(
        wait_until(Duration::from_secs(3), || ask_once(port, "4").as_deref()
            == Some("L:4")),
        "a slot frees up"
    );
    assert_eq!(c2.ask("still").as_deref(), Some("L:still"));
}

#[test]
fn flow_timeout_never_cuts_a_relay_but_idle_timeout_does() {
    let up = Echo::start("T");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("FLOW_EXECUTION_TIMEOUT_SECS", "1".into()),
                ("STREAM_IDLE_TIMEOUT_SECS", "2".into()),
            ],
            wait_ports: vec![port],
        },
    );
    let mut c = Client::connect(port).expect("connect");
    for i in 0..8 {
        assert_eq!(
            c.ask(&format!("tick{i}")).as_deref(),
            Some(format!("T:tick{i}").as_str()),
            "alive after {}ms",
            i * 400
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    let mut idle = Client::connect(port).expect("connect");
    assert_eq!(idle.ask("once").as_deref(), Some("T:once"));
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "idle relay closed after STREAM_IDLE_TIMEOUT_SECS"
    );
}

#[test]
fn upgrade_without_an_l4_plus_layer_closes_cleanly_and_says_why() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tls_listener(port);
    let v = Vane::start(&cfg, &[port]);
    assert_eq!(ask_once(port, "hello"), None);
    assert!(
        v.wait_log("no resolver `tls` is configured", Duration::from_secs(3)),
        "{}",
        v.logs()
    );
}

#[test]
fn sigterm_drains_open_connections_then_exits_zero() {
    let up = Echo::start("D");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    let mut v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("SHUTDOWN_GRACE_SECS", "10".into())],
            wait_ports: vec![port],
        },
    );
    let mut c = Client::connect(port).expect("connect");
    assert_eq!(c.ask("before").as_deref(), Some("D:before"));
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(v.pid().to_string())
        .status();
    assert!(v.wait_log("Signal received", Duration::from_secs(3)));
    assert!(
        wait_until(Duration::from_secs(3), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_err()),
        "no new connections once draining"
    );
    assert_eq!(
        c.ask("during").as_deref(),
        Some("D:during"),
        "open connection still served"
    );
    assert!(v.alive(), "waits for the open connection");
    drop(c);
    assert_eq!(v.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(v.logs().contains("shut down gracefully"));
}

#[test]
fn udp_by_node_by_domain_and_legacy_rules() {
    let up = UdpEcho::start("U", Duration::ZERO);
    let dns = DnsStub::start(&["udp.local"]);
    let cfg = ConfigDir::new();
    let (pn, pd, pl, guard) = (free_port(), free_port(), free_port(), free_port());
    let p = up.addr.port();
    cfg.write("nodes.yaml", &format!("nodes:\n  - name: dns\n    ips:\n      - {{ address: 127.0.0.1, ports: [{p}], type: ipv4 }}\n"));
    cfg.write(&format!("listener/[{pn}]/udp.yaml"), &format!("connection:\n  internal.transport.proxy.node:\n    input: {{ target.node: dns, target.port: {p} }}\n"));
    cfg.write(&format!("listener/[{pd}]/udp.yaml"), &format!("connection:\n  internal.transport.proxy.domain:\n    input: {{ target.domain: udp.local, target.port: {p} }}\n"));
    cfg.write(
        &format!("listener/[{pl}]/udp.yaml"),
        &format!("protocols:\n  - name: all\n    priority: 1\n    detect: {{ method: prefix, pattern: \"ping\" }}\n    destination: {{ type: forward, forward: {{ targets: [ {{ ip: 127.0.0.1, port: {p} }} ] }} }}\n"),
    );
    cfg.tcp_proxy(guard, up.addr);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("NAMESERVER1_PORT", dns.port.to_string()),
                ("NAMESERVER2_PORT", dns.port.to_string()),
            ],
            wait_ports: vec![guard],
        },
    );
    for port in [pn, pd, pl] {
        assert!(v.wait_log(
            &format!("Udp listener on port {port} is UP"),
            Duration::from_secs(5)
        ));
    }
    for port in [pn, pd, pl] {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert_eq!(
            udp_ask(&sock, port, "ping", Duration::from_secs(3)).as_deref(),
            Some("U:ping"),
            "port {port} (node {pn}, domain {pd}, legacy {pl})\n{}",
            v.logs()
        );
    }
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert_eq!(
        udp_ask(&sock, pl, "other", Duration::from_millis(500)),
        None,
        "no legacy rule matches: dropped"
    );
}

#[test]
fn a_server_first_protocol_is_routed_once_the_peek_times_out() {
    // An SMTP-like upstream speaks first; the flow peeks for HTTP, sees nothing and routes.
    let greeter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let up = greeter.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut s in greeter.incoming().flatten().take(8) {
            use std::io::Write;
            let _ = s.write_all(b"220 ready\n");
        }
    });
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!(
            r#"connection:
  internal.protocol.detect:
    input: {{ method: http, payload: "{{{{req.peek_buffer_hex}}}}" }}
    output:
      "true":
        internal.transport.abort: {{}}
      "false":
        internal.transport.proxy:
          input: {{ target.ip: 127.0.0.1, target.port: {} }}
"#,
            up.port()
        ),
    );
    let _v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("TCP_PEEK_TIMEOUT_MS", "300".into())],
            wait_ports: vec![port],
        },
    );
    let mut c = Client::connect(port).expect("connect");
    c.set_timeout(Duration::from_secs(3));
    let start = std::time::Instant::now();
    assert_eq!(c.read_line().as_deref(), Some("220 ready"));
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "the greeting came through only after the peek gave up: {:?}",
        start.elapsed()
    );
}

#[test]
fn ipv6_listener_upstream_and_client_address() {
    let up = Echo::on(
        std::net::TcpListener::bind("[::1]:0").expect("bind ::1"),
        "V6",
    );
    let cfg = ConfigDir::new();
    let port = free_port();
    // Only a client whose address is ::1 is proxied: conn.ip must be the IPv6 text.
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!(
            r#"connection:
  internal.common.match:
    input: {{ left: "{{{{conn.ip}}}}", operator: "==", right: "::1" }}
    output:
      "true":
        internal.transport.proxy:
          input: {{ target.ip: "::1", target.port: {} }}
      "false":
        internal.transport.abort: {{}}
"#,
            up.addr.port()
        ),
    );
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("LISTEN_ADDR", "::1".into())],
            wait_ports: vec![],
        },
    );
    let addr: std::net::SocketAddr = format!("[::1]:{port}").parse().expect("addr");
    assert!(
        wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()),
        "{}",
        v.logs()
    );
    let s = std::net::TcpStream::connect(addr).expect("connect");
    let mut c = Client::from_stream(s);
    assert_eq!(c.ask("six").as_deref(), Some("V6:six"));
}

#[test]
fn tcp_is_served_by_the_configured_data_plane_threads() {
    let up = Echo::start("S");
    for threads in [0usize, 3] {
        let cfg = ConfigDir::new();
        let port = free_port();
        cfg.tcp_proxy(port, up.addr);
        let v = Vane::start_with(
            &cfg,
            Opts {
                env: vec![("DATA_PLANE_THREADS", threads.to_string())],
                wait_ports: vec![port],
            },
        );
        let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", v.pid()))
            .map(|d| {
                d.flatten()
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .map(|n| n.trim().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let shards = names
            .iter()
            .filter(|n| n.starts_with("vane-shard-"))
            .count();
        assert_eq!(shards, threads, "threads: {names:?}");
        // Many connections at once, spread over the shards, all relayed.
        let mut clients: Vec<Client> = (0..40)
            .map(|_| Client::connect(port).expect("connect"))
            .collect();
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(
                c.ask(&format!("n{i}")).as_deref(),
                Some(format!("S:n{i}").as_str())
            );
        }
    }
}

#[test]
fn udp_per_datagram_routes_each_datagram_by_its_own_flow_run() {
    let (a, b) = (
        UdpEcho::start("A", Duration::ZERO),
        UdpEcho::start("B", Duration::ZERO),
    );
    // "a..." (hex 61) goes to A, "b..." (62) to B, anything else is dropped.
    let flow = |per_datagram: bool| {
        format!(
            r#"per_datagram: {per_datagram}
connection:
  internal.common.match:
    input: {{ left: "{{{{req.peek_buffer_hex}}}}", operator: startswith, right: "61" }}
    output:
      "true":
        internal.transport.proxy:
          input: {{ target.ip: 127.0.0.1, target.port: {} }}
      "false":
        internal.common.match:
          input: {{ left: "{{{{req.peek_buffer_hex}}}}", operator: startswith, right: "62" }}
          output:
            "true":
              internal.transport.proxy:
                input: {{ target.ip: 127.0.0.1, target.port: {} }}
            "false":
              internal.transport.abort: {{}}
"#,
            a.addr.port(),
            b.addr.port()
        )
    };
    let cfg = ConfigDir::new();
    let (each, once) = (free_port(), free_port());
    cfg.write(&format!("listener/[{each}]/udp.yaml"), &flow(true));
    cfg.write(&format!("listener/[{once}]/udp.yaml"), &flow(false));
    let v = Vane::start(&cfg, &[]);
    v.wait_udp(each);
    v.wait_udp(once);
    let t = Duration::from_secs(3);
    // One client socket = one session on each listener.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert_eq!(udp_ask(&sock, each, "apple", t).as_deref(), Some("A:apple"));
    assert_eq!(
        udp_ask(&sock, each, "banana", t).as_deref(),
        Some("B:banana")
    );
    assert_eq!(
        udp_ask(&sock, each, "cherry", Duration::from_millis(400)),
        None,
        "aborted datagram"
    );
    assert_eq!(
        udp_ask(&sock, each, "avocado", t).as_deref(),
        Some("A:avocado")
    );
    // By default the first datagram decides for the whole session.
    assert_eq!(udp_ask(&sock, once, "apple", t).as_deref(), Some("A:apple"));
    assert_eq!(
        udp_ask(&sock, once, "banana", t).as_deref(),
        Some("A:banana")
    );
}

/// 0.9.2's legacy `regex` detection accepted look-around (its engine backtracked): such a rule
/// works here too, and `vane check` says which engine runs it.
#[test]
fn legacy_regex_rules_with_look_ahead_route_over_a_real_socket() {
    let (public, admin) = (Echo::start("PUBLIC"), Echo::start("ADMIN"));
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(
        &format!("listener/[{port}]/tcp.yaml"),
        &format!(
            r#"protocols:
  - name: public
    priority: 1
    detect: {{ method: regex, pattern: "^GET (?!/admin)" }}
    destination: {{ type: forward, forward: {{ targets: [ {{ ip: 127.0.0.1, port: {} }} ] }} }}
  - name: rest
    priority: 2
    detect: {{ method: fallback, pattern: any }}
    destination: {{ type: forward, forward: {{ targets: [ {{ ip: 127.0.0.1, port: {} }} ] }} }}
"#,
            public.addr.port(),
            admin.addr.port()
        ),
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(["check", "--config"])
        .arg(cfg.path())
        .output()
        .expect("vane check");
    let text = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(0), "{text}");
    assert!(text.contains("backtracking engine"), "{text}");
    let _v = Vane::start(&cfg, &[port]);
    assert_eq!(
        ask_once(port, "GET /index.html").as_deref(),
        Some("PUBLIC:GET /index.html")
    );
    assert_eq!(
        ask_once(port, "GET /admin/users").as_deref(),
        Some("ADMIN:GET /admin/users")
    );
}

/// A signal that arrives while vane starts is handled, not fatal: `SIGTERM` ends it with a
/// drain and exit 0, `SIGHUP` reloads once it serves. Handlers installed only once start-up
/// was done left a window in which the signal's default action ended the process (a deploy
/// script's `SIGUSR2`, `systemctl reload` or `stop` right after a start). The signal goes at
/// vane's first log line, before any listener is up.
#[test]
fn signals_during_start_up_are_handled() {
    let up = Echo::start("S");
    for sig in ["-TERM", "-HUP"] {
        let cfg = ConfigDir::new();
        let port = free_port();
        cfg.tcp_proxy(port, up.addr);
        let mut v = Vane::spawn(&cfg, &[]);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while v.logs().is_empty() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        let _ = std::process::Command::new("kill")
            .arg(sig)
            .arg(v.pid().to_string())
            .status();
        if sig == "-TERM" {
            assert_eq!(
                v.wait_exit(Duration::from_secs(10)),
                Some(0),
                "SIGTERM during start-up must end in a drain and exit 0\n{}",
                v.logs()
            );
            assert!(v.logs().contains("Signal received"), "{}", v.logs());
        } else {
            assert!(
                v.wait_log("SIGHUP received", Duration::from_secs(10)) && v.alive(),
                "SIGHUP during start-up must reload, not end the process\n{}",
                v.logs()
            );
            assert_eq!(ask_once(port, "after"), Some("S:after".into()));
        }
    }
}
