//! Vane's config-editing routes of the management API (ports and their flows, resolvers,
//! applications, nodes), fixed where 0.9.2 was wrong: files go where the loader reads them
//! (`listener/[PORT]/`, `resolver/`, `application/`), are written atomically (temp file and
//! rename), and the change is applied at once (a reload runs before the answer).

use std::path::{Path, PathBuf};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::http::{json as reply, Req, Resp};
use crate::config::error::{Problems, Severity};
use crate::config::format::{Format, EXTENSIONS};
use crate::config::Proto;
use crate::flow::catalogue::Layer;
use crate::flow::template::Limits;
use crate::flow::validate::{self, Context};
use crate::runtime::Runtime;

fn ok(status: StatusCode, data: Value) -> Resp {
    reply(status, &json!({"status": "success", "data": data}))
}

fn err(status: StatusCode, message: impl Into<String>) -> Resp {
    reply(
        status,
        &json!({"status": "error", "message": message.into()}),
    )
}

fn no_content() -> Resp {
    super::http::respond(StatusCode::NO_CONTENT, "text/plain", "")
}

/// A flow document the API edits: where it lives and how it validates.
struct Doc {
    dir: PathBuf,
    stem: String,
    root_key: &'static str,
    layer: Layer,
    protocol: String,
}

impl Doc {
    fn files(&self) -> Vec<PathBuf> {
        EXTENSIONS
            .iter()
            .map(|e| self.dir.join(format!("{}.{e}", self.stem)))
            .filter(|p| p.is_file())
            .collect()
    }
}

fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // A hidden temp name: the watcher ignores it, and the rename is atomic.
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

/// Reloads now and tells the owners, so whatever the API answers is already in force
/// (certificates included). `None` when the reload task itself failed.
pub async fn reload_applied(rt: &Runtime) -> Option<vane_actors::config::ReloadReport> {
    let store = rt.config.clone();
    let report = tokio::task::spawn_blocking(move || store.reload_now())
        .await
        .ok()?;
    if report.changed.iter().any(|o| o == "registries/certs") {
        rt.reload_certs();
    }
    vane_actors::config::notify_owners(&rt.actors, &report);
    Some(report)
}

async fn apply(rt: &Runtime) {
    let _ = reload_applied(rt).await;
}

