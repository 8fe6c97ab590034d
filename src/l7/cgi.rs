//! `internal.driver.cgi`: runs a CGI/1.1 program per request (plugins.md 11). The request
//! body is buffered within the L7 limits and written to stdin; the header block of stdout
//! becomes the response head and the rest streams as the body. Beyond 0.9.2: the child gets
//! only the CGI variables and `PATH` (not Vane's environment with its `ACCESS_TOKEN`), a
//! `\n\n` header block keeps the body's first bytes, repeated headers (`Set-Cookie`) are all
//! kept, and `Location` without `Status` is a 302.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdout, Command};

use super::body::BoxError;
use super::exchange::HttpExchange;
use crate::flow::exec::{Driven, DriverError, Exchange, Inputs};
use crate::flow::kv::Kv;
use crate::flow::step::REQ_BODY;

/// Largest CGI header block.
const MAX_HEAD: usize = 64 * 1024;

/// Collapses repeated `/` and makes sure of a leading one.
fn normalise(p: &str) -> String {
    let mut out = String::from("/");
    for seg in p.split('/').filter(|s| !s.is_empty()) {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(seg);
    }
    if p.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// `SCRIPT_NAME` and `PATH_INFO` from the URI path and `script_name` (plugins.md 11).
pub fn split_script(uri_path: &str, script_name: &str) -> (String, String) {
    let uri = normalise(uri_path);
    let mut script = normalise(script_name);
    if script.len() > 1 {
        script = script.trim_end_matches('/').to_string();
    }
    if script == "/" {
        return (script, format!("/{}", uri.trim_start_matches('/')));
    }
    if uri == script {
        return (script, String::new());
    }
    match uri.strip_prefix(&script) {
        Some(rest) if rest.starts_with('/') => (script, rest.to_string()),
        _ => (String::new(), uri),
    }
}

/// Where the header block ends: (end of headers, start of body).
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// Parses the header block: status (from `Status:`, else 302 with `Location`, else 200) and
/// the other headers, repeated ones kept.
pub fn parse_head(head: &str) -> (StatusCode, HeaderMap) {
    let mut status = None;
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .and_then(|c| StatusCode::from_u16(c).ok());
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
    let status = status.unwrap_or(if headers.contains_key(hyper::header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    (status, headers)
}

/// The rest of the program's stdout: each read may wait at most `idle`, the whole at most
/// `max` bytes. The child is killed when the body is dropped.
struct CgiBody {
    _child: Child,
    out: ChildStdout,
    first: Option<Bytes>,
    buf: Vec<u8>,
    total: usize,
    max: usize,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for CgiBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // The bytes read with the header block count against the cap like the rest.
        let read = match this.first.take() {
            Some(b) => Poll::Ready(Ok(Some(b))),
            None => super::body::poll_chunk(&mut this.out, &mut this.buf, 16 * 1024, cx),
        };
        match read {
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Ok(Some(chunk))) => {
                this.total += chunk.len();
                if this.total > this.max {
                    return Poll::Ready(Some(Err(
                        "CGI body larger than CGI_BODY_MAX_SIZE_BYTE".into()
                    )));
                }
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err("CGI body timed out".into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

pub async fn run(
    x: &mut HttpExchange,
    inputs: Inputs<'_>,
    kv: &mut Kv,
) -> Result<Driven, DriverError> {
    let s = |k: &str| {
        inputs
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let command = s("command");
    if command.trim().is_empty() {
        return Err(DriverError::param("command", "empty"));
    }
    let Some(uri) = inputs
        .get("uri")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(DriverError::param("uri", "missing"));
    };
    let timeout = super::inputs::uint(inputs.get("timeout")).unwrap_or(30);
    // The whole request body first (the L7 limits apply).
    x.buffer(REQ_BODY).await;
    let body = match &x.req_buf {
        Some(Ok(b)) => b.bytes.clone(),
        _ => return Err("request body buffering refused".into()),
    };
    let (uri_path, uri_query) = match uri.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (uri.clone(), String::new()),
    };
    let query = inputs
        .get("query")
        .and_then(Value::as_str)
        .map_or(uri_query, str::to_string);
    let script = s("script");
    let doc_root = s("doc_root");
    let script_name_in = s("script_name");
    let (script_name, path_info) = match inputs.get("path_info").and_then(Value::as_str) {
        Some(p) => (script_name_in.clone(), p.to_string()),
        None if !script_name_in.is_empty() => split_script(&uri_path, &script_name_in),
        None => (String::new(), String::new()),
    };
    let mut cmd = Command::new(command.trim());
    if !script.is_empty() {
        cmd.arg(&script);
    }
    cmd.env_clear();
    // Only what the operator allows (HOME, LANG, PYTHONPATH, ...); the CGI variables below
    // win over a name listed here.
    for name in &x.rt.settings.cgi_pass_env {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env(
        "PATH",
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
    )
    .env("GATEWAY_INTERFACE", "CGI/1.1")
    .env("SERVER_SOFTWARE", "Vane/0.9.2")
    .env("REDIRECT_STATUS", "200")
    .env("SERVER_PROTOCOL", "HTTP/1.1")
    .env("SCRIPT_FILENAME", &script)
    .env("SCRIPT_NAME", &script_name)
    .env("DOCUMENT_ROOT", &doc_root)
    .env("PATH_INFO", &path_info)
    .env("REQUEST_METHOD", {
        let m = s("method");
        if m.is_empty() {
            "GET".to_string()
        } else {
            m
        }
    })
    .env("REQUEST_URI", &uri_path)
    .env("QUERY_STRING", &query)
    .env("REMOTE_ADDR", s("remote_addr"))
    .env("REMOTE_PORT", s("remote_port"))
    .env("SERVER_PORT", s("server_port"))
    .env("SERVER_NAME", s("server_name"))
    .env("CONTENT_LENGTH", body.len().to_string());
    if !path_info.is_empty() && !doc_root.is_empty() {
        cmd.env(
            "PATH_TRANSLATED",
            format!("{}{path_info}", doc_root.trim_end_matches('/')),
        );
    }
    for (name, value) in &x.req.headers {
        let Ok(v) = value.to_str() else { continue };
        if name == hyper::header::CONTENT_TYPE {
            cmd.env("CONTENT_TYPE", v);
        } else if name != hyper::header::CONTENT_LENGTH {
            let var = format!(
                "HTTP_{}",
                name.as_str().to_ascii_uppercase().replace('-', "_")
            );
            cmd.env(var, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{command}`: {e}"))?;
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("CGI pipes unavailable".into());
    };
    // Written concurrently, so a program that answers before reading cannot deadlock us.
    let writer = tokio::spawn(async move {
        let r = stdin.write_all(&body).await;
        drop(stdin);
        r
    });
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr);
        let mut line = String::new();
        while tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
            .await
            .is_ok_and(|n| n > 0)
        {
            tracing::debug!(target: "vane::cgi", "{}", line.trim_end());
            line.clear();
        }
    });
    let mut head = Vec::new();
    let read_head = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = head_end(&head) {
                return Ok(end);
            }
            if head.len() > MAX_HEAD {
                return Err("CGI header block too large");
            }
            match stdout.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err("CGI output ended before its headers"),
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let (head_len, body_start) =
        match tokio::time::timeout(Duration::from_secs(timeout), read_head).await {
            Ok(Ok(end)) => end,
            Ok(Err(why)) => return Ok(("failure".into(), vec![("error".into(), why.into())])),
            Err(_) => {
                return Ok((
                    "failure".into(),
                    vec![("error".into(), "CGI header timeout".into())],
                ))
            }
        };
    if matches!(writer.await, Ok(Err(_))) && head_len == 0 {
        return Ok((
            "failure".into(),
            vec![("error".into(), "CGI stdin write failed".into())],
        ));
    }
    let (status, headers) = parse_head(&String::from_utf8_lossy(&head[..head_len]));
    kv.set("res.status", status.as_str());
    let rest = Bytes::copy_from_slice(&head[body_start..]);
    let settings = x.rt.settings;
    let body = CgiBody {
        _child: child,
        out: stdout,
        first: (!rest.is_empty()).then_some(rest),
        buf: Vec::new(),
        total: 0,
        max: settings.cgi_body_max,
        idle: settings.cgi_body_timeout,
        timer: Box::pin(tokio::time::sleep(settings.cgi_body_timeout)),
    };
    x.resp = Some((status, headers.into(), body.boxed()));
    Ok(("success".into(), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_name_and_path_info() {
        assert_eq!(
            split_script("/cgi/app.lua/x/y", "/cgi/app.lua"),
            ("/cgi/app.lua".into(), "/x/y".into())
        );
        assert_eq!(
            split_script("//cgi//app.lua", "/cgi/app.lua/"),
            ("/cgi/app.lua".into(), String::new())
        );
        assert_eq!(split_script("/a/b", "/"), ("/".into(), "/a/b".into()));
        assert_eq!(
            split_script("/other", "/cgi"),
            (String::new(), "/other".into())
        );
        assert_eq!(
            split_script("/cgix", "/cgi"),
            (String::new(), "/cgix".into())
        );
    }

    #[test]
    fn header_blocks() {
        assert_eq!(head_end(b"A: b\r\n\r\nbody"), Some((4, 8)));
        assert_eq!(head_end(b"A: b\n\nbody"), Some((4, 6)));
        assert_eq!(head_end(b"A: b\n"), None);
        let (st, h) = parse_head("Status: 401 Unauthorized\nSet-Cookie: a=1\nSet-Cookie: b=2");
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
        let (st, _) = parse_head("Location: /dashboard");
        assert_eq!(st, StatusCode::FOUND);
    }
}
