//! `vane convert`: a config dir written out again in another format (what Caddy's `adapt`
//! does for its formats, here between TOML, YAML, JSON and RON). Every config document
//! (listeners, resolvers, applications, nodes, other documents at the root) is parsed,
//! written in the new format and read back to check it means the same; everything else
//! (`plugins.json`, which is JSON by definition, certificates, `bin/`) is copied as it is.
//! Nothing is written unless every document converts.

use std::path::{Path, PathBuf};

use super::format::{self, Format};

/// What a conversion did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Converted {
    pub documents: usize,
    pub copied: usize,
}

/// Why a conversion did not happen: each problem names its file.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConvertError(pub Vec<String>);

enum Out {
    Text(String),
    Copy(PathBuf),
}

/// Whether `rel` (relative to the config dir) is a config document to convert.
fn is_document(rel: &Path) -> bool {
    let top = rel.components().next().and_then(|c| c.as_os_str().to_str());
    Format::from_path(rel).is_some()
        && !matches!(top, Some("certs" | "bin"))
        && rel != Path::new("plugins.json")
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_path_buf());
        }
    }
    Ok(())
}

/// Converts the config dir `src` into a new dir `dst` (which must not exist, or be empty).
pub fn convert(src: &Path, dst: &Path, to: Format) -> Result<Converted, ConvertError> {
    let fail = |m: String| ConvertError(vec![m]);
    if !src.is_dir() {
        return Err(fail(format!("{}: not a directory", src.display())));
    }
    if std::fs::read_dir(dst).is_ok_and(|mut d| d.next().is_some()) {
        return Err(fail(format!(
            "{}: exists and is not empty; choose a new directory",
            dst.display()
        )));
    }
    let mut files = Vec::new();
    walk(src, src, &mut files).map_err(|e| fail(format!("{}: {e}", src.display())))?;
    files.sort();
    let mut problems = Vec::new();
    let mut plan: Vec<(PathBuf, Out)> = Vec::new();
    let mut done = Converted::default();
    for rel in files {
        let path = src.join(&rel);
        let Some(from) = Format::from_path(&rel).filter(|_| is_document(&rel)) else {
            plan.push((rel, Out::Copy(path)));
            done.copied += 1;
            continue;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: {e}", rel.display()));
                continue;
            }
        };
        let converted = format::parse(from, &text)
            .map_err(format::RenderError::ReadBack)
            .and_then(|v| format::render(to, &v));
        let target = rel.with_extension(to.extension());
        match converted {
            Ok(_) if plan.iter().any(|(p, _)| *p == target) => problems.push(format!(
                "{}: another file already becomes {}",
                rel.display(),
                target.display()
            )),
            Ok(t) => {
                plan.push((target, Out::Text(t)));
                done.documents += 1;
            }
            Err(e) => problems.push(format!("{}: {e}", rel.display())),
        }
    }
    if !problems.is_empty() {
        return Err(ConvertError(problems));
    }
    for (rel, out) in plan {
        let path = dst.join(&rel);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| match out {
                Out::Text(t) => std::fs::write(&path, t),
                // `copy` keeps the permissions: command plugins in bin/ stay executable.
                Out::Copy(from) => std::fs::copy(from, &path).map(drop),
            });
        if let Err(e) = written {
            problems.push(format!("{}: {e}", path.display()));
        }
    }
    if problems.is_empty() {
        Ok(done)
    } else {
        Err(ConvertError(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_change_format_and_the_rest_is_copied() {
        let src = tempfile::tempdir().expect("src");
        let root = src.path();
        std::fs::create_dir_all(root.join("listener/[80]")).expect("mkdir");
        std::fs::create_dir_all(root.join("certs")).expect("mkdir");
        std::fs::write(
            root.join("listener/[80]/tcp.yaml"),
            "connection:\n  internal.transport.proxy:\n    input: { target.ip: 127.0.0.1, target.port: 9 }\n",
        )
        .expect("write");
        std::fs::write(root.join("plugins.json"), "{}\n").expect("write");
        std::fs::write(root.join("certs/a.json"), "not a document").expect("write");
        std::fs::write(root.join("nodes.yml"), "").expect("write");
        let dst = tempfile::tempdir().expect("dst");
        let out = dst.path().join("toml");
        let done = convert(root, &out, Format::Toml).expect("converts");
        assert_eq!(
            done,
            Converted {
                documents: 2,
                copied: 2
            }
        );
        let toml = std::fs::read_to_string(out.join("listener/[80]/tcp.toml")).expect("toml");
        let back = format::parse(Format::Toml, &toml).expect("parses");
        assert_eq!(
            back["connection"]["internal.transport.proxy"]["input"]["target.port"],
            9
        );
        assert!(out.join("plugins.json").exists() && out.join("certs/a.json").exists());
        assert!(out.join("nodes.toml").exists());
        // Not into a dir that has files.
        assert!(convert(root, &out, Format::Json).is_err());
    }

    #[test]
    fn a_document_the_format_cannot_hold_stops_everything_and_names_the_file() {
        let src = tempfile::tempdir().expect("src");
        std::fs::create_dir_all(src.path().join("resolver")).expect("mkdir");
        std::fs::write(
            src.path().join("resolver/tls.json"),
            r#"{"connection": null}"#,
        )
        .expect("write");
        let dst = tempfile::tempdir().expect("dst");
        let out = dst.path().join("out");
        let e = convert(src.path(), &out, Format::Toml).expect_err("TOML has no null");
        assert!(e.to_string().contains("resolver/tls.json"), "{e}");
        assert!(!out.exists(), "nothing written");
    }
}
