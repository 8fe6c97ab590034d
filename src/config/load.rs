//! Loads a whole config dir into a [`Snapshot`], keeping the last good version of any entry
//! whose new file fails, and reports what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::error::{Problem, Problems};
use super::format::{self, Format};
use super::{
    acme, lazycert, legacy, nodes, plugins, AcceptProxy, Entry, Listener, ListenerDoc, ListenerKey,
    Proto, Snapshot,
};
use crate::flow::catalogue::Layer;
use crate::flow::template::Limits;
use crate::flow::validate::{self, Context};

/// The outcome of loading a dir.
#[derive(Debug, Default)]
pub struct Loaded {
    pub snapshot: Snapshot,
    /// Every problem, errors and warnings.
    pub problems: Vec<Problem>,
    /// Entries whose new file failed and whose last good version stays.
    pub kept: Vec<Kept>,
}

/// Which entry of the config dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    Plugins,
    Nodes,
    Acme,
    LazyCert,
    Listener(ListenerKey),
    Resolver(String),
    Application(String),
}

impl std::fmt::Display for What {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            What::Plugins => f.write_str("plugins.json"),
            What::Nodes => f.write_str("nodes"),
            What::Acme => f.write_str("acme"),
            What::LazyCert => f.write_str("lazycert"),
            What::Listener(k) => write!(f, "listener [{}] {}", k.port, k.proto.as_str()),
            What::Resolver(k) => write!(f, "resolver `{k}`"),
            What::Application(k) => write!(f, "application `{k}`"),
        }
    }
}

/// An entry kept at its last good version: which, the file it came from, and the new file
/// that failed (none when several formats of it conflict).
#[derive(Debug, Clone)]
pub struct Kept {
    pub what: What,
    pub file: String,
    pub failed: Option<String>,
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: keeping last known good version from {}",
            self.what, self.file
        )
    }
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.problems
            .iter()
            .any(|p| p.severity == super::error::Severity::Error)
    }
}

/// Candidate files of one key; more than one non-empty file is a conflict.
struct Candidates {
    files: Vec<PathBuf>,
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Groups the format files of a directory by stem (`tls.yaml` -> `tls`).
fn by_stem(dir: &Path) -> BTreeMap<String, Candidates> {
    let mut out: BTreeMap<String, Candidates> = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if hidden(&p) || !p.is_file() || Format::from_path(&p).is_none() {
            continue;
        }
        let Some(stem) = p.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        out.entry(stem.to_string())
            .or_insert(Candidates { files: Vec::new() })
            .files
            .push(p);
    }
    out
}

enum Pick {
    /// No usable file (absent, or all zero-length = deleted).
    None,
    One(PathBuf),
    Conflict(Vec<PathBuf>),
}

fn pick(c: &Candidates) -> Pick {
    let non_empty: Vec<PathBuf> = c
        .files
        .iter()
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(true))
        .cloned()
        .collect();
    match non_empty.len() {
        0 => Pick::None,
        1 => Pick::One(non_empty[0].clone()),
        _ => Pick::Conflict(non_empty),
    }
}

/// Reads and parses one file, reporting read and syntax errors against it.
fn read_doc(root: &Path, p: &Path, pr: &mut Problems) -> Option<Value> {
    let fmt = Format::from_path(p)?;
    let text = match std::fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) => {
            pr.error("", format!("cannot read: {e}"));
            return None;
        }
    };
    match format::parse(fmt, &text) {
        Ok(v) => Some(v),
        Err(e) => {
            pr.error("", format!("{:?} syntax error: {e}", fmt));
            let _ = root;
            None
        }
    }
}

/// Shared state of one load pass.
struct Pass<'a> {
    root: &'a Path,
    previous: Option<&'a Snapshot>,
    problems: Vec<Problem>,
    kept: Vec<Kept>,
    /// Reuse an unchanged entry's compiled form (off when external plugins changed).
    reuse: bool,
}

