//! The management API over TCP and the Unix socket, the actor tree it reports, and JSON logs.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;

fn unix_get(v: &Vane, path: &str, token: Option<&str>) -> (u16, String) {
    let Ok(mut s) = UnixStream::connect(v.console_sock()) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let _ = s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

#[test]
fn actor_tree_status_and_unix_console() {
    let cfg = ConfigDir::new();
    let (tcp, udp) = (free_port(), free_port());
    cfg.tcp_proxy(tcp, "127.0.0.1:9".parse().expect("addr"));
    cfg.write(
        &format!("listener/[{udp}]/udp.yaml"),
        &proxy_flow("127.0.0.1:9".parse().expect("addr")),
    );
    let v = Vane::start(&cfg, &[tcp]);
    // The registries' children start just after the console answers: wait for all of them.
    assert!(wait_until(Duration::from_secs(5), || {
        let body = v.get("/actors").1;
        ["nodes", "certs", "plugins", "health"]
            .iter()
            .all(|c| body.contains(&format!("\"registries/{c}\"")))
    }));
    let (code, body) = v.get("/actors");
    assert_eq!(code, 200);
    let rows: serde_json::Value = serde_json::from_str(&body).expect("json");
    let names: Vec<String> = rows
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default().to_string())
        .collect();
    for want in [
        "root",
        "config",
        "registries",
        "registries/nodes",
        "registries/certs",
        "registries/plugins",
        "registries/health",
        "registries/acme",
        "memory",
        "quic",
        "listeners",
        "management",
        "metrics",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    assert!(
        names.contains(&format!("listeners/tcp:{tcp}"))
            && names.contains(&format!("listeners/udp:{udp}")),
        "{names:?}"
    );
    let listener = rows
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|x| x["name"] == format!("listeners/tcp:{tcp}"))
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(listener["parent"], "listeners");
    assert_eq!(listener["status"], "running");

    let (code, body) = v.get("/status");
    assert_eq!(code, 200);
    let s: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(s["data"]["listeners"]["tcp"], serde_json::json!([tcp]));
    assert_eq!(s["data"]["listeners"]["udp"], serde_json::json!([udp]));
    assert_eq!(
        s["data"]["resources"]["certificates"], 1,
        "the generated default pair"
    );
    // 0.9.2's `?type=` filter on the plugin list.
    let kinds = |query: &str| {
        let (code, body) = v.get(&format!("/plugins{query}"));
        let data = serde_json::from_str::<serde_json::Value>(&body).expect("json")["data"].clone();
        let keys: Vec<String> = data
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        (code, keys)
    };
    assert_eq!(kinds(""), (200, vec!["internal".into(), "external".into()]));
    assert_eq!(kinds("?type=internal"), (200, vec!["internal".to_string()]));
    assert_eq!(kinds("?type=external"), (200, vec!["external".to_string()]));
    assert_eq!(kinds("?type=bogus").0, 400);

    assert!(v.logs().contains(&format!(
        "Management console listening on unix:{}",
        v.console_sock().display()
    )));
    assert_eq!(unix_get(&v, "/health", None).0, 200);
    assert_eq!(unix_get(&v, "/actors", None).0, 401);
    assert_eq!(unix_get(&v, "/actors", Some(TOKEN)).0, 200);
    assert_eq!(
        http(v.mgmt, "GET", "/health", None).0,
        200,
        "health is public"
    );
    assert_eq!(http(v.mgmt, "GET", "/status", None).0, 401);
}

#[test]
fn json_logs_keep_the_operator_substrings() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, "127.0.0.1:9".parse().expect("addr"));
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("LOG_FORMAT", "json".into()), ("LOG_LEVEL", "info".into())],
            wait_ports: vec![port],
        },
    );
    let logs = v.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !lines.is_empty() && lines.len() == logs.lines().count(),
        "every line is JSON:\n{logs}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("PORT {port} TCP UP")))),
        "{logs}"
    );
    assert!(
        lines.iter().all(|l| l["level"] != "DEBUG"),
        "LOG_LEVEL=info hides debug lines"
    );
}

