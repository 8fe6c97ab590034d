//! Test harness: runs the real `vane` binary on a temporary config dir, with mock upstreams
//! and plain socket clients. Everything is on loopback, every wait is bounded, and every
//! process and thread is cleaned up when its guard drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub mod cdp;
pub mod epoll;
pub mod http3;
pub mod pebble;
pub mod quic;
pub mod redis;
pub mod silent;
pub mod tcp_info;
pub mod tls;
pub mod ws;

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub fn free_port() -> u16 {
    // Ports handed out here are released before vane binds them, so they are taken from below
    // the kernel's ephemeral range (32768+): there no `bind(0)` of a parallel test and no
    // outgoing connection's local port can land on them in between. A process-wide cursor keeps
    // the tests of one binary from handing out the same port twice.
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let seed = std::process::id() as usize % SPAN as usize;
    let _ = NEXT.compare_exchange(usize::MAX, seed, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = FIRST + (n % SPAN as usize) as u16;
        let free = TcpListener::bind(("127.0.0.1", p)).is_ok()
            && UdpSocket::bind(("127.0.0.1", p)).is_ok();
        if free {
            return p;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// The value of `field` in `/proc/<pid>/status` (Linux), trimmed; `None` when unreadable or
/// not reported by this kernel.
pub fn proc_status(pid: u32, field: &str) -> Option<String> {
    proc_field(std::path::Path::new(&format!("/proc/{pid}/status")), field)
}

/// The value of `field` in a `/proc` file of `field: value` lines (`status`, or `sched`,
/// which pads its names), trimmed; `None` when unreadable or not reported by this kernel.
pub fn proc_field(file: &std::path::Path, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        (name.trim_end() == field).then(|| value.trim().to_string())
    })
}

/// Resident memory of process `pid` in KiB (Linux `/proc`; 0 when unreadable).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS")
        .and_then(|v| v.trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A temporary config dir with helpers to write files.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes an executable script (a plugin in `bin/`, a CGI program).
    pub fn write_exec(&self, rel: &str, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        self.write(rel, text);
        std::fs::set_permissions(
            self.path().join(rel),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        // Write then rename, as an editor or the management API would.
        let tmp = p.with_file_name(format!(
            ".tmp-{}",
            p.file_name().and_then(|n| n.to_str()).unwrap_or("x")
        ));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &p).expect("rename");
    }

    pub fn remove(&self, rel: &str) {
        let p = self.dir.path().join(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).expect("rm -r");
        } else {
            std::fs::remove_file(p).expect("rm");
        }
    }

    /// A TCP listener flow that proxies to `target`.
    pub fn tcp_proxy(&self, port: u16, target: SocketAddr) {
        self.write(&format!("listener/[{port}]/tcp.yaml"), &proxy_flow(target));
    }

    /// Plaintext HTTP on TCP `port`: the listener upgrades to the `http` resolver, which
    /// hands each connection to L7 application `app`.
    pub fn plain_http(&self, port: u16, app: &str) {
        self.write(
            &format!("listener/[{port}]/tcp.yaml"),
            "connection:\n  internal.transport.upgrade:\n    input: { protocol: http }\n",
        );
        self.write(
            "resolver/http.yaml",
            &format!(
                "connection:\n  internal.transport.upgrade:\n    input: {{ protocol: \"{app}\" }}\n"
            ),
        );
    }

    /// TCP `port` upgrades to TLS: its `tls` resolver then passes through or terminates.
    pub fn tls_listener(&self, port: u16) {
        self.write(
            &format!("listener/[{port}]/tcp.yaml"),
            "connection:\n  internal.transport.upgrade:\n    input: { protocol: tls }\n",
        );
    }

    /// TLS terminated on TCP `port`: the `tls` resolver hands each connection to L7
    /// application `app`.
    pub fn tls_terminating(&self, port: u16, app: &str) {
        self.tls_listener(port);
        self.write(
            "resolver/tls.yaml",
            &format!(
                "connection:\n  internal.transport.upgrade:\n    input: {{ protocol: \"{app}\" }}\n"
            ),
        );
    }
}

/// The `Content-Length` of an HTTP head (0 when absent or unreadable).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

pub fn proxy_flow(target: SocketAddr) -> String {
    format!("connection:\n  internal.transport.proxy:\n    input:\n      target.ip: \"{}\"\n      target.port: {}\n", target.ip(), target.port())
}

