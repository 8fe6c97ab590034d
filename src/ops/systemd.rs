//! systemd's notify protocol (sd_notify(3)), spoken directly: readiness, reloads, stopping and
//! watchdog pings as datagrams to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
//! socket). Without `NOTIFY_SOCKET` every call does nothing, so the same binary runs under
//! systemd's `Type=notify` and anywhere else.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where systemd listens, from the environment.
fn target() -> Option<std::os::unix::net::SocketAddr> {
    let raw = std::env::var_os("NOTIFY_SOCKET")?;
    let raw = raw.to_str()?;
    if let Some(name) = raw.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        return std::os::unix::net::SocketAddr::from_abstract_name(name).ok();
    }
    std::os::unix::net::SocketAddr::from_pathname(raw).ok()
}

/// Sends `state` (newline-separated `KEY=value` lines); `Ok(false)` when not under systemd.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(to) = target() else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &to)?;
    Ok(true)
}

fn send(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(
            "systemd notification `{}` failed: {e}",
            state.lines().next().unwrap_or("")
        );
    }
}

/// The service is up: listeners bound, the supervision tree running.
pub fn ready(status: &str) {
    send(&format!(
        "READY=1\nSTATUS={status}\nMAINPID={}",
        std::process::id()
    ));
}

/// A reload starts (`Type=notify-reload` wants the monotonic time with it); [`ready`] ends it.
pub fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining connections");
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd compares it.
fn monotonic_usec() -> u64 {
    u64::try_from(vane_sys::clock::monotonic().as_micros()).unwrap_or(u64::MAX)
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` names one).
fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its interval from the main runtime, so a runtime that stops
/// making progress stops the pings and systemd restarts the service.
pub fn spawn_watchdog() {
    let Some(every) = watchdog_interval() else {
        return;
    };
    if target().is_none() {
        return;
    }
    tracing::info!("systemd watchdog: pinging every {:?}", every / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every / 2);
        loop {
            tick.tick().await;
            send("WATCHDOG=1");
        }
    });
}
