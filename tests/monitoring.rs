//! What operators import: a live scrape that Prometheus' own linter accepts, every family
//! documented and described, and the shipped alert rules (docs/monitoring/vane-alerts.yml,
//! with their unit tests) and Grafana dashboard naming only metrics vane exports.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use vane::ops::families::{Kind, FAMILIES};

fn monitoring() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring")
}

/// The `process_*` families written next to the recorder's (`src/ops/metrics.rs`).
const PROCESS: &[(&str, &str)] = &[
    ("process_resident_memory_bytes", "gauge"),
    ("process_virtual_memory_bytes", "gauge"),
    ("process_open_fds", "gauge"),
    ("process_cpu_seconds_total", "counter"),
];

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    }
}

fn known() -> BTreeMap<&'static str, &'static str> {
    FAMILIES
        .iter()
        .map(|f| (f.name, kind_name(f.kind)))
        .chain(PROCESS.iter().copied())
        .collect()
}

#[test]
fn a_live_scrape_passes_promtool_and_names_only_known_families() {
    let promtool = ensure_tool("promtool", "prometheus");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.plain_http(port, "httpx");
    cfg.write(
        "application/httpx.yaml",
        "pipeline:\n  internal.terminator.response:\n    input: { status: 200, body: ok }\n",
    );
    let v = Vane::start(&cfg, &[port]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let r = h1(&mut s, &["GET / HTTP/1.1\r\nHost: a\r\n\r\n"; 3]);
    assert!(r.iter().all(|(status, _, _)| *status == 200), "{r:?}");
    assert!(wait_until(Duration::from_secs(5), || v
        .metrics_text()
        .contains("vane_request_duration_seconds_bucket")));
    let text = v.metrics_text();
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    lint.stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("scrape to promtool");
    let out = lint.wait_with_output().expect("promtool ran");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
    let known = known();
    let mut seen = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
        assert_eq!(
            known.get(name),
            Some(&kind),
            "`{name}` ({kind}) is not in ops::families"
        );
        seen += 1;
    }
    assert!(
        seen >= 10,
        "a scrape after traffic shows the families it touched ({seen})"
    );
}

/// docs/metrics.md and `ops::families` list the same families with the same types.
#[test]
fn every_family_is_documented_and_every_documented_family_exists() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .expect("docs/metrics.md");
    let documented: BTreeMap<String, String> = doc
        .lines()
        .filter_map(|l| {
            let mut cells = l.split('|').map(str::trim).skip(1);
            let name = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let kind = cells.next()?;
            matches!(kind, "counter" | "gauge" | "histogram")
                .then(|| (name.to_string(), kind.to_string()))
        })
        .collect();
    let described: BTreeMap<String, String> = FAMILIES
        .iter()
        .map(|f| (f.name.to_string(), kind_name(f.kind).to_string()))
        .collect();
    assert_eq!(
        documented, described,
        "docs/metrics.md and src/ops/families.rs disagree"
    );
    assert!(FAMILIES.iter().all(|f| !f.help.trim().is_empty()));
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = ensure_tool("promtool", "prometheus");
    let dir = monitoring();
    for args in [
        &["check", "rules", "vane-alerts.yml"][..],
        &["test", "rules", "vane-alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool ran");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The metric names an expression uses (`vane_*`, `process_*`), histogram series folded into
/// their family.
fn names_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        let word = &expr[start..i];
        if word.starts_with("vane_") || word.starts_with("process_") {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| word.strip_suffix(s))
                .filter(|base| {
                    FAMILIES
                        .iter()
                        .any(|f| f.name == *base && f.kind == Kind::Histogram)
                })
                .unwrap_or(word);
            out.insert(family.to_string());
        }
        i += 1;
    }
    out
}

#[test]
fn the_dashboard_and_the_rules_name_only_metrics_vane_exports() {
    let dir = monitoring();
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("grafana/vane-dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut exprs = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => collect(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dash, &mut exprs);
    let panels = dash["panels"].as_array().map_or(0, Vec::len);
    assert!(
        panels >= 20 && exprs.len() >= 20,
        "{panels} panels, {} queries",
        exprs.len()
    );
    let rules = std::fs::read_to_string(dir.join("vane-alerts.yml")).expect("rules");
    exprs.extend(
        rules
            .lines()
            .filter(|l| l.trim_start().starts_with("expr:") || l.starts_with("          "))
            .map(str::to_string),
    );
    let known = known();
    let mut used = BTreeSet::new();
    for e in &exprs {
        for name in names_in(e) {
            assert!(
                known.contains_key(name.as_str()),
                "`{name}` in `{e}` is not a metric vane exports"
            );
            used.insert(name);
        }
    }
    assert!(
        used.len() >= 25,
        "the dashboard and rules cover the families ({used:?})"
    );
}
