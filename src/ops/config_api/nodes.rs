//! `/nodes`: the nodes registry, edited one node at a time and rewritten as `nodes.json`.

use std::path::PathBuf;

use hyper::{Method, StatusCode};
use serde_json::{json, Value};

use super::{apply, err, no_content, ok, write_atomic};
use crate::config::error::Problems;
use crate::config::format::{Format, EXTENSIONS};
use crate::ops::http::{Req, Resp};
use crate::runtime::Runtime;

/// The nodes registry: read `nodes.*`, edit one node, rewrite it as `nodes.json`.
pub(super) async fn nodes_route(rt: &Runtime, req: &Req, name: Option<&str>) -> Resp {
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
                .and_then(|t| crate::config::format::parse(fmt, &t).map_err(|e| e.to_string()))
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