#[test]
fn flows_are_edited_through_the_api_and_applied_at_once() {
    let up = Echo::start("API");
    let cfg = ConfigDir::new();
    let base = free_port();
    cfg.tcp_proxy(base, up.addr);
    let v = Vane::start(&cfg, &[base]);
    let port = free_port();
    let flow = format!(
        r#"{{"connection": {{"internal.transport.proxy": {{"input": {{"target.ip": "127.0.0.1", "target.port": {}}}}}}}}}"#,
        up.addr.port()
    );
    let call = |m: &str, p: &str, b: &str| http_with(v.mgmt, m, p, Some(TOKEN), b);

    assert_eq!(
        call("POST", &format!("/ports/{port}/tcp/flow/validate"), &flow).0,
        200
    );
    let (code, body) = call("POST", &format!("/ports/{port}/tcp/flow"), &flow);
    assert_eq!(code, 201, "{body}");
    assert!(
        body.contains(&format!("listener/[{port}]/tcp.json")),
        "{body}"
    );
    assert!(
        cfg.path()
            .join(format!("listener/[{port}]/tcp.json"))
            .is_file(),
        "written where the loader reads"
    );
    assert!(
        wait_until(Duration::from_secs(2), || ask_once(port, "x").as_deref()
            == Some("API:x")),
        "applied without waiting for the watcher\n{}",
        v.logs()
    );
    assert_eq!(
        call("POST", &format!("/ports/{port}/tcp/flow"), &flow).0,
        409
    );
    let (code, body) = call("GET", &format!("/ports/{port}/tcp/flow"), "");
    assert_eq!(code, 200);
    assert!(body.contains("internal.transport.proxy"), "{body}");

    let bad =
        r#"{"connection": {"internal.transport.proxy": {"input": {"target.ip": "127.0.0.1"}}}}"#;
    let (code, body) = call("PUT", &format!("/ports/{port}/tcp/flow"), bad);
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("missing required parameter `target.port`"),
        "{body}"
    );
    assert_eq!(
        ask_once(port, "y").as_deref(),
        Some("API:y"),
        "the refused edit changed nothing"
    );

    let resolver = r#"{"connection": {"internal.transport.abort": {}}}"#;
    assert_eq!(call("PUT", "/resolvers/tls", resolver).0, 200);
    assert!(
        cfg.path().join("resolver/tls.json").is_file(),
        "resolver/, not resolvers/"
    );
    assert!(call("GET", "/resolvers", "").1.contains("tls"));

    assert_eq!(
        call("DELETE", &format!("/ports/{port}/tcp/flow"), "").0,
        204
    );
    assert!(wait_until(Duration::from_secs(2), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    }));
}

#[test]
fn nodes_are_edited_through_the_api() {
    let up = Echo::start("N");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write(&format!("listener/[{port}]/tcp.yaml"), &format!("connection:\n  internal.transport.proxy.node:\n    input: {{ target.node: web, target.port: {} }}\n", up.addr.port()));
    let v = Vane::start(&cfg, &[port]);
    let call = |m: &str, p: &str, b: &str| http_with(v.mgmt, m, p, Some(TOKEN), b);
    assert_eq!(ask_once(port, "x"), None, "node `web` does not exist yet");
    let bad =
        r#"{"name": "web", "ips": [{"address": "not-an-ip", "ports": [80], "type": "ipv4"}]}"#;
    let (code, body) = call("POST", "/nodes", bad);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("nodes.0.ips.0.address"), "{body}");
    let good = format!(
        r#"{{"name": "web", "ips": [{{"address": "127.0.0.1", "ports": [{}], "type": "ipv4"}}]}}"#,
        up.addr.port()
    );
    assert_eq!(call("POST", "/nodes", &good).0, 201);
    assert!(cfg.path().join("nodes.json").is_file());
    assert_eq!(
        ask_once(port, "y").as_deref(),
        Some("N:y"),
        "in force when the API answered"
    );
    assert_eq!(call("POST", "/nodes", &good).0, 409);
    let (code, body) = call("GET", "/nodes", "");
    assert_eq!(code, 200);
    assert!(
        body.contains("\"source_format\":\"json\"") && body.contains("127.0.0.1"),
        "{body}"
    );
    assert_eq!(call("DELETE", "/nodes/web", "").0, 204);
    assert_eq!(ask_once(port, "z"), None, "the node is gone");
}

