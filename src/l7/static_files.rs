//! `internal.driver.static`: files from a directory, with index files, SPA fallback,
//! listings, single byte ranges and precompressed `.gz` variants (plugins.md 12). Beyond 0.9.2:
//! `Last-Modified` and conditional requests (304), dotfiles are never served (but
//! `/.well-known/` is), listings are
//! HTML-escaped, and `.gz` variants of extension-less files are named `<file>.gz`.

use std::io::SeekFrom;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::StatusCode;
use tokio::io::AsyncSeekExt;

use super::body::{self, BoxError};
use super::exchange::HttpExchange;
use super::inputs::flag;
use crate::flow::exec::{Driven, DriverError, Inputs};
use crate::flow::kv::Kv;

/// Read size of the streamed file body.
const CHUNK: usize = 64 * 1024;

/// Why a request path has no file below the root (the text goes to `res.error`).
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The client's path: not UTF-8 once decoded, or a link out of the root.
    #[error("path is not valid UTF-8")]
    NotUtf8,
    #[error("path leaves the root")]
    LeavesRoot,
    /// The configured root (or a part of the path) cannot be read.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// `uri` mapped below `root`: percent-decoded, `.` ignored, `..` never above `root`, and
/// (unless `symlink`) the canonical result inside the canonical root.
pub fn resolve(root: &Path, uri: &str, symlink: bool) -> Result<PathBuf, PathError> {
    let path = uri.split('?').next().unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?;
    let root = root
        .canonicalize()
        .map_err(|e| PathError::Io(root.to_path_buf(), e))?;
    let mut out = root.clone();
    for c in Path::new(decoded.as_ref()).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if out != root => {
                out.pop();
            }
            _ => {}
        }
    }
    if !symlink {
        // The deepest existing ancestor must stay inside the root once links are resolved.
        let mut probe = out.as_path();
        while !probe.exists() {
            match probe.parent() {
                Some(p) => probe = p,
                None => break,
            }
        }
        let real = probe
            .canonicalize()
            .map_err(|e| PathError::Io(probe.to_path_buf(), e))?;
        if !real.starts_with(&root) {
            return Err(PathError::LeavesRoot);
        }
    }
    Ok(out)
}

/// Dot-files and dot-dirs (`.git`, `.env`, `.htpasswd`) are never served, except the site's
/// `/.well-known/` (RFC 8615: ACME http-01 challenges, `security.txt`), whose own dot-files
/// stay hidden. `p` is already percent-decoded, so `%2Egit` is `.git` here.
fn is_hidden(root: &Path, p: &Path) -> bool {
    p.strip_prefix(root).is_ok_and(|rel| {
        rel.components().enumerate().any(|(i, c)| {
            matches!(c, Component::Normal(n)
                if n.to_string_lossy().starts_with('.') && !(i == 0 && n == ".well-known"))
        })
    })
}

fn mime(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        _ => return None,
    })
}

/// An HTTP date (RFC 9110 IMF-fixdate) for `t`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A single `bytes=` range of a `size`-byte file; `None` when not satisfiable (or several).
pub fn range(spec: &str, size: u64) -> Option<(u64, u64)> {
    let spec = spec.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size - 1
        } else {
            b.parse::<u64>().ok()?.min(size - 1)
        };
        (start, end)
    };
    (start <= end && start < size).then_some((start, end))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn listing(dir: &Path, uri: &str) -> std::io::Result<String> {
    let mut entries = Vec::new();
    let mut rd = tokio::fs::read_dir(dir).await?;
    while let Some(e) = rd.next_entry().await? {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let meta = e.metadata().await?;
        entries.push((name, meta.is_dir(), meta.len()));
    }
    entries.sort();
    let title = escape(uri);
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n<table>\n"
    );
    if !uri.trim_end_matches('/').is_empty() {
        html.push_str("<tr><td><a href=\"../\">..</a></td><td></td></tr>\n");
    }
    for (name, is_dir, len) in entries {
        let shown = if is_dir {
            format!("{name}/")
        } else {
            name.clone()
        };
        let href =
            percent_encoding::utf8_percent_encode(&shown, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%2F", "/")
                .replace("%2E", ".")
                .replace("%2D", "-")
                .replace("%5F", "_");
        let size = if is_dir {
            "-".to_string()
        } else {
            len.to_string()
        };
        html.push_str(&format!(
            "<tr><td><a href=\"{href}\">{}</a></td><td>{size}</td></tr>\n",
            escape(&shown)
        ));
    }
    html.push_str("</table></body></html>\n");
    Ok(html)
}

