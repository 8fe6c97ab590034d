//! External middleware: a declared plugin reached over HTTP, HTTP on a Unix socket, or a
//! command in the trusted `bin/` directory. The request is the step's resolved input as JSON;
//! the reply names a branch and may store string values.
//!
//! A passive circuit breaker skips a plugin for `EXTERNAL_PLUGIN_QUIET_PERIOD_SECS` after it
//! *failed* (unreachable, timed out, invalid reply). Unlike 0.9.2, a plugin that answers with
//! its own `failure` branch is working as designed and does not trip the breaker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::plugins::{Driver, ExternalPlugin};

/// Replies larger than this are refused.
const MAX_REPLY: usize = 1024 * 1024;

/// What a plugin decided.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Verdict {
    pub branch: String,
    #[serde(default)]
    pub store: Option<BTreeMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("circuit breaker active")]
    Quiet,
    #[error(transparent)]
    Failed(#[from] PluginError),
}

/// Why a call to an external plugin failed; each one trips the circuit breaker.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Refused before any call: a program outside `bin/`, an address this build cannot use.
    #[error("{0}")]
    Refused(String),
    /// The plugin could not be reached (connect, spawn, pipes).
    #[error("{0}")]
    Unreachable(String),
    /// No answer within the flow timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// An answer that cannot be used: an HTTP error, invalid JSON, an undeclared branch.
    #[error("{0}")]
    Reply(String),
}

impl PluginError {
    /// True when calling again later may succeed (the plugin was down or slow, not wrong).
    pub fn retryable(&self) -> bool {
        matches!(self, PluginError::Unreachable(_) | PluginError::Timeout(_))
    }
}

fn unreachable(msg: impl std::fmt::Display) -> PluginError {
    PluginError::Unreachable(msg.to_string())
}

fn bad_reply(msg: impl std::fmt::Display) -> PluginError {
    PluginError::Reply(msg.to_string())
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Verdict>,
    #[serde(default)]
    message: Option<String>,
}

/// How long a connectivity check may take (0.9.2's 3 s).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Calls plugins and remembers which ones recently failed.
pub struct Caller {
    bin: PathBuf,
    quiet: Duration,
    timeout: Duration,
    failed_at: DashMap<String, Instant>,
    /// `EXTERNAL_HTTPS_CALL_SKIP_TLS_VERIFY`: `https` plugins' certificates are not verified.
    pub skip_tls_verify: bool,
    /// The last connectivity check of each plugin (`EXTERNAL_PLUGIN_CHECK_INTERVAL_MINS`).
    pub healthy: DashMap<String, bool>,
}

impl Caller {
    pub fn new(config_dir: &Path, quiet: Duration, timeout: Duration) -> Self {
        Self {
            bin: config_dir.join("bin"),
            quiet,
            timeout,
            failed_at: DashMap::new(),
            skip_tls_verify: false,
            healthy: DashMap::new(),
        }
    }

