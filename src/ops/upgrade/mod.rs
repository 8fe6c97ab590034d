//! Hitless binary upgrade (`SIGUSR2`, as nginx): this process starts the binary at its own
//! path with its own arguments, hands it every listening socket over a Unix socket
//! (`SCM_RIGHTS`), and waits for it to say it serves. Then it stops accepting and drains as on
//! `SIGTERM`; the ports were never closed, so no connection is refused. Connections open here
//! finish here, and datagrams of UDP sessions that live here are relayed back by the new
//! process until they go idle. A new binary that fails to start or to become ready within
//! `UPGRADE_TIMEOUT_SECS` is stopped, and this process carries on.

pub mod wire;

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::l4::sockets::Inherited;
use crate::l4::udp::predecessor::{self, Predecessor};
use crate::l4::L4;

/// The variable that tells a new process where its predecessor waits.
pub const UPGRADE_SOCKET: &str = "VANE_UPGRADE_SOCKET";

/// Why an upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("the binary path is unknown: {0}")]
    Exe(std::io::Error),
    #[error("hand-over socket {0}: {1}")]
    Socket(PathBuf, std::io::Error),
    #[error("cannot start {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("the new process exited ({0}) before it was ready")]
    Exited(std::process::ExitStatus),
    #[error("the new process did not become ready within {0:?}")]
    Timeout(Duration),
    #[error("handing over the sockets: {0}")]
    Handover(std::io::Error),
}

/// The binary at this process's path (the file there now, which an upgrade replaced).
fn binary() -> Result<PathBuf, UpgradeError> {
    let exe = std::env::current_exe().map_err(UpgradeError::Exe)?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe,
    })
}

/// Runs one upgrade; `Ok` once the new process serves (this one must then drain and exit).
pub async fn upgrade(l4: Arc<L4>) -> Result<u32, UpgradeError> {
    let timeout = l4.settings.upgrade_timeout;
    let dir = l4.settings.socket_dir.clone();
    let path = dir.join(format!("upgrade-{}.sock", std::process::id()));
    let l4b = l4.clone();
    tokio::task::spawn_blocking(move || hand_over(&l4b, &path, timeout))
        .await
        .map_err(|e| UpgradeError::Handover(std::io::Error::other(e)))?
}

