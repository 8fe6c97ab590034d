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
                Some(c) => ok(StatusCode::OK, describe(rt, c)),
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

/// What the API says of one loaded pair: validity, names, issuer, fingerprint, key type, and
/// where it comes from (`file`, or `acme` with its next renewal).
pub(crate) fn describe(rt: &Runtime, c: &crate::certs::Cert) -> Value {
    use crate::certs::der;
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    };
    let leaf = c.key.cert.first().map(|d| d.as_ref()).unwrap_or_default();
    let validity = der::validity(leaf);
    let (issuer, subject) = der::common_names(leaf);
    let days = c
        .not_after
        .and_then(|t| t.duration_since(std::time::SystemTime::now()).ok())
        .map(|d| d.as_secs() / 86_400);
    let key_type = match c.key.key.algorithm() {
        rustls::SignatureAlgorithm::ECDSA => "ECDSA",
        rustls::SignatureAlgorithm::RSA => "RSA",
        rustls::SignatureAlgorithm::ED25519 => "ED25519",
        _ => "other",
    };
    let mut v = json!({
        "id": c.id,
        "subject": subject,
        "issuer": issuer,
        "san": der::dns_names(leaf),
        "not_before": validity.map(|(b, _)| crate::ops::http::rfc3339(b)),
        "not_after": c.not_after.map(crate::ops::http::rfc3339),
        "not_before_unix": validity.and_then(|(b, _)| unix(b)),
        "not_after_unix": c.not_after.and_then(unix),
        "expires_in_days": days,
        "fingerprint_sha256": hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf)),
        "key_type": key_type,
        "chain_len": c.key.cert.len(),
        "auto_generated": c.id == "default",
        "source": "file",
    });
    if let Some(r) = rt.acme.renewals.get(&c.id) {
        v["source"] = json!("acme");
        v["next_renewal_unix"] = json!(unix(r.next));
        v["renewal_failures"] = json!(r.failures);
        v["last_error"] = json!(r.last_error);
    }
    v
}
