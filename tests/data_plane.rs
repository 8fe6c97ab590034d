//! The data-plane threads as the kernel sees them: their CPUs and their scheduler slice, read
//! from /proc for a running server.

mod common;

use common::*;
use std::time::Duration;

/// `read` of each data-plane thread of `pid` (its /proc task directory), by thread name.
fn per_shard(pid: u32, read: impl Fn(&std::path::Path) -> Option<String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| {
                    let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
                    let name = name.trim().to_string();
                    if !name.starts_with("vane-shard-") {
                        return None;
                    }
                    Some((name, read(&t.path())?))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The CPUs each data-plane thread of `pid` may run on, by thread name.
fn shard_cpus(pid: u32) -> Vec<(String, String)> {
    per_shard(pid, |task| {
        proc_field(&task.join("status"), "Cpus_allowed_list")
    })
}

/// The scheduler slice of each data-plane thread of `pid` in nanoseconds, by thread name.
fn shard_slices(pid: u32) -> Vec<(String, String)> {
    per_shard(pid, |task| proc_field(&task.join("sched"), "se.slice"))
}

fn start(cfg: &ConfigDir, port: u16, env: Vec<(&'static str, String)>) -> Vane {
    Vane::start_with(
        cfg,
        Opts {
            env,
            wait_ports: vec![port],
        },
    )
}

#[test]
fn data_plane_threads_are_bound_to_a_cpu_each_only_when_asked() {
    let up = Echo::start("S");
    let all = proc_status(std::process::id(), "Cpus_allowed_list").expect("own mask");
    // How many CPUs the list names ("0-3,6" is five).
    let n: usize = all
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap_or(0) + 1 - a.parse::<usize>().unwrap_or(0),
            None => 1,
        })
        .sum();
    for pin in [false, true] {
        let cfg = ConfigDir::new();
        let port = free_port();
        cfg.tcp_proxy(port, up.addr);
        let mut env = vec![("DATA_PLANE_THREADS", n.to_string())];
        if pin {
            env.push(("DATA_PLANE_PIN", "true".to_string()));
        }
        let v = start(&cfg, port, env);
        let cpus = shard_cpus(v.pid());
        assert_eq!(cpus.len(), n, "{cpus:?}");
        let distinct: std::collections::BTreeSet<&str> =
            cpus.iter().map(|(_, c)| c.as_str()).collect();
        if pin && n >= 2 {
            // One CPU each (a single number), no two the same.
            assert!(
                cpus.iter().all(|(_, c)| c.parse::<usize>().is_ok()),
                "{cpus:?}"
            );
            assert_eq!(distinct.len(), n, "{cpus:?}");
        } else if !pin {
            assert!(
                cpus.iter().all(|(_, c)| *c == all),
                "{cpus:?} against {all}"
            );
        }
        let mut c = Client::connect(port).expect("connect");
        assert_eq!(c.ask("one").as_deref(), Some("S:one"));
    }
}

/// Each data-plane thread runs in the slice `DATA_PLANE_SLICE_US` asks for (500 µs unless
/// set), and in the kernel's own with 0. Kernels before 6.12 have no slice to ask for (and
/// no `se.slice` line): nothing to check there.
#[test]
fn data_plane_threads_run_in_the_slice_asked_for() {
    let own = proc_field(std::path::Path::new("/proc/thread-self/sched"), "se.slice");
    let Some(default) = own else {
        eprintln!("no se.slice in /proc: this kernel has no slice to ask for");
        return;
    };
    let up = Echo::start("S");
    for (asked, want) in [
        (None, "500000"),
        (Some("1500"), "1500000"),
        (Some("0"), default.as_str()),
    ] {
        let cfg = ConfigDir::new();
        let port = free_port();
        cfg.tcp_proxy(port, up.addr);
        let mut env = vec![("DATA_PLANE_THREADS", "2".to_string())];
        if let Some(us) = asked {
            env.push(("DATA_PLANE_SLICE_US", us.to_string()));
        }
        let v = start(&cfg, port, env);
        let slices = shard_slices(v.pid());
        assert_eq!(slices.len(), 2, "{slices:?}");
        assert!(
            slices.iter().all(|(_, s)| s == want),
            "DATA_PLANE_SLICE_US={asked:?}: {slices:?}, want {want}"
        );
        let mut c = Client::connect(port).expect("connect");
        assert_eq!(c.ask("one").as_deref(), Some("S:one"));
    }
}

/// The server runs under valgrind (`bench/l7_instructions.sh` counts instructions with
/// callgrind): no clock read through rustix's own vDSO parser, which valgrind does not map
/// and which ended the process with SIGSEGV at a shard's first park.
#[test]
fn data_plane_runs_under_valgrind() {
    let valgrind = ensure_tool("valgrind", "valgrind");
    let up = Echo::start("S");
    let cfg = ConfigDir::new();
    let port = free_port();
    cfg.tcp_proxy(port, up.addr);
    // exec: the process the test watches is the one valgrind runs vane in.
    let scratch = ConfigDir::new();
    scratch.write_exec(
        "vane-under-valgrind",
        &format!(
            "#!/bin/sh\nexec {valgrind} --tool=none -q {} \"$@\"\n",
            vane_bin().display()
        ),
    );
    let wrapper = scratch.path().join("vane-under-valgrind");
    let mut v = Vane::spawn_bin(&cfg, &[("DATA_PLANE_THREADS", "2".to_string())], &wrapper);
    let mut answered = false;
    wait_until(Duration::from_secs(60), || {
        answered =
            Client::connect(port).is_ok_and(|mut c| c.ask("one").as_deref() == Some("S:one"));
        answered || !v.alive()
    });
    assert!(
        answered,
        "no answer through vane under valgrind; log:\n{}",
        v.logs()
    );
    // Every shard has parked by now (the first park read the clock that crashed).
    let mut c = Client::connect(port).expect("connect");
    assert_eq!(c.ask("two").as_deref(), Some("S:two"));
    let logs = v.logs();
    assert!(!logs.contains("Process terminating"), "{logs}");
}
