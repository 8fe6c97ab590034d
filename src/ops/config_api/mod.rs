//! Vane's config-editing routes of the management API (ports and their flows, resolvers,
//! applications, nodes), fixed where 0.9.2 was wrong: files go where the loader reads them
//! (`listener/[PORT]/`, `resolver/`, `application/`), are written atomically (temp file and
//! rename), and the change is applied at once (a reload runs before the answer).

mod certs;
pub(crate) use certs::describe as describe_cert;
mod nodes;
mod plugins;
mod transfer;

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
use certs::certs_route;
use nodes::nodes_route;
use plugins::{plugin_info, plugins_route};
use transfer::{export, import};

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

/// How long an API call waits for the `config` actor's reload.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reloads now through the `config` actor (the config's one writer), so whatever the API
/// answers is already in force. Certificates are reloaded here as well: the certs registry
/// does it on the actor's notice, but after this answer.
pub async fn reload_applied(
    rt: &Runtime,
) -> Result<vane_actors::config::ReloadReport, vane_actors::config::ReloadError> {
    let report = rt.config_inbox.reload(RELOAD_TIMEOUT).await?;
    if report.changed.contains(&vane_actors::Name::Certs) {
        rt.reload_certs();
    }
    Ok(report)
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
                    .and_then(|t| {
                        crate::config::format::parse(fmt.unwrap_or(Format::Json), &t)
                            .map_err(|e| e.to_string())
                    });
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
                (&Method::POST, [proto]) if *proto == "tcp" || *proto == "udp" => {
                    // 0.9.2: an empty `tcp.toml`/`udp.toml` to fill in later (an empty file
                    // is no listener yet).
                    if listener_files(&dir, proto).next().is_some() {
                        return Some(err(StatusCode::CONFLICT, "already exists"));
                    }
                    let file = dir.join(format!("{proto}.toml"));
                    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, "")) {
                        Ok(()) => ok(
                            StatusCode::CREATED,
                            json!({"port": port, "protocol": proto, "created": true}),
                        ),
                        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    }
                }
                (&Method::DELETE, [proto]) if *proto == "tcp" || *proto == "udp" => {
                    let files: Vec<PathBuf> = listener_files(&dir, proto).collect();
                    if files.is_empty() {
                        return Some(err(StatusCode::NOT_FOUND, "not configured"));
                    }
                    for f in files {
                        let _ = std::fs::remove_file(f);
                    }
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

/// The files of a port's `proto` listener, in every format.
fn listener_files<'a>(dir: &'a Path, proto: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    EXTENSIONS
        .iter()
        .map(move |ext| dir.join(format!("{proto}.{ext}")))
        .filter(|p| p.is_file())
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

/// A hidden scratch directory next to `dir` (the watcher ignores hidden paths).
pub(super) fn tempdir_in(dir: &Path) -> std::io::Result<PathBuf> {
    let p = dir.join(format!(".upload-{}", crate::conn::uuid_v7()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
