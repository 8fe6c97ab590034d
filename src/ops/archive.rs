//! Config export and import as `tar.gz` (`GET /config/export`, `POST /config/import`).
//!
//! An import is staged in a scratch directory and validated as a whole before any file of the
//! running config is touched; a bad archive changes nothing.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Largest archive accepted and largest total unpacked size.
pub const MAX_ARCHIVE: usize = 16 * 1024 * 1024;
const MAX_UNPACKED: u64 = 64 * 1024 * 1024;

/// Packs the config dir (hidden files left out).
pub fn export(root: &Path) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            let Ok(rel) = p.strip_prefix(root) else {
                continue;
            };
            if hidden {
                continue;
            }
            if p.is_dir() {
                tar.append_dir(rel, &p)?;
                stack.push(p);
            } else if p.is_file() {
                tar.append_path_with_name(&p, rel)?;
            }
        }
    }
    tar.into_inner()?.finish()
}

/// Why an uploaded archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("not a tar.gz archive: {0}")]
    NotAnArchive(std::io::Error),
    #[error("bad archive entry: {0}")]
    BadEntry(std::io::Error),
    #[error("{0}: paths must stay inside the config dir")]
    Escapes(PathBuf),
    #[error("{0}: only files and directories are accepted")]
    NotAFile(PathBuf),
    #[error("archive too large once unpacked")]
    TooLarge,
    /// Writing the staged copy failed (our side).
    #[error("{0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// Unpacks `archive` into `dest`, refusing absolute paths, `..`, links and oversize content.
pub fn unpack(archive: &[u8], dest: &Path) -> Result<usize, UnpackError> {
    let gz = flate2::read::GzDecoder::new(archive);
    let mut tar = tar::Archive::new(gz);
    let mut total = 0u64;
    let mut files = 0usize;
    for entry in tar.entries().map_err(UnpackError::NotAnArchive)? {
        let mut entry = entry.map_err(UnpackError::BadEntry)?;
        let path = entry.path().map_err(UnpackError::BadEntry)?.into_owned();
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(UnpackError::Escapes(path));
        }
        let kind = entry.header().entry_type();
        let target = dest.join(&path);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| UnpackError::Write(target.clone(), e))?;
            continue;
        }
        if !kind.is_file() {
            return Err(UnpackError::NotAFile(path));
        }
        total += entry.header().size().unwrap_or(0);
        if total > MAX_UNPACKED {
            return Err(UnpackError::TooLarge);
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| UnpackError::Write(parent.to_path_buf(), e))?;
        }
        let mut data = Vec::new();
        entry
            .by_ref()
            .take(MAX_UNPACKED)
            .read_to_end(&mut data)
            .map_err(UnpackError::BadEntry)?;
        std::fs::write(&target, data).map_err(|e| UnpackError::Write(target.clone(), e))?;
        files += 1;
    }
    Ok(files)
}

/// Replaces the config files of `root` by those of `staged` (config formats, certificates,
/// `bin/` programs): files of those kinds missing from the archive are removed.
pub fn replace(root: &Path, staged: &Path) -> std::io::Result<()> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let managed = |p: &Path| {
        matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("json" | "yaml" | "yml" | "toml" | "ron" | "crt" | "pem" | "key")
        )
    };
    let mut old = Vec::new();
    walk(root, &mut old);
    for p in old.iter().filter(|p| managed(p)) {
        let rel = p.strip_prefix(root).unwrap_or(p);
        if !staged.join(rel).exists() {
            std::fs::remove_file(p)?;
        }
    }
    let mut new = Vec::new();
    walk(staged, &mut new);
    for p in new {
        let rel = p.strip_prefix(staged).unwrap_or(&p);
        let target = root.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = target.with_file_name(format!(
            ".{}.import",
            target.file_name().and_then(|n| n.to_str()).unwrap_or("f")
        ));
        std::fs::copy(&p, &tmp)?;
        std::fs::rename(&tmp, &target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_then_unpack_round_trips_and_hostile_archives_are_refused() {
        let src = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(src.path().join("listener/[80]")).expect("mkdir");
        std::fs::write(
            src.path().join("listener/[80]/tcp.yaml"),
            "connection: {}\n",
        )
        .expect("write");
        std::fs::write(src.path().join(".secret"), "x").expect("write");
        let tgz = export(src.path()).expect("export");
        let dst = tempfile::tempdir().expect("tmp");
        assert_eq!(unpack(&tgz, dst.path()).ok(), Some(1));
        assert_eq!(
            std::fs::read_to_string(dst.path().join("listener/[80]/tcp.yaml"))
                .ok()
                .as_deref(),
            Some("connection: {}\n")
        );
        assert!(
            !dst.path().join(".secret").exists(),
            "hidden files are not exported"
        );

        let mut evil = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_old_mut().name[..9].copy_from_slice(b"../escape");
        h.set_cksum();
        evil.append(&h, &b"x"[..]).expect("append");
        let evil = evil.into_inner().and_then(|g| g.finish()).expect("finish");
        assert!(matches!(
            unpack(&evil, dst.path()),
            Err(UnpackError::Escapes(_))
        ));
        assert!(!dst
            .path()
            .parent()
            .map(|p| p.join("escape").exists())
            .unwrap_or(false));
        assert!(unpack(b"not gzip", dst.path()).is_err());
    }
}
