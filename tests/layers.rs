//! The layer rule, read from the sources: a module of `src/` imports only modules of its own
//! layer or of layers below it, peers on one row (`l4 | l7`) never import each other, and the
//! sans-IO leaves import nothing above `settings`. The order is the one docs/architecture.md
//! names (its `layers` block is parsed here, so the page and the test cannot drift apart).
//! Also: `actors/` never depends on the vane crate, and no source file exceeds 30 KB.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The layer table: module -> (row, peer group within the row); and the leaves.
struct Layers {
    rank: HashMap<String, (usize, usize)>,
    leaves: Vec<String>,
}

impl Layers {
    /// Parses the block between `<!-- layers -->` and `<!-- /layers -->`: one row per line,
    /// bottom first, `N name name | name` (the `|` separates peers), and `leaves: a::b ...`.
    fn from_doc(text: &str) -> Layers {
        let start = text
            .find("<!-- layers -->")
            .expect("docs/architecture.md has a layers block");
        let end = text
            .find("<!-- /layers -->")
            .expect("the layers block is closed");
        let mut rank = HashMap::new();
        let mut leaves = Vec::new();
        for line in text[start..end].lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("leaves:") {
                leaves.extend(rest.split_whitespace().map(str::to_string));
                continue;
            }
            let mut words = line.splitn(2, ' ');
            let Some(row) = words.next().and_then(|w| w.parse::<usize>().ok()) else {
                continue;
            };
            for (group, peers) in words.next().unwrap_or("").split('|').enumerate() {
                for m in peers.split_whitespace() {
                    assert!(
                        rank.insert(m.to_string(), (row, group)).is_none(),
                        "{m} is named twice in the layers block"
                    );
                }
            }
        }
        assert!(rank.len() > 5, "the layers block names the modules");
        Layers { rank, leaves }
    }

    fn leaf_of(&self, path: &[String]) -> Option<&str> {
        let joined = path.join("::");
        self.leaves
            .iter()
            .find(|l| joined == **l || joined.starts_with(&format!("{l}::")))
            .map(String::as_str)
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments (imports named in doc comments do not count).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Splits a `{a, b::{c, d}}` group (without its braces) at top-level commas.
fn split_group(s: &str) -> Vec<&str> {
    let (mut depth, mut last, mut out) = (0, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[last..i].trim());
                last = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[last..].trim());
    out.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Expands a path that may end in a group: `l4p::{route, quic::packet}` -> both paths.
fn expand(prefix: Vec<String>, rest: &str, out: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    let mut s = rest;
    loop {
        if let Some(inner) = s.strip_prefix('{') {
            let close = matching_brace(inner);
            for part in split_group(&inner[..close]) {
                expand(path.clone(), part, out);
            }
            return;
        }
        let (id, tail) = ident_at(s);
        if id.is_empty() {
            break;
        }
        path.push(id.to_string());
        match tail.strip_prefix("::") {
            Some(t) => s = t,
            None => break,
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

/// Every `crate::...` path a source names (first two segments are what the rule needs).
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let code = code(text);
    let mut out = Vec::new();
    let mut s = code.as_str();
    while let Some(i) = s.find("crate::") {
        let before = s[..i].chars().last();
        s = &s[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue; // `vane_crate::` and the like
        }
        expand(Vec::new(), s, &mut out);
    }
    out
}

/// The top-level module a file of `src/` belongs to, and its path below it.
fn module_of(src: &Path, file: &Path) -> (String, Vec<String>) {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    let top = parts.remove(0);
    (top, parts)
}

fn violations(layers: &Layers, src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut problems = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        let (top, below) = module_of(src, &file);
        let Some(&(row, group)) = layers.rank.get(&top) else {
            problems.insert(format!(
                "{top}: not in the layers block of docs/architecture.md"
            ));
            continue;
        };
        let mut own = vec![top.clone()];
        own.extend(below);
        let own_leaf = layers.leaf_of(&own);
        for path in crate_paths(&text) {
            let target = &path[0];
            if *target == top {
                continue;
            }
            let Some(&(t_row, t_group)) = layers.rank.get(target) else {
                problems.insert(format!(
                    "{}: names unknown module `{target}`",
                    file.display()
                ));
                continue;
            };
            if let Some(leaf) = own_leaf {
                // A leaf stands on nothing but settings and other leaves.
                if t_row > 0 && layers.leaf_of(&path).is_none() {
                    problems.insert(format!(
                        "{}: leaf `{leaf}` imports `{}`",
                        file.display(),
                        path.join("::")
                    ));
                }
                continue;
            }
            if layers.leaf_of(&path).is_some() {
                continue;
            }
            if t_row > row || (t_row == row && t_group != group) {
                problems.insert(format!(
                    "{}: `{top}` (layer {row}) imports `{}` (layer {t_row}{})",
                    file.display(),
                    path.join("::"),
                    if t_row == row {
                        ", a peer"
                    } else {
                        ", above it"
                    }
                ));
            }
        }
    }
    problems.into_iter().collect()
}

fn architecture() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md")).expect("read docs")
}

#[test]
fn no_layer_imports_one_above_it() {
    let layers = Layers::from_doc(&architecture());
    let problems = violations(&layers, &Path::new(ROOT).join("src"));
    assert!(
        problems.is_empty(),
        "layer rule broken:\n{}",
        problems.join("\n")
    );
}

/// The explicit rules, checked on top of the table (so a table edit cannot quietly
/// allow them).
#[test]
fn named_rules_hold() {
    let layers = Layers::from_doc(&architecture());
    let r = |m: &str| {
        layers
            .rank
            .get(m)
            .copied()
            .unwrap_or_else(|| panic!("{m} has a layer"))
    };
    for low in ["flow", "plugins", "l4p", "upstream", "config", "certs"] {
        for high in ["runtime", "l4", "l7", "ops"] {
            assert!(r(low).0 < r(high).0, "{low} must sit below {high}");
        }
    }
    assert!(r("l4p").0 < r("l4").0 && r("l4p").0 < r("l7").0);
    let (l4, l7) = (r("l4"), r("l7"));
    assert!(
        l4.0 < l7.0 || (l4.0 == l7.0 && l4.1 != l7.1),
        "l7 never imports l4's sessions"
    );
}

#[test]
fn the_checker_catches_an_upward_import() {
    let layers = Layers::from_doc(&architecture());
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("flow")).expect("mkdir");
    std::fs::create_dir_all(src.join("l7")).expect("mkdir");
    std::fs::create_dir_all(src.join("l4p/quic")).expect("mkdir");
    std::fs::write(src.join("flow/exec.rs"), "use crate::runtime::Runtime;\n").expect("write");
    std::fs::write(
        src.join("l7/server.rs"),
        "use crate::{conn::Conn, l4::{session::Conn2}};\n",
    )
    .expect("write");
    std::fs::write(
        src.join("l4p/quic/packet.rs"),
        "fn f() { crate::flow::kv::Kv::new(); }\n",
    )
    .expect("write");
    std::fs::write(
        src.join("l4p/route.rs"),
        "// use crate::l4::L4;\nuse crate::conn::Conn;\n",
    )
    .expect("write");
    let found = violations(&layers, src);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found
        .iter()
        .any(|p| p.contains("`flow`") && p.contains("runtime::Runtime")));
    assert!(found
        .iter()
        .any(|p| p.contains("`l7`") && p.contains("l4::session::Conn2")));
    assert!(found
        .iter()
        .any(|p| p.contains("leaf `l4p::quic`") && p.contains("flow::kv")));
}

