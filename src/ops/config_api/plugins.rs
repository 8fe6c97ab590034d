//! `/plugins/{name}`: external plugins in `plugins.json`, checked before they are saved.

use std::path::Path;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::{apply, err, ok, write_atomic};
use crate::ops::http::{Req, Resp};
use crate::plugins::external::PluginError;
use crate::runtime::Runtime;

/// Registers, replaces or removes an external plugin in `plugins.json` (then reloads, so a
/// deleted plugin is really gone, unlike 0.9.2).
pub(super) async fn plugins_route(rt: &Runtime, req: &Req, name: &str) -> Resp {
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
                return err(StatusCode::BAD_REQUEST, e.to_string());
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
) -> Result<(), PluginError> {
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
                Err(PluginError::Unreachable(format!(
                    "socket {path} does not exist"
                )))
            }
        }
        Driver::Http { .. } => rt.flow.plugins.check(p).await,
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

/// `GET /plugins/{name}`: a built-in's catalogue entry, or an external plugin's declaration.
pub(super) fn plugin_info(rt: &Runtime, name: &str) -> Resp {
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
                json!({"name": p.name, "type": "external", "role": p.role, "params": params, "branches": p.branches(), "healthy": rt.flow.plugins.healthy.get(&p.name).map(|h| *h)}),
            )
        }
        None => err(StatusCode::NOT_FOUND, "no such plugin"),
    }
}
