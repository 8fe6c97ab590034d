//! The systemd unit shipped in dist/: hardened as the issue of operators asks (dedicated user,
//! only CAP_NET_BIND_SERVICE, read-only config, private tmp, notify readiness with a
//! watchdog), and accepted by systemd's own `systemd-analyze verify` where it exists.

use std::path::Path;
use std::process::Command;

fn unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/vane.service"))
        .expect("dist/vane.service")
}

fn directive<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

#[test]
fn the_unit_runs_unprivileged_read_only_and_with_systemd_readiness() {
    let u = unit();
    assert_eq!(directive(&u, "Type"), ["notify"]);
    assert_eq!(directive(&u, "User"), ["vane"]);
    assert_eq!(
        directive(&u, "CapabilityBoundingSet"),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(
        directive(&u, "AmbientCapabilities"),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(directive(&u, "ReadOnlyPaths"), ["/etc/vane"]);
    for yes in [
        "PrivateTmp",
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateDevices",
    ] {
        assert_eq!(directive(&u, yes), ["yes"], "{yes}");
    }
    assert_eq!(directive(&u, "ProtectSystem"), ["strict"]);
    assert!(!directive(&u, "WatchdogSec").is_empty());
    assert!(
        directive(&u, "ExecReload")
            .iter()
            .any(|c| c.contains("kill -HUP $MAINPID")),
        "systemctl reload sends SIGHUP"
    );
    let sysusers = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/vane.sysusers.conf"),
    )
    .expect("sysusers");
    assert!(sysusers.lines().any(|l| l.starts_with("u vane ")));
}

/// `systemd-analyze verify` (and its offline security score) on the unit, pointed at the
/// binary under test; skipped where systemd's tools are not installed.
#[test]
fn systemd_analyze_accepts_the_unit() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed here; skipping");
        return;
    };
    assert!(probe.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vane.service");
    let bin = std::env::var("VANE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vane").to_string());
    std::fs::write(&path, unit().replace("/usr/local/bin/vane", &bin)).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze verify");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let score = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for").nth(1))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        score.is_some_and(|s| s <= 2.0),
        "exposure {score:?}:\n{text}"
    );
}

fn vane(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vane"))
        .args(args)
        .env_clear()
        .output()
        .expect("run vane");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Shell completions and the man page come from the command definitions, so they name every
/// command and option there is; bash parses its script and `man` renders the page.
#[test]
fn completions_and_the_man_page_are_generated_from_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script) = vane(&["completions", shell]);
        assert!(ok, "{shell}");
        for word in ["check", "convert", "format", "config"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let (_, bash) = vane(&["completions", "bash"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("vane.bash");
    std::fs::write(&script, &bash).expect("write");
    let parsed = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash");
    assert!(parsed.success(), "bash rejects the completion script");
    let (ok, page) = vane(&["man"]);
    assert!(ok);
    assert!(
        page.contains(".TH vane 1") && page.contains(env!("CARGO_PKG_VERSION")),
        "{page}"
    );
    for word in ["convert", "completions", "\\-\\-config"] {
        assert!(page.contains(word), "the man page lacks {word}");
    }
    let man = dir.path().join("vane.1");
    std::fs::write(&man, &page).expect("write");
    if let Ok(out) = Command::new("man")
        .arg("-l")
        .arg(&man)
        .env("MANPAGER", "cat")
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("convert"),
            "man -l: {text}"
        );
    }
}