impl Pass<'_> {
    /// Loads one key from its candidates; on failure keeps `prev` (if any) and says so.
    fn entry<T, F>(
        &mut self,
        what: &What,
        cands: &Candidates,
        prev: Option<&Arc<Entry<T>>>,
        parse: F,
    ) -> Option<Arc<Entry<T>>>
    where
        F: FnOnce(&Value, &mut Problems) -> Option<T>,
    {
        let path = match pick(cands) {
            Pick::None => return None,
            Pick::One(p) => p,
            Pick::Conflict(files) => {
                let names: Vec<String> = files.iter().map(|f| rel(self.root, f)).collect();
                let mut pr = Problems::for_file(names[0].clone());
                pr.error(
                    "",
                    format!(
                        "{what} is defined in several formats ({}); none of them is loaded",
                        names.join(", ")
                    ),
                );
                self.problems.extend(pr.list);
                return self.keep(what, None, prev);
            }
        };
        let file = rel(self.root, &path);
        let mut pr = Problems::for_file(file.clone());
        let parsed = read_doc(self.root, &path, &mut pr).and_then(|v| {
            // Identical to the running version: reuse it (nothing restarts).
            if let Some(p) = prev.filter(|_| self.reuse) {
                if p.source == v && p.file == file {
                    return Some(Ok(Arc::clone(p)));
                }
            }
            let doc = parse(&v, &mut pr)?;
            Some(Err((v, doc)))
        });
        let failed = pr.has_errors();
        self.problems.extend(pr.list);
        match parsed {
            Some(Ok(same)) => Some(same),
            Some(Err((source, doc))) if !failed => Some(Arc::new(Entry { file, source, doc })),
            _ => self.keep(what, Some(file), prev),
        }
    }

    fn keep<T>(
        &mut self,
        what: &What,
        failed: Option<String>,
        prev: Option<&Arc<Entry<T>>>,
    ) -> Option<Arc<Entry<T>>> {
        let p = prev?;
        self.kept.push(Kept {
            what: what.clone(),
            file: p.file.clone(),
            failed,
        });
        Some(Arc::clone(p))
    }
}

fn flow_parser<'a>(
    root_key: &'a str,
    layer: Layer,
    protocol: &'a str,
    plugins: &'a plugins::ExternalPlugins,
) -> impl FnOnce(&Value, &mut Problems) -> Option<crate::flow::step::Flow> + 'a {
    move |v, pr| {
        let cx = Context {
            layer,
            protocol,
            plugins,
            limits: Limits::from_settings(),
        };
        validate::compile(v, root_key, &cx, pr)
    }
}