    /// The connectivity check of `p`: `http` answers `OPTIONS` with 2xx, a `unix` socket
    /// accepts a connection, a `command` is a trusted program in `bin/`. Recorded for the API.
    pub async fn check(&self, p: &ExternalPlugin) -> Result<(), PluginError> {
        let r = match &p.driver {
            Driver::Http { url } => {
                tokio::time::timeout(PROBE_TIMEOUT, probe_http(url, self.skip_tls_verify))
                    .await
                    .unwrap_or(Err(PluginError::Timeout(PROBE_TIMEOUT)))
            }
            #[cfg(unix)]
            Driver::Unix { path } => {
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| PluginError::Timeout(PROBE_TIMEOUT))
                    .and_then(|r| {
                        r.map(drop)
                            .map_err(|e| unreachable(format!("connect {path}: {e}")))
                    })
            }
            #[cfg(not(unix))]
            Driver::Unix { .. } => Err(PluginError::Refused(
                "unix sockets are not available".into(),
            )),
            Driver::Command { program, .. } => trusted_program(&self.bin, program).map(drop),
        };
        let now = r.is_ok();
        if self.healthy.insert(p.name.clone(), now) != Some(now) {
            match &r {
                Ok(()) => tracing::info!("External plugin '{}' is healthy", p.name),
                Err(e) => tracing::warn!("External plugin '{}' is unhealthy: {e}", p.name),
            }
        }
        r
    }

    /// Calls `p` with `input`; a fault trips the breaker and yields `Failed`.
    pub async fn call(&self, p: &ExternalPlugin, input: &Value) -> Result<Verdict, CallError> {
        if let Some(t) = self.failed_at.get(&p.name) {
            if t.elapsed() < self.quiet {
                tracing::debug!("Circuit Breaker: Plugin '{}' is in quiet period", p.name);
                return Err(CallError::Quiet);
            }
        }
        let started = Instant::now();
        let r = tokio::time::timeout(self.timeout, self.dispatch(p, input))
            .await
            .unwrap_or(Err(PluginError::Timeout(self.timeout)));
        metrics::histogram!("vane_plugin_duration_seconds", "plugin" => p.name.clone())
            .record(started.elapsed().as_secs_f64());
        match r {
            Ok(v) if p.branches().contains(&v.branch) => {
                self.failed_at.remove(&p.name);
                Ok(v)
            }
            Ok(v) => self.fault(
                p,
                bad_reply(format!("returned undeclared branch `{}`", v.branch)),
            ),
            Err(e) => self.fault(p, e),
        }
    }

    fn fault(&self, p: &ExternalPlugin, why: PluginError) -> Result<Verdict, CallError> {
        tracing::warn!(
            "Circuit Breaker: Plugin '{}' failed ({why}). Marking as failed in Circuit Breaker.",
            p.name
        );
        self.failed_at.insert(p.name.clone(), Instant::now());
        metrics::counter!("vane_external_plugin_failures_total", "plugin" => p.name.clone())
            .increment(1);
        Err(CallError::Failed(why))
    }

    async fn dispatch(&self, p: &ExternalPlugin, input: &Value) -> Result<Verdict, PluginError> {
        match &p.driver {
            Driver::Command { program, args, env } => self.command(program, args, env, input).await,
            Driver::Http { url } => http(url, input, self.skip_tls_verify).await,
            Driver::Unix { path } => unix(Path::new(path), input).await,
        }
    }

    async fn command(
        &self,
        program: &str,
        args: &[String],
        env: &BTreeMap<String, String>,
        input: &Value,
    ) -> Result<Verdict, PluginError> {
        let path = trusted_program(&self.bin, program)?;
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The child does not inherit secrets such as ACCESS_TOKEN.
        cmd.env_remove("ACCESS_TOKEN");
        for (k, v) in sanitize_env(env) {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| unreachable(format!("cannot run {}: {e}", path.display())))?;
        let mut stdin = child.stdin.take().ok_or_else(|| unreachable("no stdin"))?;
        let mut body = input.to_string().into_bytes();
        body.push(b'\n');
        stdin
            .write_all(&body)
            .await
            .map_err(|e| unreachable(format!("writing stdin: {e}")))?;
        drop(stdin);
        let mut out = Vec::new();
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| unreachable("no stdout"))?;
        (&mut stdout)
            .take(MAX_REPLY as u64 + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| unreachable(format!("reading stdout: {e}")))?;
        if out.len() > MAX_REPLY {
            return Err(bad_reply("reply too large"));
        }
        if let Some(mut err) = child.stderr.take() {
            let mut e = String::new();
            let _ = (&mut err).take(64 * 1024).read_to_string(&mut e).await;
            for line in e.lines() {
                tracing::debug!(program, "stderr: {line}");
            }
        }
        let status = child.wait().await.map_err(unreachable)?;
        if !status.success() {
            return Err(bad_reply(format!("exited with {status}")));
        }
        serde_json::from_slice::<Verdict>(&out)
            .map_err(|e| bad_reply(format!("invalid reply: {e}")))
    }
}

/// Resolves `program` inside `bin/` (after following symlinks); anything else is refused.
pub fn trusted_program(bin: &Path, program: &str) -> Result<PathBuf, PluginError> {
    let candidate = if Path::new(program).is_absolute() {
        PathBuf::from(program)
    } else {
        bin.join(program)
    };
    let real = candidate
        .canonicalize()
        .map_err(|e| PluginError::Refused(format!("Security violation: {program}: {e}")))?;
    let root = bin
        .canonicalize()
        .map_err(|e| PluginError::Refused(format!("Security violation: bin/: {e}")))?;
    if !real.starts_with(&root) || !real.is_file() {
        tracing::error!(
            "Security violation: {program} is not a file inside {}",
            root.display()
        );
        return Err(PluginError::Refused(format!(
            "Security violation: {program} is outside the trusted bin/ directory"
        )));
    }
    Ok(real)
}

