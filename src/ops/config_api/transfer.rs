//! `/config/export` and `/config/import`: the whole config dir as an archive.

use hyper::StatusCode;
use serde_json::json;

use super::{apply, err, ok};
use crate::config::error::Severity;
use crate::ops::http::{Req, Resp};
use crate::runtime::Runtime;

pub(super) fn export(rt: &Runtime) -> Resp {
    match crate::ops::archive::export(rt.config.dir()) {
        Ok(tgz) => {
            let mut r = crate::ops::http::respond(StatusCode::OK, "application/gzip", tgz);
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
            if let Ok(v) = format!("attachment; filename=\"vane-config-{stamp}.tar.gz\"").parse() {
                r.headers_mut()
                    .insert(hyper::header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The archive of an import: the raw body, or the `file` field of a multipart form.
fn archive_bytes(req: &Req) -> Option<&[u8]> {
    let ct = req
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(boundary) = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
    else {
        return Some(&req.body);
    };
    let delim = format!("--{}", boundary.trim_matches('"'));
    let body = &req.body[..];
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|i| i + from)
    };
    let mut pos = 0;
    while let Some(start) = find(body, delim.as_bytes(), pos) {
        let head_start = start + delim.len();
        let head_end = find(body, b"\r\n\r\n", head_start)?;
        let head = String::from_utf8_lossy(&body[head_start..head_end]);
        let data_start = head_end + 4;
        let next = find(body, format!("\r\n{delim}").as_bytes(), data_start)?;
        if head.contains("name=\"file\"") {
            return Some(&body[data_start..next]);
        }
        pos = next + 2;
    }
    None
}

pub(super) async fn import(rt: &Runtime, req: &Req) -> Resp {
    let Some(archive) = archive_bytes(req) else {
        return err(StatusCode::BAD_REQUEST, "no `file` field in the form");
    };
    let root = rt.config.dir().to_path_buf();
    let stage = root.join(format!(".import-{}", crate::conn::uuid_v7()));
    let result = (|| -> Result<usize, (StatusCode, String)> {
        let files = crate::ops::archive::unpack(archive, &stage).map_err(|e| {
            // A broken upload is the client's fault; failing to stage it is ours.
            let status = match e {
                crate::ops::archive::UnpackError::Write(..) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, e.to_string())
        })?;
        let mut loaded = crate::config::load::load(&stage, None);
        loaded.problems.extend(crate::certs::load(&stage, None).1);
        if loaded.has_errors() {
            let problems: Vec<String> = loaded
                .problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .map(ToString::to_string)
                .collect();
            return Err((
                StatusCode::BAD_REQUEST,
                format!("Validation failed: {}", problems.join("; ")),
            ));
        }
        crate::ops::archive::replace(&root, &stage)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(files)
    })();
    let _ = std::fs::remove_dir_all(&stage);
    match result {
        Ok(files) => {
            apply(rt).await;
            ok(StatusCode::OK, json!({"imported": {"config_files": files}}))
        }
        Err((status, e)) => err(status, e),
    }
}