/// A running gateway; killed on drop.
pub struct Vane {
    child: Option<Child>,
    pub log: PathBuf,
    pub metrics: SocketAddr,
    pub mgmt: SocketAddr,
    _logdir: tempfile::TempDir,
}

pub struct Opts<'a> {
    pub env: Vec<(&'a str, String)>,
    pub wait_ports: Vec<u16>,
}

/// The binary tests run: `VANE_BIN` (another build, e.g. an older one, to watch a test fail
/// without a fix), else this build's.
pub fn vane_bin() -> PathBuf {
    std::env::var_os("VANE_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_vane").into())
        .into()
}

impl Vane {
    pub fn start(cfg: &ConfigDir, wait_tcp: &[u16]) -> Vane {
        Self::start_with(
            cfg,
            Opts {
                env: Vec::new(),
                wait_ports: wait_tcp.to_vec(),
            },
        )
    }

    pub fn spawn(cfg: &ConfigDir, env: &[(&str, String)]) -> Vane {
        Self::spawn_bin(cfg, env, &vane_bin())
    }

    /// Runs the binary at `bin` (a copy a test may replace, as an upgrade does).
    pub fn spawn_bin(cfg: &ConfigDir, env: &[(&str, String)], bin: &Path) -> Vane {
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("vane.log");
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mgmt = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let logfile = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(cfg.path())
            .current_dir(logdir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", "127.0.0.1")
            .env("METRICS_ADDR", metrics.to_string())
            .env("ACCESS_TOKEN", TOKEN)
            .env("PORT", mgmt.port().to_string())
            .env("CHAOS_ENDPOINTS", "true")
            .env("LOG_LEVEL", "debug")
            .env("SOCKET_DIR", logdir.path())
            .env("NAMESERVER1", "127.0.0.1")
            .env("NAMESERVER1_PORT", "9")
            .env("NAMESERVER2", "127.0.0.1")
            .env("NAMESERVER2_PORT", "9")
            .stdin(Stdio::null())
            .stdout(logfile.try_clone().expect("dup"))
            .stderr(logfile);
        if http1_on_hyper() {
            cmd.env("HTTP1_SERVER", "hyper");
            cmd.env("HTTP2_SERVER", "hyper");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn vane");
        Vane {
            child: Some(child),
            log,
            metrics,
            mgmt,
            _logdir: logdir,
        }
    }

    pub fn start_with(cfg: &ConfigDir, opts: Opts<'_>) -> Vane {
        let v = Self::spawn(cfg, &opts.env);
        v.wait_started(&opts.wait_ports);
        v
    }

    /// Like [`Vane::start_with`], running the binary at `bin`.
    pub fn start_bin(cfg: &ConfigDir, opts: Opts<'_>, bin: &Path) -> Vane {
        let v = Self::spawn_bin(cfg, &opts.env, bin);
        v.wait_started(&opts.wait_ports);
        v
    }

    fn wait_started(&self, wait_ports: &[u16]) {
        let v = self;
        for p in wait_ports {
            assert!(
                wait_until(Duration::from_secs(10), || TcpStream::connect((
                    "127.0.0.1",
                    *p
                ))
                .is_ok()),
                "port {p} never opened; log:\n{}",
                v.logs()
            );
        }
        // Our own console, not one a parallel test left on the same port.
        let console = format!("Management console listening on http://{}", v.mgmt);
        assert!(
            wait_until(Duration::from_secs(10), || v.logs().contains(&console)
                && v.get("/health").0 == 200),
            "management API never came up; log:\n{}",
            v.logs()
        );
    }

    /// The management console's Unix socket (`SOCKET_DIR/console.sock`).
    pub fn console_sock(&self) -> PathBuf {
        self._logdir.path().join("console.sock")
    }

    /// Waits until the UDP listener on `port` is bound; returns its address.
    pub fn wait_udp(&self, port: u16) -> SocketAddr {
        assert!(
            self.wait_log(
                &format!("Udp listener on port {port} is UP"),
                Duration::from_secs(10)
            ),
            "{}",
            self.logs()
        );
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `needle` (counting from occurrence `after`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.logs().contains(needle))
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.logs().matches(needle).count()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.mgmt, "GET", path, Some(TOKEN))
    }

    pub fn post(&self, path: &str) -> (u16, String) {
        http(self.mgmt, "POST", path, Some(TOKEN))
    }

    /// Any method, with the token.
    pub fn request(&self, method: &str, path: &str) -> (u16, String) {
        http(self.mgmt, method, path, Some(TOKEN))
    }

    pub fn metrics_text(&self) -> String {
        http(self.metrics, "GET", "/metrics", None).1
    }

    /// The value of one metric line (`name{labels}` prefix), if present.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        self.metrics_text()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// The sum of every series of a metric family (all label sets).
    pub fn metric_sum(&self, family: &str) -> f64 {
        self.metrics_text()
            .lines()
            .filter(|l| {
                l.strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let pid = self.pid();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        self.wait_exit(timeout)
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return st.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn actor(&self, name: &str) -> Option<(String, u64)> {
        let (_, body) = self.get("/actors");
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let row = v.as_array()?.iter().find(|r| r["name"] == name)?;
        Some((
            row["status"].as_str()?.to_string(),
            row["restarts"].as_u64()?,
        ))
    }
}

impl Drop for Vane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A one-shot HTTP/1.1 request over a plain socket; (status, body). Status 0 on failure.
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    http_with(addr, method, path, token, "")
}

/// The same with a JSON body.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A TCP upstream that answers every line with `<tag>:<line>`; counts connections.
pub struct Echo {
    pub addr: SocketAddr,
    pub conns: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Echo {
    pub fn start(tag: &str) -> Echo {
        Self::on(TcpListener::bind("127.0.0.1:0").expect("bind"), tag)
    }

    pub fn on(l: TcpListener, tag: &str) -> Echo {
        let addr = l.local_addr().expect("addr");
        let conns = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        l.set_nonblocking(true).expect("nonblocking");
        let (c, s, tag) = (conns.clone(), stop.clone(), tag.to_string());
        thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((stream, _)) => {
                        c.fetch_add(1, Ordering::SeqCst);
                        let tag = tag.clone();
                        let s2 = s.clone();
                        thread::spawn(move || serve_lines(stream, &tag, &s2));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo { addr, conns, stop }
    }

    pub fn count(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes the listening socket.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_lines(stream: TcpStream, tag: &str, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut w = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    loop {
        match r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.ends_with('\n') => {
                if w.write_all(format!("{tag}:{line}").as_bytes()).is_err() {
                    break;
                }
                line.clear();
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = w.shutdown(Shutdown::Both);
}

/// A client connection speaking lines.
pub struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    pub fn connect(port: u16) -> std::io::Result<Client> {
        Ok(Self::from_stream(TcpStream::connect(("127.0.0.1", port))?))
    }

    /// Wraps a connected stream (5 s read timeout).
    pub fn from_stream(s: TcpStream) -> Client {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let w = s.try_clone().expect("dup socket");
        Client {
            r: BufReader::new(s),
            w,
        }
    }

    /// The next line the server sends, without sending anything (None when closed).
    pub fn read_line(&mut self) -> Option<String> {
        let mut out = String::new();
        match self.r.read_line(&mut out) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(out.trim_end().to_string()),
        }
    }

    /// Sends a line and returns the reply line (None when the connection closed).
    pub fn ask(&mut self, line: &str) -> Option<String> {
        self.w.write_all(format!("{line}\n").as_bytes()).ok()?;
        self.read_line()
    }

    /// True when the server closes the connection within `timeout`.
    /// True when the peer closed (or reset) the connection within `timeout`; a read that
    /// merely timed out is not a close.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let _ = self.r.get_ref().set_read_timeout(Some(timeout));
        let mut b = [0u8; 1];
        match self.r.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    pub fn set_timeout(&self, t: Duration) {
        let _ = self.r.get_ref().set_read_timeout(Some(t));
    }
}

/// One line through a fresh connection to `port`; None when closed or refused.
pub fn ask_once(port: u16, line: &str) -> Option<String> {
    Client::connect(port).ok()?.ask(line)
}

/// A UDP upstream that answers `<tag>:<payload>`, optionally after a delay.
pub struct UdpEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl UdpEcho {
    pub fn start(tag: &str, delay: Duration) -> UdpEcho {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let addr = s.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let (st, tag) = (stop.clone(), tag.to_string());
        thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::SeqCst) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let mut reply = format!("{tag}:").into_bytes();
                    reply.extend_from_slice(&buf[..n]);
                    if delay.is_zero() {
                        let _ = s.send_to(&reply, from);
                    } else {
                        let s2 = s.try_clone().expect("clone");
                        thread::spawn(move || {
                            thread::sleep(delay);
                            let _ = s2.send_to(&reply, from);
                        });
                    }
                }
            }
        });
        UdpEcho { addr, stop }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Sends one datagram to `port` from `sock` and waits for a reply.
pub fn udp_ask(sock: &UdpSocket, port: u16, payload: &str, timeout: Duration) -> Option<String> {
    sock.set_read_timeout(Some(timeout)).ok()?;
    sock.send_to(payload.as_bytes(), ("127.0.0.1", port)).ok()?;
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A DNS server answering A queries for `names` with 127.0.0.1 and NXDOMAIN otherwise.
pub struct DnsStub {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl DnsStub {
    pub fn start(names: &[&str]) -> DnsStub {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let port = s.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !st.load(Ordering::SeqCst) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = dns_answer(&buf[..n], &names) {
                    let _ = s.send_to(&reply, from);
                }
            }
        });
        DnsStub { port, stop }
    }
}

impl Drop for DnsStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn dns_answer(q: &[u8], names: &[String]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    while i < q.len() && q[i] != 0 {
        let l = q[i] as usize;
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + l)?).to_ascii_lowercase());
        i += 1 + l;
    }
    let qend = i + 5;
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let name = labels.join(".");
    let known = names.contains(&name);
    let mut r = q[..qend].to_vec();
    r[2] = 0x81 | (q[2] & 0x01);
    r[3] = if known { 0x80 } else { 0x83 };
    let answers: u16 = if known && qtype == 1 { 1 } else { 0 };
    r[6..8].copy_from_slice(&answers.to_be_bytes());
    r[8..12].copy_from_slice(&[0, 0, 0, 0]);
    if answers == 1 {
        r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(r)
}

/// A one-shot request with a binary body and a binary answer: (status, body).
pub fn http_bytes(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, Vec::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return (0, Vec::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, Vec::new());
    };
    let status = String::from_utf8_lossy(&out[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut body = out[split + 4..].to_vec();
    if String::from_utf8_lossy(&out[..split])
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut plain = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..eol]).trim(), 16)
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 2 + n + 2..];
        }
        body = plain;
    }
    (status, body)
}