/// Drops environment entries that could hijack the child (linker, runtime, shell, PATH)
/// unless the matching `ALLOW_EXTERNAL_*` switch is on.
pub fn sanitize_env(env: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let on = |k: &str| crate::settings::var(k).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut out = Vec::new();
    for (k, v) in env {
        let u = k.to_ascii_uppercase();
        let linker = ["LD_", "DYLD_", "_RLD_"].iter().any(|p| u.starts_with(p))
            || u == "SHLIB_PATH"
            || u == "LIBPATH";
        let runtime = ["PYTHON", "NODE_", "PERL", "RUBY", "JAVA_"]
            .iter()
            .any(|p| u.starts_with(p))
            || u == "CLASSPATH";
        let shell = ["IFS", "ENV", "BASH_ENV", "SHELLOPTS"].contains(&u.as_str());
        let allowed = if linker {
            on("ALLOW_EXTERNAL_LINKER_ENV")
        } else if runtime {
            on("ALLOW_EXTERNAL_RUNTIME_ENV")
        } else if shell {
            on("ALLOW_EXTERNAL_SHELL_ENV")
        } else if u == "PATH" {
            if on("ALLOW_EXTERNAL_PATH_ENV_APPEND") {
                let base = std::env::var("PATH").unwrap_or_default();
                out.push((k.clone(), format!("{base}:{v}")));
            }
            false
        } else {
            true
        };
        if allowed {
            out.push((k.clone(), v.clone()));
        } else if u != "PATH" || !on("ALLOW_EXTERNAL_PATH_ENV_APPEND") {
            tracing::warn!("external plugin env `{k}` dropped (not allowed)");
        }
    }
    out
}

/// Decodes a whole raw HTTP reply of an `http`/`unix` plugin into its verdict.
pub fn decode_reply(raw: &[u8]) -> Result<Verdict, PluginError> {
    envelope(&reply_body(raw)?)
}

fn envelope(body: &[u8]) -> Result<Verdict, PluginError> {
    let e: Envelope =
        serde_json::from_slice(body).map_err(|e| bad_reply(format!("invalid reply: {e}")))?;
    if e.status != "success" {
        return Err(bad_reply(format!(
            "plugin said: {}",
            e.message.unwrap_or(e.status)
        )));
    }
    e.data.ok_or_else(|| bad_reply("reply without data"))
}

/// Sends a raw HTTP/1.1 POST over any stream and returns the body of the reply.
async fn post<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    path: &str,
    input: &Value,
) -> Result<Vec<u8>, PluginError> {
    let body = input.to_string();
    let req = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).await.map_err(unreachable)?;
    let mut out = Vec::new();
    (&mut s)
        .take(MAX_REPLY as u64)
        .read_to_end(&mut out)
        .await
        .map_err(unreachable)?;
    reply_body(&out)
}

/// The body of a plugin's raw HTTP/1.1 reply (status 2xx required; chunked decoded). Sans-IO,
/// so the fuzz targets drive it with whatever bytes a hostile plugin could send.
fn reply_body(out: &[u8]) -> Result<Vec<u8>, PluginError> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad_reply("no HTTP header end in reply"))?;
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad_reply("bad status line"))?;
    if !(200..300).contains(&status) {
        return Err(bad_reply(format!("HTTP {status}")));
    }
    let mut rest = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        rest = dechunk(&rest).ok_or_else(|| bad_reply("bad chunked body"))?;
    }
    Ok(rest)
}

