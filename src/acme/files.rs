//! Where ACME keeps its state: obtained pairs as `certs/<name>.crt` + `.key` (one pair per name
//! of the order, so selection by SNI finds each), and the account key under `certs/.acme/`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;

use crate::certs::der;
use crate::config::acme::Order;

/// The chain and key files of `name`.
pub fn pair_paths(certs: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        certs.join(format!("{name}.crt")),
        certs.join(format!("{name}.key")),
    )
}

/// The account credentials file of one (directory, e-mail).
pub fn account_path(certs: &Path, order: &Order) -> PathBuf {
    let id = format!(
        "{}\n{}",
        order.directory,
        order.email.as_deref().unwrap_or("")
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    certs.join(".acme").join(format!(
        "account-{}.json",
        hex::encode(&digest.as_ref()[..8])
    ))
}

/// The validity of the pair already on disk for `order`, when its certificate names every
/// domain of the order (a pair for other names is replaced).
pub fn existing(certs: &Path, order: &Order) -> Option<(SystemTime, SystemTime)> {
    let first = order.domains.first()?;
    let (crt, key) = pair_paths(certs, first);
    if !key.is_file() {
        return None;
    }
    let leaf = rustls::pki_types::CertificateDer::pem_file_iter(&crt)
        .ok()?
        .next()?
        .ok()?;
    let names = der::dns_names(&leaf);
    if !order.domains.iter().all(|d| names.contains(d)) {
        return None;
    }
    der::validity(&leaf)
}

/// Writes `data` to `path` through a temporary file; `secret` files are readable by the owner
/// only.
pub fn write_atomic(path: &Path, data: &[u8], secret: bool) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("acme-tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    {
        use std::io::Write;
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Installs a new pair under every name of `order`, each file through a temporary one, key
/// before chain: a reload that reads between the two sees a mismatched pair and keeps the old
/// one (the store's rule), never a half-written file.
pub fn install(certs: &Path, order: &Order, chain_pem: &str, key_pem: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(certs)?;
    for name in &order.domains {
        let (crt, key) = pair_paths(certs, name);
        write_atomic(&key, key_pem.as_bytes(), true)?;
        write_atomic(&crt, chain_pem.as_bytes(), false)?;
    }
    Ok(())
}