/// A TCP upstream that records what one connection sends until `done(bytes)` holds (or EOF),
/// then answers `reply`; the last connection's bytes that satisfied `done` are shared.
pub fn recorder<F>(reply: &'static [u8], done: F) -> (SocketAddr, Arc<std::sync::Mutex<Vec<u8>>>)
where
    F: Fn(&[u8]) -> bool + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut all = Vec::new();
            let mut b = [0u8; 4096];
            while !done(&all) {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&b[..n]),
                }
            }
            // Only a connection that delivered what the test waits for is recorded: a
            // readiness probe's forwarded connection, ending empty after the test's own, must
            // not overwrite it.
            if done(&all) {
                *g.lock().unwrap_or_else(|e| e.into_inner()) = all;
            }
            let _ = s.write_all(reply);
        }
    });
    (addr, got)
}

/// Sends raw HTTP/1.1 requests on one connection; returns (status, headers, body) per request.
pub fn h1(stream: &mut dyn ReadWrite, requests: &[&str]) -> Vec<(u16, String, String)> {
    let mut out = Vec::new();
    for req in requests {
        stream.write_all(req.as_bytes()).expect("write");
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        // Read until the head and Content-Length bytes of body are in.
        loop {
            let n = stream.read(&mut b).unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&b[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            out.push((0, String::new(), String::new()));
            break;
        };
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        out.push((status, head.to_ascii_lowercase(), body.to_string()));
    }
    out
}

pub trait ReadWrite: Read + Write {}

impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// This test binary runs the L7 suite with HTTP/1.x and HTTP/2 on hyper's servers (the
/// `l7_hyper` target).
pub fn http1_on_hyper() -> bool {
    env!("CARGO_CRATE_NAME") == "l7_hyper"
}

/// The path of the command `cmd`, installing the Debian package `pkg` when it is missing:
/// tests check against the real tools users have (promtool, ...), never a stand-in.
pub fn ensure_tool(cmd: &str, pkg: &str) -> String {
    static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let found = || {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(path) = found() {
        return path;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", pkg])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .stdout(Stdio::null())
            .status();
        install();
    }
    found().unwrap_or_else(|| {
        panic!("`{cmd}` is missing and `apt-get install {pkg}` did not provide it")
    })
}
