//! Several vane processes on one host: with `REUSE_PORT` they share a listening port (the
//! kernel spreads connections over them); without it the second one cannot bind.

mod common;

use std::time::Duration;

use common::*;

fn gateway(port: u16, echo: &Echo, reuse: bool) -> (Vane, ConfigDir) {
    let cfg = ConfigDir::new();
    cfg.tcp_proxy(port, echo.addr);
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("REUSE_PORT", reuse.to_string())],
            wait_ports: vec![],
        },
    );
    (v, cfg)
}

#[test]
fn reuse_port_lets_two_processes_serve_one_port() {
    let (a, b) = (Echo::start("A"), Echo::start("B"));
    let port = free_port();
    let (va, _ca) = gateway(port, &a, true);
    assert!(va.wait_log(
        &format!("Tcp listener on port {port} is UP"),
        Duration::from_secs(10)
    ));
    let (vb, _cb) = gateway(port, &b, true);
    assert!(
        vb.wait_log(
            &format!("Tcp listener on port {port} is UP"),
            Duration::from_secs(10)
        ),
        "{}",
        vb.logs()
    );
    let mut seen = std::collections::HashSet::new();
    for i in 0..200 {
        if let Some(answer) = ask_once(port, &format!("q{i}")) {
            seen.insert(answer.split(':').next().unwrap_or_default().to_string());
        }
        if seen.len() == 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "both processes served the port: {seen:?}");
}

#[test]
fn without_reuse_port_the_second_process_cannot_bind() {
    let (a, b) = (Echo::start("A"), Echo::start("B"));
    let port = free_port();
    let (va, _ca) = gateway(port, &a, false);
    assert!(va.wait_log(
        &format!("Tcp listener on port {port} is UP"),
        Duration::from_secs(10)
    ));
    let (vb, _cb) = gateway(port, &b, false);
    assert!(
        vb.wait_log("cannot bind tcp", Duration::from_secs(10)),
        "{}",
        vb.logs()
    );
    for i in 0..20 {
        assert_eq!(ask_once(port, &format!("q{i}")), Some(format!("A:q{i}")));
    }
}