#[test]
fn external_plugins_are_registered_and_really_removed() {
    let up = Echo::start("P");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.write_exec(
        "bin/allow.sh",
        "#!/bin/sh\nread line\necho '{\"branch\":\"success\"}'\n",
    );
    let v = Vane::start(&cfg, &[]);
    let call = |m: &str, p: &str, b: &str| http_with(v.mgmt, m, p, Some(TOKEN), b);
    let decl = r#"{"name": "gate.allow", "role": "middleware", "driver": {"type": "command", "program": "allow.sh"}, "params": [], "output": ["success", "failure"]}"#;
    assert_eq!(
        call("POST", "/plugins/internal.transport.abort", decl).0,
        400,
        "built-in names are refused"
    );
    assert_eq!(
        call(
            "POST",
            "/plugins/gate.allow",
            &decl.replace("allow.sh", "../../bin/sh")
        )
        .0,
        400,
        "programs outside bin/ are refused"
    );
    assert_eq!(call("POST", "/plugins/gate.allow", decl).0, 201);
    let (code, info) = call("GET", "/plugins/gate.allow", "");
    assert_eq!(code, 200, "{info}");
    assert!(
        info.contains("\"type\":\"external\"") && info.contains("\"success\""),
        "{info}"
    );
    let (code, info) = call("GET", "/plugins/internal.transport.proxy", "");
    assert_eq!(code, 200);
    assert!(
        info.contains("target.port") && info.contains("\"param_type\":\"integer\""),
        "{info}"
    );
    let flow = format!(
        r#"{{"connection": {{"gate.allow": {{"output": {{"success": {{"internal.transport.proxy": {{"input": {{"target.ip": "127.0.0.1", "target.port": {}}}}}}}, "failure": {{"internal.transport.abort": {{}}}}}}}}}}}}"#,
        up.addr.port()
    );
    let (code, body) = call("POST", &format!("/ports/{port}/tcp/flow"), &flow);
    assert_eq!(
        code, 201,
        "a flow naming the new plugin validates at once: {body}"
    );
    assert!(wait_until(Duration::from_secs(2), || ask_once(port, "x")
        .as_deref()
        == Some("P:x")));
    let (code, body) = call("DELETE", "/plugins/gate.allow", "");
    assert_eq!(code, 409, "in use: {body}");
    assert_eq!(
        call("DELETE", &format!("/ports/{port}/tcp/flow"), "").0,
        204
    );
    assert_eq!(call("DELETE", "/plugins/gate.allow", "").0, 200);
    let (code, body) = call("POST", &format!("/ports/{port}/tcp/flow/validate"), &flow);
    assert_eq!(code, 400, "the plugin is gone from the registry: {body}");
    assert!(body.contains("unknown plugin `gate.allow`"), "{body}");
}

#[test]
fn a_config_exported_from_one_gateway_runs_on_another_and_bad_imports_change_nothing() {
    let up = Echo::start("X");
    let src = ConfigDir::new();
    let port = free_port();
    src.tcp_proxy(port, up.addr);
    let a = Vane::start(&src, &[port]);
    let (code, tgz) = http_bytes(a.mgmt, "GET", "/config/export", b"");
    assert_eq!(code, 200);
    assert!(tgz.starts_with(&[0x1f, 0x8b]), "gzip");
    drop(a);

    let dst = ConfigDir::new();
    let other = free_port();
    dst.tcp_proxy(other, up.addr);
    let b = Vane::start(&dst, &[other]);
    let bad = {
        let bad_dir = ConfigDir::new();
        bad_dir.write(
            "listener/[1]/tcp.yaml",
            "connection:\n  internal.nope: {}\n",
        );
        vane::ops::archive::export(bad_dir.path()).expect("export")
    };
    let (code, body) = http_bytes(b.mgmt, "POST", "/config/import", &bad);
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("unknown plugin"));
    assert_eq!(
        ask_once(other, "still").as_deref(),
        Some("X:still"),
        "a refused import changes nothing"
    );

    let (code, body) = http_bytes(b.mgmt, "POST", "/config/import", &tgz);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        wait_until(Duration::from_secs(3), || ask_once(port, "moved")
            .as_deref()
            == Some("X:moved")),
        "the imported listener serves\n{}",
        b.logs()
    );
    assert!(
        wait_until(Duration::from_secs(3), || std::net::TcpStream::connect((
            "127.0.0.1",
            other
        ))
        .is_err()),
        "the replaced listener is gone"
    );
}