/// The body of `len` bytes of `file` from its current position, read in chunks.
struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: Vec<u8>,
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let want = (this.left.min(CHUNK as u64)) as usize;
        match ready!(body::poll_chunk(&mut this.file, &mut this.buf, want, cx)) {
            Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
            Ok(None) => Poll::Ready(Some(Err("file shorter than its size".into()))),
            Ok(Some(chunk)) => {
                this.left -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

fn header(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q0 = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q0
        })
}

pub async fn serve(
    x: &mut HttpExchange,
    inputs: Inputs<'_>,
    kv: &mut Kv,
) -> Result<Driven, DriverError> {
    let s = |k: &str| inputs.str(k);
    let root = PathBuf::from(s("root").ok_or_else(|| DriverError::param("root", "missing"))?);
    let uri = s("uri")
        .ok_or_else(|| DriverError::param("uri", "missing"))?
        .to_string();
    let index = s("index").unwrap_or("index.html").to_string();
    let (spa, browse, precompress, symlink) = (
        flag(inputs.get("spa")),
        flag(inputs.get("browse")),
        flag(inputs.get("precompress")),
        flag(inputs.get("symlink")),
    );
    let path = match resolve(&root, &uri, symlink) {
        Ok(p) => p,
        Err(why) => {
            kv.set("res.error", why.to_string());
            return Ok(("failure".into(), Vec::new()));
        }
    };
    let real_root = root.canonicalize().map_err(|e| e.to_string())?;
    let not_found = || Ok(("not_found".into(), Vec::new()));
    let mut file = path.clone();
    let meta = match tokio::fs::metadata(&file).await {
        Ok(m) if !is_hidden(&real_root, &file) => Some(m),
        _ => None,
    };
    match meta {
        Some(m) if m.is_dir() => {
            let candidate = file.join(&index);
            if tokio::fs::metadata(&candidate)
                .await
                .is_ok_and(|m| m.is_file())
            {
                file = candidate;
            } else if browse {
                let html = listing(&file, &uri).await.map_err(|e| e.to_string())?;
                let mut h = HeaderMap::new();
                header(&mut h, "content-type", "text/html; charset=utf-8");
                x.resp = Some((StatusCode::OK, h.into(), body::full(html)));
                return Ok(("success".into(), Vec::new()));
            } else {
                return not_found();
            }
        }
        Some(_) => {}
        None => {
            let fallback = real_root.join(&index);
            if spa
                && tokio::fs::metadata(&fallback)
                    .await
                    .is_ok_and(|m| m.is_file())
            {
                file = fallback;
            } else {
                return not_found();
            }
        }
    }
    send_file(x, kv, &file, precompress).await
}

