//! `/certs/{id}`: certificate pairs in `certs/`, validated before they are written.

use std::path::PathBuf;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::{apply, err, no_content, ok, tempdir_in, write_atomic};
use crate::ops::http::{Req, Resp};
use crate::runtime::Runtime;

/// One certificate: inspect, upload (`{cert_pem, key_pem}`, checked before anything is written)
/// or delete (`default` cannot be deleted).
pub(super) async fn certs_route(rt: &Runtime, req: &Req, id: &str) -> Resp {
    let valid_id = !id.is_empty()
        && id.len() <= 253
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*'))
        && !id.starts_with('.');
    if !valid_id {
        return err(
            StatusCode::BAD_REQUEST,
            "a certificate id is a host name (letters, digits, . - _ *)",
        );
    }
    let dir = rt.config.dir().join("certs");
    match req.method {
        Method::GET => {
            let store = rt.certs.load();
            match store.by_id.get(id) {
                Some(c) => {
                    let not_after = c
                        .not_after
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs());
                    let days = c
                        .not_after
                        .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
                        .map(|d| d.as_secs() / 86_400);
                    ok(
                        StatusCode::OK,
                        json!({"id": id, "not_after_unix": not_after, "expires_in_days": days, "chain_len": c.key.cert.len()}),
                    )
                }
                None => err(StatusCode::NOT_FOUND, "no such certificate"),
            }
        }
        Method::POST => {
            let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                return err(StatusCode::BAD_REQUEST, "invalid JSON");
            };
            let (Some(cert), Some(key)) = (
                body.get("cert_pem").and_then(Value::as_str),
                body.get("key_pem").and_then(Value::as_str),
            ) else {
                return err(
                    StatusCode::BAD_REQUEST,
                    "`cert_pem` and `key_pem` are required",
                );
            };
            // Check the pair in a scratch dir first: nothing bad ever reaches certs/.
            let Ok(scratch) = tempdir_in(&dir) else {
                return err(StatusCode::INTERNAL_SERVER_ERROR, "cannot stage the upload");
            };
            let staged = (|| -> std::io::Result<()> {
                std::fs::create_dir_all(scratch.join("certs"))?;
                std::fs::write(scratch.join("certs").join(format!("{id}.crt")), cert)?;
                std::fs::write(scratch.join("certs").join(format!("{id}.key")), key)
            })();
            let checked = staged.map_err(|e| e.to_string()).and_then(|_| {
                let (store, problems) = crate::certs::load(&scratch, None);
                match (store.by_id.contains_key(id), problems.first()) {
                    (true, _) => Ok(()),
                    (false, Some(p)) => Err(p.message.clone()),
                    (false, None) => Err("not a certificate and key pair".to_string()),
                }
            });
            let _ = std::fs::remove_dir_all(&scratch);
            if let Err(e) = checked {
                return err(StatusCode::BAD_REQUEST, e);
            }
            let written = write_atomic(&dir.join(format!("{id}.key")), key.as_bytes())
                .and_then(|_| write_atomic(&dir.join(format!("{id}.crt")), cert.as_bytes()));
            if let Err(e) = written {
                return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            }
            apply(rt).await;
            // In force when we answer, even if a watcher-driven reload saw the files first
            // (then the reload above found nothing changed and left the certificates alone).
            rt.reload_certs();
            ok(StatusCode::CREATED, json!({"id": id, "created": true}))
        }
        Method::DELETE => {
            if id == "default" {
                return err(
                    StatusCode::BAD_REQUEST,
                    "the default certificate cannot be deleted",
                );
            }
            let files: Vec<PathBuf> = ["crt", "pem", "key"]
                .iter()
                .map(|e| dir.join(format!("{id}.{e}")))
                .filter(|p| p.exists())
                .collect();
            if files.is_empty() {
                return err(StatusCode::NOT_FOUND, "no such certificate");
            }
            for f in files {
                let _ = std::fs::remove_file(f);
            }
            apply(rt).await;
            // In force when we answer, even if a watcher-driven reload saw the files first
            // (then the reload above found nothing changed and left the certificates alone).
            rt.reload_certs();
            no_content()
        }
        _ => err(StatusCode::NOT_FOUND, "no such route"),
    }
}