#[test]
fn the_memory_monitor_and_process_metrics_are_exported() {
    let cfg = ConfigDir::new();
    let v = Vane::start_with(
        &cfg,
        Opts {
            env: vec![
                ("L7_ADAPTIVE_MEMORY_LIMIT", "false".into()),
                ("L7_GLOBAL_BUFFER_LIMIT", "123456789".into()),
            ],
            wait_ports: vec![],
        },
    );
    assert!(
        wait_until(Duration::from_secs(3), || v
            .metric("vane_l7_memory_limit_bytes")
            == Some(123_456_789.0)),
        "{}",
        v.metrics_text()
    );
    assert_eq!(v.metric("vane_l7_buffered_bytes"), Some(0.0));
    assert!(v.metric("process_resident_memory_bytes").unwrap_or(0.0) > 1_000_000.0);
    assert!(v.metric("process_open_fds").unwrap_or(0.0) > 3.0);
    let adaptive = Vane::start(&cfg, &[]);
    // The monitor publishes its first reading shortly after start, not before the harness
    // sees the process ready.
    let limit = || adaptive.metric("vane_l7_memory_limit_bytes").unwrap_or(0.0);
    assert!(
        wait_until(Duration::from_secs(3), || limit() > 0.0),
        "no limit published"
    );
    assert!(
        limit() != 536_870_912.0,
        "adaptive limit follows available memory: {}",
        limit()
    );
}

/// vane turns transparent huge pages off for itself (its resident memory grew in 2 MiB steps
/// otherwise), unless `MIMALLOC_ALLOW_THP` says to keep them.
#[test]
fn transparent_huge_pages_are_off_unless_asked_for() {
    let thp = |pid: u32| proc_status(pid, "THP_enabled");
    if thp(std::process::id()).is_none() {
        eprintln!("this kernel does not report THP_enabled; nothing to check");
        return;
    }
    let cfg = ConfigDir::new();
    let off = Vane::start(&cfg, &[]);
    assert_eq!(thp(off.pid()).as_deref(), Some("0"));
    let kept = Vane::start_with(
        &cfg,
        Opts {
            env: vec![("MIMALLOC_ALLOW_THP", "1".into())],
            wait_ports: vec![],
        },
    );
    assert_eq!(
        thp(kept.pid()).as_deref(),
        thp(std::process::id()).as_deref()
    );
}

/// A stopped gateway leaves no `console.sock` behind.
#[test]
fn the_console_socket_is_removed_on_shutdown() {
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, "127.0.0.1:9".parse().expect("addr"));
    let mut v = Vane::start(&cfg, &[port]);
    let sock = v.console_sock();
    assert!(
        wait_until(Duration::from_secs(3), || sock.exists()),
        "the socket is there while vane runs"
    );
    assert_eq!(v.terminate(Duration::from_secs(15)), Some(0));
    assert!(!sock.exists(), "{} left behind", sock.display());
}

