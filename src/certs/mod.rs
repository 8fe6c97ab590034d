//! The certificate store: pairs from `certs/` by id (file stem), checked (the key must match
//! the certificate), chosen by SNI with a wildcard step, and the `default` pair created when
//! missing or about to expire.

pub mod client;
pub mod der;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::error::{Problem, Severity};

/// One loaded pair.
#[derive(Debug, Clone)]
pub struct Cert {
    pub id: String,
    pub key: Arc<CertifiedKey>,
    pub not_after: Option<SystemTime>,
    /// The files it came from, with their modification times (change detection).
    pub stamp: Vec<(PathBuf, Option<SystemTime>)>,
}

/// Every usable pair by id.
#[derive(Debug, Clone, Default)]
pub struct CertStore {
    pub by_id: BTreeMap<String, Cert>,
}

impl CertStore {
    /// Exact id, then a wildcard id for one more label (`*.example.com` or `_.example.com`),
    /// then `default`.
    pub fn select(&self, name: &str) -> Option<&Cert> {
        if let Some(c) = self.by_id.get(name) {
            return Some(c);
        }
        if let Some((_, parent)) = name.split_once('.') {
            for w in [format!("*.{parent}"), format!("_.{parent}")] {
                if let Some(c) = self.by_id.get(&w) {
                    return Some(c);
                }
            }
        }
        self.by_id.get("default")
    }
}

fn problem(file: &Path, root: &Path, msg: String) -> Problem {
    let rel = file
        .strip_prefix(root)
        .unwrap_or(file)
        .to_string_lossy()
        .into_owned();
    Problem {
        file: rel,
        at: String::new(),
        message: msg,
        severity: Severity::Error,
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Why a certificate pair cannot be used (or made).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read: {0}")]
    Read(rustls::pki_types::pem::Error),
    #[error("bad PEM: {0}")]
    Pem(rustls::pki_types::pem::Error),
    #[error("no CERTIFICATE block")]
    NoCertificate,
    #[error("{0}: no usable private key: {1}")]
    NoKey(PathBuf, rustls::pki_types::pem::Error),
    #[error("{0}: unsupported key: {1}")]
    UnsupportedKey(PathBuf, rustls::Error),
    #[error("the key in {0} does not match this certificate")]
    Mismatch(String),
    #[error("cannot generate the default pair: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// Loads one pair; the key must be supported and must match the certificate.
fn load_pair(id: &str, chain: &Path, key: &Path) -> Result<Cert, CertError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
        .map_err(CertError::Read)?
        .collect::<Result<_, _>>()
        .map_err(CertError::Pem)?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| CertError::NoKey(key.to_path_buf(), e))?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|e| CertError::UnsupportedKey(key.to_path_buf(), e))?;
    let not_after = der::not_after(&certs[0]);
    let ck = CertifiedKey::new(certs, signer);
    ck.keys_match().map_err(|_| {
        CertError::Mismatch(
            key.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_string(),
        )
    })?;
    Ok(Cert {
        id: id.to_string(),
        key: Arc::new(ck),
        not_after,
        stamp: vec![
            (chain.to_path_buf(), mtime(chain)),
            (key.to_path_buf(), mtime(key)),
        ],
    })
}

/// The entries of `dir`, sorted (missing dir: none).
fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// The (chain, key) files of every id in `dir` (`.crt` preferred over `.pem`; `.bak` ignored).
pub fn pairs(dir: &Path) -> BTreeMap<String, (Option<PathBuf>, Option<PathBuf>)> {
    let mut out: BTreeMap<String, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    for p in sorted_files(dir) {
        let (Some(stem), Some(ext)) = (
            p.file_stem().and_then(|s| s.to_str()),
            p.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if stem.starts_with('.') {
            continue;
        }
        let e = out.entry(stem.to_string()).or_default();
        match ext {
            "crt" => e.0 = Some(p.clone()),
            "pem" if e.0.is_none() => e.0 = Some(p.clone()),
            "key" => e.1 = Some(p.clone()),
            _ => {}
        }
    }
    out
}

/// Loads `dir`. A pair that fails keeps its version from `previous` (if any); every failure is
/// reported against its file.
pub fn load(root: &Path, previous: Option<&CertStore>) -> (CertStore, Vec<Problem>) {
    let dir = root.join("certs");
    let mut store = CertStore::default();
    let mut problems = Vec::new();
    for (id, files) in pairs(&dir) {
        let (Some(chain), Some(key)) = files else {
            continue;
        };
        let prev = previous.and_then(|p| p.by_id.get(&id));
        if let Some(p) = prev {
            if p.stamp == [(chain.clone(), mtime(&chain)), (key.clone(), mtime(&key))] {
                store.by_id.insert(id, p.clone());
                continue;
            }
        }
        match load_pair(&id, &chain, &key) {
            Ok(c) => {
                store.by_id.insert(id, c);
            }
            Err(e) => {
                problems.push(problem(&chain, root, e.to_string()));
                if let Some(p) = prev {
                    store.by_id.insert(id, p.clone());
                }
            }
        }
    }
    (store, problems)
}

/// A change stamp of the `certs/` directory (names, sizes, modification times).
pub fn fingerprint(root: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in sorted_files(&root.join("certs")) {
        p.hash(&mut h);
        if let Ok(m) = std::fs::metadata(&p) {
            m.len().hash(&mut h);
            m.modified().ok().hash(&mut h);
        }
    }
    h.finish()
}

/// Creates `certs/default.crt` + `.key` (self-signed for `localhost` and `127.0.0.1`) when
/// missing, unreadable, or expiring within 7 days. Returns true when it wrote a new pair.
pub fn ensure_default(root: &Path) -> Result<bool, CertError> {
    let dir = root.join("certs");
    let (crt, key) = (dir.join("default.crt"), dir.join("default.key"));
    if let Ok(c) = load_pair("default", &crt, &key) {
        let soon = SystemTime::now() + Duration::from_secs(7 * 86_400);
        if c.not_after.is_none_or(|t| t > soon) {
            return Ok(false);
        }
    }
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Vane default certificate");
    // A server certificate's usual extensions. The subject key identifier (with the authority
    // key identifier, the same key here) is what matters in practice: without one, an OpenSSL
    // client that builds the chain scans its whole CA directory on every handshake (4
    // `getdents64` and 6 `stat` per connection; 15 % of `openssl s_time`'s CPU).
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    std::fs::create_dir_all(&dir).map_err(|e| CertError::Write(dir.clone(), e))?;
    write_atomic(&crt, cert.pem().as_bytes())?;
    write_atomic(&key, key_pair.serialize_pem().as_bytes())?;
    Ok(true)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CertError> {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, data)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| CertError::Write(path.to_path_buf(), e))
}

#[cfg(test)]
mod tests;