#[test]
fn actors_know_nothing_of_the_data_plane() {
    let actors = Path::new(ROOT).join("actors");
    let manifest = std::fs::read_to_string(actors.join("Cargo.toml")).expect("manifest");
    for line in manifest.lines() {
        let name = line.split(['=', ' ', '.']).next().unwrap_or("");
        assert_ne!(name, "vane", "actors/Cargo.toml depends on vane: {line}");
        assert!(
            !line.contains("path = \"..\""),
            "actors depends on the root package: {line}"
        );
    }
    let mut files = Vec::new();
    rust_files(&actors.join("src"), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let text = code(&std::fs::read_to_string(&f).expect("read"));
        assert!(
            !text.contains("vane::"),
            "{} names the vane crate",
            f.display()
        );
    }
}

#[test]
fn no_source_file_over_30_kb() {
    let mut files = Vec::new();
    for d in ["src", "actors/src", "tests", "chaos", "bench", "fuzz"] {
        rust_files(&Path::new(ROOT).join(d), &mut files);
    }
    assert!(files.len() > 50);
    let big: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::metadata(f).ok()?.len();
            (n > 30 * 1024).then(|| format!("{} ({n} bytes)", f.display()))
        })
        .collect();
    assert!(big.is_empty(), "files over 30 KB:\n{}", big.join("\n"));
}

/// Errors are typed where they are decided: no function of `src/` returns a bare `String` as
/// its error (behaviour must never depend on an error's text).
#[test]
fn no_error_is_a_plain_string() {
    let mut files = Vec::new();
    rust_files(&Path::new(ROOT).join("src"), &mut files);
    let mut found = Vec::new();
    for f in files {
        let text = code(&std::fs::read_to_string(&f).expect("read"));
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut rest = flat.as_str();
        while let Some(i) = rest.find("-> Result<") {
            rest = &rest[i + "-> Result<".len()..];
            let sig = &rest[..rest
                .find('{')
                .or_else(|| rest.find(';'))
                .unwrap_or(rest.len())];
            if sig.trim_end().ends_with(", String>") {
                found.push(format!("{}: -> Result<{sig}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "String errors:\n{}", found.join("\n"));
}