/// The API is described by `GET /.well-known/openapi.json`, generated from the one route
/// table the console enforces: every declared route reaches a handler (none answers "no such
/// route"), the document lists exactly the declared routes, undeclared ones are refused, and
/// `GET /` sends a browser to the API page (0.9.2's `/swagger-ui`).
#[test]
fn the_openapi_document_is_the_route_table_and_every_route_answers() {
    use vane::ops::routes::ROUTES;
    let cfg = ConfigDir::new();
    let v = Vane::start(&cfg, &[]);
    // Public as in 0.9.2 (it names routes, nothing secret); the routes it lists are not.
    for r in ROUTES {
        let path = r
            .path
            .replace("{name}", "x")
            .replace("{id}", "x")
            .replace("{port}", "1");
        let (code, _) = http(v.mgmt, r.method, &path, None);
        assert_eq!(
            code == 401,
            !r.public,
            "{} {path} without a token: {code}",
            r.method
        );
    }
    let (code, body) = http(v.mgmt, "GET", "/.well-known/openapi.json", None);
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).expect("OpenAPI JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut listed = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("operations").keys() {
            listed.insert(format!("{} {path}", method.to_ascii_uppercase()));
        }
    }
    let declared: std::collections::BTreeSet<String> = ROUTES
        .iter()
        .map(|r| format!("{} {}", r.method, r.path.replace("*}", "}")))
        .collect();
    assert_eq!(listed, declared);
    let port = free_port().to_string();
    for route in ROUTES {
        let path = route
            .path
            .replace("{port}", &port)
            .replace("{proto}", "tcp")
            .replace("{name}", "nope")
            .replace("{id}", "nope.test")
            .replace("{actor*}", "nonexistent");
        let token = (!route.public).then_some(TOKEN);
        let (code, body) = http(v.mgmt, route.method, &path, token);
        assert!(code != 0 && code != 401, "{} {path}: {code}", route.method);
        assert!(
            !body.contains("no such route"),
            "{} {path} is declared but has no handler: {code} {body}",
            route.method
        );
        if route.public {
            let (anonymous, _) = http(v.mgmt, route.method, &path, None);
            assert_ne!(anonymous, 401, "{} {path} is public", route.method);
        }
    }
    for (method, path) in [
        ("GET", "/nope"),
        ("PATCH", "/ports"),
        ("GET", "/ports/80/tcp/flow/x"),
    ] {
        let (code, body) = v.request(method, path);
        assert_eq!(code, 404, "{method} {path}");
        assert!(body.contains("no such route"), "{method} {path}: {body}");
    }
    let (code, _) = http(v.mgmt, "GET", "/", None);
    assert_eq!(code, 307);
    let (code, page) = http(v.mgmt, "GET", "/swagger-ui", None);
    assert_eq!(code, 200);
    assert!(page.contains("/ui/api.js"), "{page}");
}

/// 0.9.2's `POST /ports/{port}/{tcp|udp}` (an empty listener file to fill in later) and
/// `DELETE /ports/{port}/{tcp|udp}` (that protocol's file in every format).
#[test]
fn listener_files_are_created_empty_and_deleted_in_every_format() {
    let cfg = ConfigDir::new();
    let v = Vane::start(&cfg, &[]);
    let port = free_port();
    let dir = cfg.path().join(format!("listener/[{port}]"));
    let (code, body) = v.request("POST", &format!("/ports/{port}/tcp"));
    assert_eq!(code, 201, "{body}");
    assert!(dir.join("tcp.toml").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("tcp.toml")).expect("file"),
        ""
    );
    assert_eq!(v.request("POST", &format!("/ports/{port}/tcp")).0, 409);
    // The same protocol in another format too: DELETE takes every one.
    std::fs::write(dir.join("tcp.yaml"), "").expect("write");
    assert_eq!(v.request("DELETE", &format!("/ports/{port}/tcp")).0, 204);
    assert!(!dir.join("tcp.toml").exists() && !dir.join("tcp.yaml").exists());
    assert_eq!(v.request("DELETE", &format!("/ports/{port}/tcp")).0, 404);
    assert_eq!(v.request("POST", &format!("/ports/{port}/sctp")).0, 404);
    assert_eq!(v.request("POST", &format!("/ports/{port}/udp")).0, 201);
    assert!(dir.join("udp.toml").is_file());
}

#[test]
fn system_names_the_build_without_a_token() {
    let cfg = ConfigDir::new();
    let v = Vane::start(&cfg, &[]);
    let (code, body) = http(v.mgmt, "GET", "/system", None);
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("json");
    let d = &doc["data"];
    assert_eq!(d["package"]["name"], "vane");
    assert_eq!(d["package"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d["package"]["license"], "MIT");
    let rustc = d["build"]["rust_version"].as_str().unwrap_or_default();
    assert!(rustc.starts_with("rustc 1."), "{rustc}");
    let cargo = d["build"]["cargo_version"].as_str().unwrap_or_default();
    assert!(cargo.starts_with("cargo 1."), "{cargo}");
    assert!(
        d["build"]["build_date"]
            .as_str()
            .is_some_and(|s| s.ends_with(" GMT")),
        "{body}"
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head {
        assert_eq!(d["build"]["git_commit"], head.as_str());
    }
    assert_eq!(d["runtime"]["platform"], std::env::consts::OS);
}