/// Decodes a chunked body (0.9.2's Unix driver could not).
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_txt = std::str::from_utf8(&b[..line_end])
            .ok()?
            .split(';')
            .next()?
            .trim()
            .to_string();
        let size = usize::from_str_radix(&size_txt, 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Where an `http` plugin lives: `http://` or `https://`, host, port (the scheme's default
/// when the URL has none), and the path to request.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// `Host` header value: the URL's authority as written.
    authority: String,
    path: String,
}

fn target(url: &str) -> Result<Target, PluginError> {
    let refused = |why: &str| PluginError::Refused(format!("plugin URL `{url}`: {why}"));
    let uri: hyper::Uri = url.parse().map_err(|_| refused("not a URL"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(refused("only http:// and https:// are supported")),
    };
    let host = uri.host().ok_or_else(|| refused("no host"))?;
    let authority = uri.authority().map_or(host, |a| a.as_str()).to_string();
    Ok(Target {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        authority,
        path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
    })
}

/// A byte stream to a plugin, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// The TLS client of `https` plugins: system roots, or none with
/// `EXTERNAL_HTTPS_CALL_SKIP_TLS_VERIFY` (alias `SKIP_TLS_VERIFY`). Built once per mode.
fn tls_connector(skip_verify: bool) -> Result<tokio_rustls::TlsConnector, PluginError> {
    static BUILT: [std::sync::OnceLock<tokio_rustls::TlsConnector>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let slot = &BUILT[usize::from(skip_verify)];
    if let Some(c) = slot.get() {
        return Ok(c.clone());
    }
    let mut cfg = crate::certs::client::config(skip_verify, &[])
        .map_err(|e| PluginError::Refused(format!("TLS client: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let c = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    Ok(slot.get_or_init(|| c).clone())
}

async fn open(t: &Target, skip_verify: bool) -> Result<Box<dyn Stream>, PluginError> {
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| unreachable(format!("connect {}:{}: {e}", t.host, t.port)))?;
    if !t.tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(t.host.clone())
        .map_err(|_| PluginError::Refused(format!("`{}` is not a TLS server name", t.host)))?;
    let tls = tls_connector(skip_verify)?
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(format!("TLS to {}:{}: {e}", t.host, t.port)))?;
    Ok(Box::new(tls))
}

/// The registration and health check of an `http` plugin: `OPTIONS <url>` must answer 2xx.
pub async fn probe_http(url: &str, skip_verify: bool) -> Result<(), PluginError> {
    let t = target(url)?;
    let mut s = open(&t, skip_verify).await?;
    let req = format!(
        "OPTIONS {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        t.path, t.authority
    );
    s.write_all(req.as_bytes()).await.map_err(unreachable)?;
    let mut head = [0u8; 64];
    let n = s.read(&mut head).await.map_err(unreachable)?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad_reply("no HTTP status in the reply"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(bad_reply(format!("OPTIONS {url} answered {status}")))
    }
}

async fn http(url: &str, input: &Value, skip_verify: bool) -> Result<Verdict, PluginError> {
    let t = target(url)?;
    let stream = open(&t, skip_verify).await?;
    envelope(&post(stream, &t.authority, &t.path, input).await?)
}

#[cfg(unix)]
async fn unix(path: &Path, input: &Value) -> Result<Verdict, PluginError> {
    let s = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| unreachable(format!("connect {}: {e}", path.display())))?;
    envelope(&post(s, "localhost", "/", input).await?)
}

#[cfg(not(unix))]
async fn unix(_path: &Path, _input: &Value) -> Result<Verdict, PluginError> {
    Err(PluginError::Refused(
        "unix sockets are not available on this platform".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_urls_take_the_scheme_default_port() {
        let t = target("https://auth.example/check?x=1").expect("https");
        assert_eq!(
            (
                t.tls,
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            (true, "auth.example", 443, "auth.example", "/check?x=1")
        );
        let t = target("http://auth.example").expect("http");
        assert_eq!((t.tls, t.port, t.path.as_str()), (false, 80, "/"));
        let t = target("http://[::1]:8080/p").expect("v6");
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("::1", 8080, "[::1]:8080")
        );
        assert!(matches!(target("ftp://x/"), Err(PluginError::Refused(_))));
        assert!(matches!(target("not a url"), Err(PluginError::Refused(_))));
    }

    #[test]
    fn env_categories_are_filtered() {
        let env: BTreeMap<String, String> = [
            ("LD_PRELOAD", "x"),
            ("PYTHONPATH", "y"),
            ("IFS", "z"),
            ("MODE", "strict"),
            ("path", "/evil"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let kept = sanitize_env(&env);
        assert_eq!(kept, vec![("MODE".to_string(), "strict".to_string())]);
    }

    #[test]
    fn programs_outside_bin_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::write(bin.join("ok"), "#!/bin/sh\n").expect("write");
        std::fs::write(dir.path().join("outside"), "#!/bin/sh\n").expect("write");
        assert!(trusted_program(&bin, "ok").is_ok());
        assert!(trusted_program(&bin, "../outside").is_err());
        assert!(trusted_program(&bin, "/bin/sh").is_err());
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(
            dechunk(b"4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n").as_deref(),
            Some(&b"abcdef"[..])
        );
        assert!(dechunk(b"zz\r\n").is_none());
    }
}