async fn send_file(
    x: &mut HttpExchange,
    kv: &mut Kv,
    file: &Path,
    precompress: bool,
) -> Result<Driven, DriverError> {
    let meta = tokio::fs::metadata(file).await.map_err(|e| e.to_string())?;
    let size = meta.len();
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let nanos = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let etag = format!("W/\"{nanos:x}-{size:x}\"");
    let last_modified = http_date(mtime);
    let req = &x.req.headers;
    let mut h = HeaderMap::new();
    header(&mut h, "etag", &etag);
    header(&mut h, "last-modified", &last_modified);
    let not_modified = match req.get(hyper::header::IF_NONE_MATCH) {
        Some(v) => v
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")),
        None => req
            .get(hyper::header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == last_modified),
    };
    if not_modified {
        kv.set("res.status", "304");
        x.resp = Some((StatusCode::NOT_MODIFIED, h.into(), body::empty()));
        return Ok(("success".into(), Vec::new()));
    }
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let content_type = match mime(file) {
        Some(t) => t,
        None => {
            let sniff = crate::settings::get().static_sniff_bytes as u64;
            let mut head = vec![0u8; sniff.min(size) as usize];
            tokio::io::AsyncReadExt::read_exact(&mut f, &mut head)
                .await
                .map_err(|e| e.to_string())?;
            f.seek(SeekFrom::Start(0))
                .await
                .map_err(|e| e.to_string())?;
            body::guess_content_type(&head)
        }
    };
    header(&mut h, "content-type", content_type);
    let ranged = req.get(hyper::header::RANGE).and_then(|v| v.to_str().ok());
    if let Some(spec) = ranged {
        let Some((start, end)) = range(spec, size) else {
            kv.set("res.status", "416");
            header(&mut h, "content-range", &format!("bytes */{size}"));
            x.resp = Some((StatusCode::RANGE_NOT_SATISFIABLE, h.into(), body::empty()));
            return Ok(("success".into(), Vec::new()));
        };
        f.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| e.to_string())?;
        kv.set("res.status", "206");
        header(
            &mut h,
            "content-range",
            &format!("bytes {start}-{end}/{size}"),
        );
        let len = end - start + 1;
        header(&mut h, "content-length", &len.to_string());
        let body = FileBody {
            file: f,
            left: len,
            buf: Vec::new(),
        }
        .boxed();
        x.resp = Some((StatusCode::PARTIAL_CONTENT, h.into(), body));
        return Ok(("success".into(), Vec::new()));
    }
    header(&mut h, "accept-ranges", "bytes");
    let (mut f, mut len) = (f, size);
    if precompress && accepts_gzip(req) {
        let mut gz = file.as_os_str().to_owned();
        gz.push(".gz");
        if let Ok(g) = tokio::fs::File::open(&gz).await {
            if let Ok(m) = g.metadata().await {
                f = g;
                len = m.len();
                header(&mut h, "content-encoding", "gzip");
                header(&mut h, "vary", "accept-encoding");
            }
        }
    }
    header(&mut h, "content-length", &len.to_string());
    let body = FileBody {
        file: f,
        left: len,
        buf: Vec::new(),
    }
    .boxed();
    x.resp = Some((StatusCode::OK, h.into(), body));
    Ok(("success".into(), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=10-19", 100), Some((10, 19)));
        assert_eq!(range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(range("bytes=-5", 100), Some((95, 99)));
        assert_eq!(range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(range("bytes=100-", 100), None);
        assert_eq!(range("bytes=1-2,4-5", 100), None);
        assert_eq!(range("items=1-2", 100), None);
        assert_eq!(range("bytes=5-1", 100), None);
        assert_eq!(range("bytes=-0", 100), None);
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(http_date(t), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn traversal_stays_inside_the_root() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("a")).expect("mkdir");
        let root = dir.path().canonicalize().expect("canon");
        let r = |u: &str| resolve(dir.path(), u, false);
        assert_eq!(r("/a/../b").expect("ok"), root.join("b"));
        assert_eq!(r("/../../etc/passwd").expect("ok"), root.join("etc/passwd"));
        assert_eq!(r("/%2e%2e/%2e%2e/x").expect("ok"), root.join("x"));
        assert!(r("/%ff").is_err());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc", dir.path().join("out")).expect("link");
            assert!(r("/out/passwd").is_err(), "a link leaving the root");
            assert!(resolve(dir.path(), "/out/passwd", true).is_ok());
        }
    }
}