fn hand_over(l4: &Arc<L4>, path: &PathBuf, timeout: Duration) -> Result<u32, UpgradeError> {
    let exe = binary()?;
    let _ = std::fs::create_dir_all(path.parent().unwrap_or(path));
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| UpgradeError::Socket(path.clone(), e))?;
    let _cleanup = RemoveOnDrop(path.clone());
    listener
        .set_nonblocking(true)
        .map_err(|e| UpgradeError::Socket(path.clone(), e))?;
    let mut child = Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(UPGRADE_SOCKET, path)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| UpgradeError::Spawn(exe.clone(), e))?;
    let pid = child.id();
    tracing::info!(
        "upgrade: started {} as PID {pid}; handing over the sockets",
        exe.display()
    );
    let deadline = Instant::now() + timeout;
    let result = (|| {
        let stream = accept(&listener, &mut child, deadline, timeout)?;
        send_sockets(l4, &stream)?;
        wait_ready(&stream, &mut child, deadline, timeout)
    })();
    match result {
        Ok(()) => Ok(pid),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn accept(
    l: &UnixListener,
    child: &mut Child,
    deadline: Instant,
    timeout: Duration,
) -> Result<UnixStream, UpgradeError> {
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(UpgradeError::Handover)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(UpgradeError::Handover(e)),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(UpgradeError::Exited(status));
        }
        if Instant::now() >= deadline {
            return Err(UpgradeError::Timeout(timeout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every listening socket (TCP listeners, UDP sockets, the management and metrics endpoints),
/// the UDP session list and one end of the relay for their datagrams.
fn send_sockets(l4: &Arc<L4>, s: &UnixStream) -> Result<(), UpgradeError> {
    let owned: Vec<(String, Arc<OwnedFd>)> = l4
        .bound
        .iter()
        .filter_map(|e| e.value().upgrade().map(|fd| (e.key().clone(), fd)))
        .collect();
    let udp = l4.udp.sockets();
    let (mine, theirs) = UnixDatagram::pair().map_err(UpgradeError::Handover)?;
    let mut named: Vec<(String, BorrowedFd<'_>)> = owned
        .iter()
        .map(|(n, fd)| (n.clone(), fd.as_fd()))
        .collect();
    named.extend(udp.iter().map(|(k, sock)| (k.to_string(), sock.as_fd())));
    named.push(("relay".to_string(), theirs.as_fd()));
    let sessions = predecessor::live_sessions(l4);
    let chunks: Vec<&[(String, BorrowedFd<'_>)]> = named.chunks(wire::MAX_FDS).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let batch = wire::Batch {
            names: chunk.iter().map(|(n, _)| n.clone()).collect(),
            sessions: if last { sessions.clone() } else { Vec::new() },
            more: !last,
        };
        let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|(_, fd)| *fd).collect();
        wire::send(s, &batch, &fds).map_err(UpgradeError::Handover)?;
    }
    // Relayed datagrams of our sessions come back on `mine` from now on.
    mine.set_nonblocking(true).map_err(UpgradeError::Handover)?;
    let relay = tokio::net::UnixDatagram::from_std(mine).map_err(UpgradeError::Handover)?;
    // Ends when the new process closes its end (it exits) or this one exits.
    tokio::spawn(predecessor::serve_relayed(l4.clone(), relay));
    tracing::info!(
        "upgrade: handed over {} socket(s) and {} UDP session(s)",
        named.len() - 1,
        sessions.len()
    );
    Ok(())
}

fn wait_ready(
    s: &UnixStream,
    child: &mut Child,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), UpgradeError> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 16];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(UpgradeError::Timeout(timeout));
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .map_err(UpgradeError::Handover)?;
        match (&*s).read(&mut buf) {
            Ok(0) => {
                let status = child.wait().map_err(UpgradeError::Handover)?;
                return Err(UpgradeError::Exited(status));
            }
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.ends_with(b"ready\n") {
                    return Ok(());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(UpgradeError::Exited(status));
                }
            }
            Err(e) => return Err(UpgradeError::Handover(e)),
        }
    }
}

/// A process started by an upgrade: what its predecessor handed over.
pub struct Handed {
    pub sockets: Inherited,
    pub predecessor: Option<Predecessor>,
    /// Where to say `ready`.
    stream: UnixStream,
}

/// At start: the sockets of the predecessor named by `VANE_UPGRADE_SOCKET`, if any.
pub fn receive() -> Option<Result<Handed, std::io::Error>> {
    let path = std::env::var_os(UPGRADE_SOCKET)?;
    // Not inherited by anything this process starts (its own upgrade sets it anew).
    Some((|| {
        let stream = UnixStream::connect(&path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut fds = HashMap::new();
        let mut sessions = Vec::new();
        loop {
            let (batch, named) = wire::recv(&stream)?;
            fds.extend(named);
            sessions.extend(batch.sessions);
            if !batch.more {
                break;
            }
        }
        let predecessor = match fds.remove("relay") {
            Some(fd) => Some(Predecessor::new(fd, &sessions)?),
            None => None,
        };
        tracing::info!(
            "upgrade: took over {} socket(s) and {} UDP session(s) of the previous process",
            fds.len(),
            sessions.len()
        );
        Ok(Handed {
            sockets: Inherited::new(fds),
            predecessor,
            stream,
        })
    })())
}

impl Handed {
    /// Tells the predecessor this process serves; it then stops accepting and drains.
    pub fn ready(&self) -> std::io::Result<()> {
        use std::io::Write;
        (&self.stream).write_all(b"ready\n")
    }
}