fn validate_doc(
    rt: &Runtime,
    doc: &Doc,
    body: &Value,
) -> Result<(Vec<String>, Vec<String>), Vec<String>> {
    let snap = rt.config.load();
    let mut pr = Problems::for_file(
        doc.dir
            .join(format!("{}.json", doc.stem))
            .strip_prefix(rt.config.dir())
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    let cx = Context {
        layer: doc.layer,
        protocol: &doc.protocol,
        plugins: &snap.plugins.doc,
        limits: Limits::from_settings(),
    };
    let flow = validate::compile(body, doc.root_key, &cx, &mut pr);
    let errors: Vec<String> = pr
        .list
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    let warnings: Vec<String> = pr
        .list
        .iter()
        .filter(|p| p.severity == Severity::Warning)
        .map(ToString::to_string)
        .collect();
    match flow {
        Some(f) if errors.is_empty() => {
            let mut used = Vec::new();
            collect_plugins(&f.root, &mut used);
            Ok((used, warnings))
        }
        _ => Err(errors),
    }
}

fn collect_plugins(step: &crate::flow::step::Step, out: &mut Vec<String>) {
    if !out.contains(&step.name) {
        out.push(step.name.clone());
    }
    for (_, s) in &step.output {
        collect_plugins(s, out);
    }
}

async fn doc_route(rt: &Runtime, req: &Req, doc: Doc, tail: &str) -> Resp {
    let files = doc.files();
    let body = || serde_json::from_slice::<Value>(&req.body);
    match (&req.method, tail) {
        (&Method::GET, "") => match files.as_slice() {
            [] => err(StatusCode::NOT_FOUND, "not configured"),
            [one] => {
                let fmt = Format::from_path(one);
                let parsed = std::fs::read_to_string(one)
                    .map_err(|e| e.to_string())
                    .and_then(|t| crate::config::format::parse(fmt.unwrap_or(Format::Json), &t));
                match parsed {
                    Ok(content) => ok(
                        StatusCode::OK,
                        json!({"source_format": one.extension().and_then(|e| e.to_str()), "content": content}),
                    ),
                    Err(e) => err(StatusCode::UNPROCESSABLE_ENTITY, e),
                }
            }
            _ => err(StatusCode::CONFLICT, "defined in several formats"),
        },
        (&Method::POST, "validate") => match body() {
            Ok(v) => match validate_doc(rt, &doc, &v) {
                Ok((used, warnings)) => ok(
                    StatusCode::OK,
                    json!({"valid": true, "plugins_used": used, "warnings": warnings}),
                ),
                Err(errors) => err(
                    StatusCode::BAD_REQUEST,
                    format!("Validation failed: {}", errors.join("; ")),
                ),
            },
            Err(e) => err(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
        },
        (&Method::POST, "") | (&Method::PUT, "") => {
            let creating = req.method == Method::POST;
            if creating && !files.is_empty() {
                return err(StatusCode::CONFLICT, "already exists");
            }
            let v = match body() {
                Ok(v) => v,
                Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
            };
            if let Err(errors) = validate_doc(rt, &doc, &v) {
                return err(
                    StatusCode::BAD_REQUEST,
                    format!("Validation failed: {}", errors.join("; ")),
                );
            }
            let target = doc.dir.join(format!("{}.json", doc.stem));
            let rel = target
                .strip_prefix(rt.config.dir())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            if req.query.contains("validate_only=true") {
                return ok(StatusCode::OK, json!({"written_to": "(dry run)"}));
            }
            let pretty = serde_json::to_vec_pretty(&v).unwrap_or_default();
            for f in files.iter().filter(|f| **f != target) {
                let _ = std::fs::remove_file(f);
            }
            if let Err(e) = write_atomic(&target, &pretty) {
                return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            }
            apply(rt).await;
            let status = if creating {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            ok(status, json!({"written_to": rel}))
        }
        (&Method::DELETE, "") => {
            if files.is_empty() {
                return err(StatusCode::NOT_FOUND, "not configured");
            }
            for f in files {
                let _ = std::fs::remove_file(f);
            }
            apply(rt).await;
            no_content()
        }
        _ => err(StatusCode::NOT_FOUND, "no such route"),
    }
}

fn port_dir(rt: &Runtime, port: u16) -> PathBuf {
    rt.config.dir().join("listener").join(format!("[{port}]"))
}

/// Handles the config routes; `None` when the path is not one of them.
pub async fn route(rt: &Runtime, req: &Req) -> Option<Resp> {
    let path = req.path.trim_end_matches('/');
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Some(match parts.as_slice() {
        ["ports", port, rest @ ..] => {
            let Ok(port) = port.parse::<u16>() else {
                return Some(err(StatusCode::BAD_REQUEST, "not a port"));
            };
            if port == 0 {
                return Some(err(StatusCode::BAD_REQUEST, "port 0"));
            }
            let dir = port_dir(rt, port);
            match (&req.method, rest) {
                (&Method::GET, []) => {
                    let snap = rt.config.load();
                    let info = |p: Proto| {
                        let e = snap
                            .listeners
                            .get(&crate::config::ListenerKey { port, proto: p })?;
                        Some(
                            json!({"active": true, "source_format": Path::new(&e.file).extension().and_then(|x| x.to_str())}),
                        )
                    };
                    if !dir.is_dir() {
                        return Some(err(StatusCode::NOT_FOUND, "not configured"));
                    }
                    ok(
                        StatusCode::OK,
                        json!({"port": port, "tcp": info(Proto::Tcp), "udp": info(Proto::Udp)}),
                    )
                }
                (&Method::POST, []) => {
                    if dir.exists() {
                        return Some(err(StatusCode::CONFLICT, "already exists"));
                    }
                    match std::fs::create_dir_all(&dir) {
                        Ok(()) => ok(StatusCode::CREATED, json!({"port": port, "created": true})),
                        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    }
                }
                (&Method::DELETE, []) => {
                    if !dir.is_dir() {
                        return Some(err(StatusCode::NOT_FOUND, "not configured"));
                    }
                    let _ = std::fs::remove_dir_all(&dir);
                    apply(rt).await;
                    no_content()
                }
                (_, [proto, "flow", tail @ ..]) if *proto == "tcp" || *proto == "udp" => {
                    let doc = Doc {
                        dir,
                        stem: proto.to_string(),
                        root_key: "connection",
                        layer: Layer::L4,
                        protocol: proto.to_string(),
                    };
                    doc_route(rt, req, doc, tail.first().copied().unwrap_or("")).await
                }
                _ => err(StatusCode::NOT_FOUND, "no such route"),
            }
        }
        [area @ ("resolvers" | "applications")] if req.method == Method::GET => {
            let snap = rt.config.load();
            let names: Vec<&String> = if *area == "resolvers" {
                snap.resolvers.keys().collect()
            } else {
                snap.applications.keys().collect()
            };
            ok(StatusCode::OK, json!(names))
        }
        [area @ ("resolvers" | "applications"), name, tail @ ..] => {
            if name.is_empty() || name.starts_with('.') || name.contains("..") {
                return Some(err(StatusCode::BAD_REQUEST, "bad name"));
            }
            let (dir, resolver) = area_dir(rt, area);
            let doc = Doc {
                dir,
                stem: name.to_string(),
                root_key: if resolver { "connection" } else { "pipeline" },
                layer: if resolver { Layer::L4Plus } else { Layer::L7 },
                protocol: name.to_string(),
            };
            doc_route(rt, req, doc, tail.first().copied().unwrap_or("")).await
        }
        ["nodes", rest @ ..] => nodes_route(rt, req, rest.first().copied()).await,
        ["plugins", name] if req.method == Method::GET => plugin_info(rt, name),
        ["plugins", name] => plugins_route(rt, req, name).await,
        ["certs", id] => certs_route(rt, req, id).await,
        ["config", "export"] if req.method == Method::GET => export(rt),
        ["config", "import"] if req.method == Method::POST => import(rt, req).await,
        _ => return None,
    })
}

/// The nodes registry: read `nodes.*`, edit one node, rewrite it as `nodes.json`.
async fn nodes_route(rt: &Runtime, req: &Req, name: Option<&str>) -> Resp {
    let root = rt.config.dir().to_path_buf();
    let files: Vec<PathBuf> = EXTENSIONS
        .iter()
        .map(|e| root.join(format!("nodes.{e}")))
        .filter(|p| std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false))
        .collect();
    let current: Vec<Value> = match files.as_slice() {
        [] => Vec::new(),
        [one] => {
            let fmt = Format::from_path(one).unwrap_or(Format::Json);
            match std::fs::read_to_string(one)
                .map_err(|e| e.to_string())
                .and_then(|t| crate::config::format::parse(fmt, &t))
            {
                Ok(v) => v
                    .get("nodes")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                Err(e) => return err(StatusCode::UNPROCESSABLE_ENTITY, e),
            }
        }
        _ => return err(StatusCode::CONFLICT, "nodes are defined in several formats"),
    };
    let source_format = files
        .first()
        .and_then(|f| f.extension())
        .and_then(|e| e.to_str())
        .unwrap_or("none")
        .to_string();
    let find = |n: &str| {
        current
            .iter()
            .position(|x| x.get("name").and_then(Value::as_str) == Some(n))
    };
    let mut next = current.clone();
    let (status, answer) = match (&req.method, name) {
        (&Method::GET, None) => {
            return ok(
                StatusCode::OK,
                json!({"source_format": source_format, "nodes": current}),
            )
        }
        (&Method::GET, Some(n)) => {
            return find(n).map_or_else(
                || err(StatusCode::NOT_FOUND, "no such node"),
                |i| ok(StatusCode::OK, current[i].clone()),
            )
        }
        (&Method::POST, None) => {
            let Ok(node) = serde_json::from_slice::<Value>(&req.body) else {
                return err(StatusCode::BAD_REQUEST, "invalid JSON");
            };
            let Some(n) = node.get("name").and_then(Value::as_str).map(str::to_string) else {
                return err(StatusCode::BAD_REQUEST, "a node needs a `name`");
            };
            if find(&n).is_some() {
                return err(StatusCode::CONFLICT, "node exists");
            }
            next.push(node);
            (StatusCode::CREATED, json!({"name": n}))
        }
        (&Method::PUT, Some(n)) => {
            let Ok(node) = serde_json::from_slice::<Value>(&req.body) else {
                return err(StatusCode::BAD_REQUEST, "invalid JSON");
            };
            if node.get("name").and_then(Value::as_str) != Some(n) {
                return err(
                    StatusCode::BAD_REQUEST,
                    "the body's name must match the path",
                );
            }
            let Some(i) = find(n) else {
                return err(StatusCode::NOT_FOUND, "no such node");
            };
            next[i] = node;
            (StatusCode::OK, json!({"name": n}))
        }
        (&Method::DELETE, Some(n)) => {
            let Some(i) = find(n) else {
                return err(StatusCode::NOT_FOUND, "no such node");
            };
            next.remove(i);
            (StatusCode::NO_CONTENT, Value::Null)
        }
        _ => return err(StatusCode::NOT_FOUND, "no such route"),
    };
    let doc = json!({"nodes": next});
    let mut pr = Problems::for_file("nodes.json");
    if crate::config::nodes::parse(&doc, &mut pr).is_none() {
        let problems: Vec<String> = pr.list.iter().map(ToString::to_string).collect();
        return err(
            StatusCode::BAD_REQUEST,
            format!("Validation failed: {}", problems.join("; ")),
        );
    }
    let target = root.join("nodes.json");
    for f in files.iter().filter(|f| **f != target) {
        let _ = std::fs::remove_file(f);
    }
    if let Err(e) = write_atomic(
        &target,
        &serde_json::to_vec_pretty(&doc).unwrap_or_default(),
    ) {
        return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    apply(rt).await;
    if status == StatusCode::NO_CONTENT {
        no_content()
    } else {
        ok(status, answer)
    }
}

fn area_dir(rt: &Runtime, area: &str) -> (PathBuf, bool) {
    let resolver = area == "resolvers";
    (
        rt.config
            .dir()
            .join(if resolver { "resolver" } else { "application" }),
        resolver,
    )
}

/// Registers, replaces or removes an external plugin in `plugins.json` (then reloads, so a
/// deleted plugin is really gone, unlike 0.9.2).
async fn plugins_route(rt: &Runtime, req: &Req, name: &str) -> Resp {
    let path = rt.config.dir().join("plugins.json");
    let mut all: serde_json::Map<String, Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let exists = all.contains_key(name);
    let (status, answer) = match req.method {
        Method::POST | Method::PUT => {
            if crate::flow::catalogue::builtin(name).is_some() {
                return err(StatusCode::BAD_REQUEST, "that is a built-in plugin name");
            }
            match (&req.method, exists) {
                (&Method::POST, true) => return err(StatusCode::CONFLICT, "plugin exists"),
                (&Method::PUT, false) => return err(StatusCode::NOT_FOUND, "no such plugin"),
                _ => {}
            }
            let decl: crate::config::plugins::ExternalPlugin =
                match serde_json::from_slice(&req.body) {
                    Ok(d) => d,
                    Err(e) => {
                        return err(StatusCode::BAD_REQUEST, format!("invalid declaration: {e}"))
                    }
                };
            if decl.name != name {
                return err(
                    StatusCode::BAD_REQUEST,
                    "the declaration's name must match the path",
                );
            }
            if decl.role != "middleware" {
                return err(
                    StatusCode::BAD_REQUEST,
                    "External plugins cannot be Terminators.",
                );
            }
            if let Err(e) = check_reachable(rt, &decl).await {
                return err(StatusCode::BAD_REQUEST, e);
            }
            all.insert(
                name.to_string(),
                serde_json::from_slice(&req.body).unwrap_or_default(),
            );
            if req.method == Method::POST {
                (
                    StatusCode::CREATED,
                    json!({"status": "created", "name": name}),
                )
            } else {
                (StatusCode::OK, json!({"status": "updated", "name": name}))
            }
        }
        Method::DELETE => {
            if !exists {
                return err(StatusCode::NOT_FOUND, "no such plugin");
            }
            let users = flows_using(rt, name);
            if !users.is_empty() {
                return err(
                    StatusCode::CONFLICT,
                    format!("still used by {}", users.join(", ")),
                );
            }
            all.remove(name);
            (StatusCode::OK, json!({"status": "deleted"}))
        }
        _ => return err(StatusCode::NOT_FOUND, "no such route"),
    };
    if let Err(e) = write_atomic(
        &path,
        &serde_json::to_vec_pretty(&Value::Object(all)).unwrap_or_default(),
    ) {
        return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    apply(rt).await;
    ok(status, answer)
}

/// The connectivity check of a registration (`SKIP_VALIDATE_CONNECTIVITY` skips http/unix).
async fn check_reachable(
    rt: &Runtime,
    p: &crate::config::plugins::ExternalPlugin,
) -> Result<(), String> {
    use crate::config::plugins::Driver;
    let skip = [
        "SKIP_VALIDATE_CONNECTIVITY",
        "SKIP_EXTERNAL_PLUGIN_VALIDATION",
    ]
    .iter()
    .any(|k| crate::settings::var(k).is_some_and(|v| v.eq_ignore_ascii_case("true")));
    match &p.driver {
        Driver::Command { program, .. } => {
            crate::plugins::external::trusted_program(&rt.config.dir().join("bin"), program)
                .map(|_| ())
        }
        _ if skip => Ok(()),
        Driver::Unix { path } => {
            if Path::new(path).exists() {
                Ok(())
            } else {
                Err(format!("socket {path} does not exist"))
            }
        }
        Driver::Http { url } => tokio::time::timeout(
            std::time::Duration::from_secs(3),
            crate::plugins::external::probe_http(url),
        )
        .await
        .map_err(|_| format!("{url}: no answer within 3 s"))?,
    }
}

/// Files whose loaded flows name `plugin`.
fn flows_using(rt: &Runtime, plugin: &str) -> Vec<String> {
    fn uses(step: &crate::flow::step::Step, plugin: &str) -> bool {
        step.name == plugin || step.output.iter().any(|(_, s)| uses(s, plugin))
    }
    let snap = rt.config.load();
    let mut out = Vec::new();
    for e in snap.listeners.values() {
        if let crate::config::ListenerDoc::Flow(f) = &e.doc.mode {
            if uses(&f.root, plugin) {
                out.push(e.file.clone());
            }
        }
    }
    for e in snap.resolvers.values().chain(snap.applications.values()) {
        if uses(&e.doc.root, plugin) {
            out.push(e.file.clone());
        }
    }
    out
}

/// One certificate: inspect, upload (`{cert_pem, key_pem}`, checked before anything is written)
/// or delete (`default` cannot be deleted).
async fn certs_route(rt: &Runtime, req: &Req, id: &str) -> Resp {
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
            no_content()
        }
        _ => err(StatusCode::NOT_FOUND, "no such route"),
    }
}

/// A hidden scratch directory next to `dir` (the watcher ignores hidden paths).
fn tempdir_in(dir: &Path) -> std::io::Result<PathBuf> {
    let p = dir.join(format!(".upload-{}", crate::l4::session::uuid_v7()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

fn export(rt: &Runtime) -> Resp {
    match super::archive::export(rt.config.dir()) {
        Ok(tgz) => {
            let mut r = super::http::respond(StatusCode::OK, "application/gzip", tgz);
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

async fn import(rt: &Runtime, req: &Req) -> Resp {
    let Some(archive) = archive_bytes(req) else {
        return err(StatusCode::BAD_REQUEST, "no `file` field in the form");
    };
    let root = rt.config.dir().to_path_buf();
    let stage = root.join(format!(".import-{}", crate::l4::session::uuid_v7()));
    let result = (|| -> Result<usize, (StatusCode, String)> {
        let files =
            super::archive::unpack(archive, &stage).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
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
        super::archive::replace(&root, &stage)
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

/// `GET /plugins/{name}`: a built-in's catalogue entry, or an external plugin's declaration.
fn plugin_info(rt: &Runtime, name: &str) -> Resp {
    if let Some(spec) = crate::flow::catalogue::builtin(name) {
        let params: Vec<Value> = spec
            .params
            .iter()
            .map(|p| json!({"name": p.name, "required": p.required, "param_type": p.ty.name()}))
            .collect();
        let layers: Vec<&str> = spec.layers.iter().map(|l| l.as_str()).collect();
        return ok(
            StatusCode::OK,
            json!({"name": spec.name, "type": "internal", "role": format!("{:?}", spec.role).to_lowercase(), "params": params, "branches": spec.branches, "layers": layers, "supported_protocols": spec.protocols}),
        );
    }
    match rt.config.load().plugins.doc.get(name) {
        Some(p) => {
            let params: Vec<Value> = p
                .params
                .iter()
                .map(|x| json!({"name": x.name, "required": x.required, "param_type": "string"}))
                .collect();
            ok(
                StatusCode::OK,
                json!({"name": p.name, "type": "external", "role": p.role, "params": params, "branches": p.branches()}),
            )
        }
        None => err(StatusCode::NOT_FOUND, "no such plugin"),
    }
}