/// Loads the dir at `root`. With `previous`, failed entries keep their last good version.
pub fn load(root: &Path, previous: Option<&Snapshot>) -> Loaded {
    let mut pass = Pass {
        root,
        previous,
        problems: Vec::new(),
        kept: Vec::new(),
        reuse: true,
    };
    let mut snap = Snapshot {
        generation: previous.map_or(1, |p| p.generation + 1),
        ..Default::default()
    };

    // External plugins first: flows that name them must validate against them.
    let plugins_path = root.join("plugins.json");
    snap.plugins = if plugins_path.is_file() {
        let cands = Candidates {
            files: vec![plugins_path],
        };
        let prev = pass.previous.map(|p| &p.plugins);
        pass.entry(&What::Plugins, &cands, prev, |v, pr| {
            Some(plugins::parse(v, pr))
        })
        .unwrap_or_default()
    } else {
        Arc::default()
    };

    pass.reuse = previous.is_some_and(|p| p.plugins.source == snap.plugins.source);
    let root_stems = by_stem(root);
    snap.nodes = match root_stems.get("nodes") {
        Some(c) => {
            let prev = pass.previous.map(|p| &p.nodes);
            pass.entry(&What::Nodes, c, prev, nodes::parse)
                .unwrap_or_default()
        }
        None => Arc::default(),
    };
    snap.acme = match root_stems.get("acme") {
        Some(c) => {
            let prev = pass.previous.map(|p| &p.acme);
            pass.entry(&What::Acme, c, prev, |v, pr| acme::parse(v, root, pr))
                .unwrap_or_default()
        }
        None => Arc::default(),
    };

    snap.lazycert = match root_stems.get("lazycert") {
        Some(c) => {
            let prev = pass.previous.map(|p| &p.lazycert);
            pass.entry(&What::LazyCert, c, prev, |v, pr| {
                Some(lazycert::parse(v, pr))
            })
            .unwrap_or_default()
        }
        None => Arc::default(),
    };

    // 0.9.2 read only the singular directories; a plural one is a mistake worth saying.
    for (plural, singular) in [
        ("resolvers", "resolver"),
        ("applications", "application"),
        ("listeners", "listener"),
    ] {
        let has_files = std::fs::read_dir(root.join(plural)).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().starts_with('.')))
        });
        if has_files {
            pass.problems.push(Problem {
                file: format!("{plural}/"),
                at: String::new(),
                message: format!(
                    "not read: Vane reads `{singular}/` (singular); move these files there"
                ),
                severity: super::error::Severity::Warning,
            });
        }
    }

    let ext = Arc::clone(&snap.plugins);
    for (area, layer, root_key, is_app) in [
        ("resolver", Layer::L4Plus, "connection", false),
        ("application", Layer::L7, "pipeline", true),
    ] {
        for (key, cands) in by_stem(&root.join(area)) {
            let prev = pass.previous.and_then(|p| {
                if is_app {
                    p.applications.get(&key)
                } else {
                    p.resolvers.get(&key)
                }
            });
            let what = if is_app {
                What::Application(key.clone())
            } else {
                What::Resolver(key.clone())
            };
            if let Some(e) = pass.entry(
                &what,
                &cands,
                prev,
                flow_parser(root_key, layer, &key, &ext.doc),
            ) {
                if is_app {
                    snap.applications.insert(key, e);
                } else {
                    snap.resolvers.insert(key, e);
                }
            }
        }
    }

    let ldir = root.join("listener");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&ldir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    dirs.sort();
    for d in dirs {
        if hidden(&d) || !d.is_dir() {
            continue;
        }
        let Some(name) = d.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(key) = name
            .strip_prefix('[')
            .and_then(|r| r.split(']').next())
            .filter(|k| !k.is_empty())
        else {
            continue;
        };
        let Ok(port) = key.parse::<u16>() else {
            pass.problems.push(Problem {
                file: rel(root, &d),
                at: String::new(),
                message: format!("`{key}` is not a port; never bound"),
                severity: super::error::Severity::Warning,
            });
            continue;
        };
        let stems = by_stem(&d);
        for proto in [Proto::Tcp, Proto::Udp] {
            let Some(cands) = stems.get(proto.as_str()) else {
                continue;
            };
            let lk = ListenerKey { port, proto };
            let prev = pass.previous.and_then(|p| p.listeners.get(&lk));
            let what = What::Listener(lk);
            let ext = &ext.doc;
            let parsed = pass.entry(&what, cands, prev, |v, pr| {
                let mode = if v.get("connection").is_some() {
                    let cx = Context {
                        layer: Layer::L4,
                        protocol: proto.as_str(),
                        plugins: ext,
                        limits: Limits::from_settings(),
                    };
                    validate::compile(v, "connection", &cx, pr)
                        .map(|f| ListenerDoc::Flow(Box::new(f)))
                } else if v.get("protocols").is_some() {
                    legacy::parse(v, pr).map(ListenerDoc::Legacy)
                } else {
                    pr.error(
                        "",
                        "expected `connection:` (flow) or `protocols:` (legacy rules)",
                    );
                    None
                };
                let accept_proxy = accept_proxy(v.get("proxy_protocol"), proto, pr);
                let mode = mode?;
                let per_datagram = per_datagram(v.get("per_datagram"), proto, &mode, pr);
                Some(Listener {
                    mode,
                    accept_proxy,
                    per_datagram,
                })
            });
            if let Some(e) = parsed {
                snap.listeners.insert(lk, e);
            }
        }
    }
    snap.certs_stamp = crate::certs::fingerprint(root);
    snap.reads_http_head = (snap.resolvers.values())
        .chain(snap.applications.values())
        .any(|e| e.doc.reads_http_head);
    cross_checks(&snap, &mut pass.problems);
    Loaded {
        snapshot: snap,
        problems: pass.problems,
        kept: pass.kept,
    }
}

/// Parses a listener's `proxy_protocol` block.
fn accept_proxy(v: Option<&Value>, proto: Proto, pr: &mut Problems) -> Option<AcceptProxy> {
    let v = v?;
    if proto != Proto::Tcp {
        pr.error(
            "proxy_protocol",
            "only TCP listeners accept a PROXY protocol header",
        );
        return None;
    }
    let Some(list) = v.get("trusted").and_then(Value::as_array) else {
        pr.error(
            "proxy_protocol",
            "`trusted` must list the balancers' addresses or CIDRs",
        );
        return None;
    };
    let mut trusted = Vec::new();
    for (i, c) in list.iter().enumerate() {
        match c.as_str().and_then(crate::l4p::proxy_protocol::Cidr::parse) {
            Some(c) => trusted.push(c),
            None => pr.error(
                &format!("proxy_protocol.trusted.{i}"),
                format!("{c} is not an address or CIDR"),
            ),
        }
    }
    let required = match v.get("required") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            pr.error(
                "proxy_protocol.required",
                format!("expected boolean, got {other}"),
            );
            true
        }
    };
    Some(AcceptProxy { trusted, required })
}

/// Parses a UDP listener's `per_datagram` switch. Such a flow cannot hand its session to a
/// resolver: inspecting a QUIC handshake needs the session's datagrams together.
fn per_datagram(v: Option<&Value>, proto: Proto, mode: &ListenerDoc, pr: &mut Problems) -> bool {
    let on = match v {
        None => return false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            pr.error("per_datagram", format!("expected boolean, got {other}"));
            return false;
        }
    };
    if on && proto != Proto::Udp {
        pr.error(
            "per_datagram",
            "only UDP listeners run their flow per datagram",
        );
        return false;
    }
    if on {
        match mode {
            ListenerDoc::Flow(f) => {
                let mut ups = BTreeSet::new();
                collect_upgrades(&f.root, &mut ups);
                for (at, proto) in ups {
                    pr.error(&at, format!("a flow that runs per datagram cannot upgrade to `{proto}` (inspection needs the whole session)"));
                }
            }
            ListenerDoc::Legacy(rules) => {
                for r in &rules.rules {
                    if let super::legacy::Destination::Resolver(name) = &r.destination {
                        pr.error(&format!("protocols.{}.destination", r.name), format!("a listener that runs per datagram cannot hand sessions to the resolver `{name}`"));
                    }
                }
            }
        }
    }
    on
}

/// Problems that span files: upgrades to resolvers that do not exist.
fn cross_checks(snap: &Snapshot, problems: &mut Vec<Problem>) {
    for entry in snap.listeners.values() {
        if let ListenerDoc::Flow(f) = &entry.doc.mode {
            let mut ups = BTreeSet::new();
            collect_upgrades(&f.root, &mut ups);
            for (at, proto) in ups {
                if !snap.resolvers.contains_key(&proto) {
                    problems.push(Problem { file: entry.file.clone(), at, message: format!("no resolver `{proto}` is configured; connections taking this upgrade are closed"), severity: super::error::Severity::Warning });
                }
            }
        }
    }
}

fn collect_upgrades(step: &crate::flow::step::Step, out: &mut BTreeSet<(String, String)>) {
    use crate::flow::catalogue::Builtin;
    use crate::flow::step::{Input, PluginRef};
    if let PluginRef::Builtin(spec) = &step.plugin {
        if spec.kind == Builtin::Upgrade {
            if let Some(Input::Lit(Value::String(p))) = step.input("protocol") {
                out.insert((step.at.clone(), p.to_ascii_lowercase()));
            }
        }
    }
    for (_, s) in &step.output {
        collect_upgrades(s, out);
    }
}
