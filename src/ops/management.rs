//! The management API on `PORT` (enabled by `ACCESS_TOKEN`): health, status, the actor tree,
//! reload, and (with `CHAOS_ENDPOINTS=true`) fault injection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;
use vane_actors::control::Control;
use vane_actors::service::{AbortOnDrop, Guard, Service, StartFuture};

use super::http::{self, json as reply, Req, Resp};
use crate::l4::L4;

pub struct Management {
    /// The L4 layer (for its limits and chaos hooks), over the shared runtime.
    pub rt: Arc<L4>,
    pub token: String,
}

impl Service for Management {
    fn start(&self) -> StartFuture {
        let rt = self.rt.clone();
        let token = self.token.clone();
        Box::pin(async move {
            let addr = SocketAddr::new(rt.settings.console_listen, rt.settings.mgmt_port);
            let (l, held) = rt
                .listen_named("management", addr)
                .await
                .map_err(|e| format!("management API cannot bind {addr}: {e}"))?;
            tracing::info!("✓ Management console listening on http://{addr}");
            let (rt2, token2) = (rt.clone(), token.clone());
            let handler = Arc::new(move |req: Req| handle(rt2.clone(), token2.clone(), req));
            let tcp = AbortOnDrop(tokio::spawn(http::serve(l, handler.clone())));
            let unix = unix_console(&rt.settings.socket_dir, handler);
            Ok(Guard::new((tcp, unix, held)))
        })
    }
}

/// The console socket's accept loop; stopping it (shutdown, or a restart of the service)
/// removes the socket file, so nothing stale is left behind.
struct UnixConsole {
    _task: AbortOnDrop,
    path: std::path::PathBuf,
    /// The inode of the socket file this process made.
    ino: Option<u64>,
}

impl Drop for UnixConsole {
    fn drop(&mut self) {
        // Only our own socket file: after a hitless upgrade the path holds the new process's.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ours = std::fs::metadata(&self.path).is_ok_and(|m| Some(m.ino()) == self.ino);
            if !ours {
                return;
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The same API on `SOCKET_DIR/console.sock`; a stale socket file is replaced.
#[cfg(unix)]
fn unix_console<H, F>(dir: &std::path::Path, handler: Arc<H>) -> Option<UnixConsole>
where
    H: Fn(Req) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Resp> + Send + 'static,
{
    let path = dir.join("console.sock");
    let bound = std::fs::create_dir_all(dir)
        .and_then(|_| match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .and_then(|_| tokio::net::UnixListener::bind(&path));
    match bound {
        Ok(l) => {
            tracing::info!("✓ Management console listening on unix:{}", path.display());
            use std::os::unix::fs::MetadataExt;
            Some(UnixConsole {
                _task: AbortOnDrop(tokio::spawn(http::serve(l, handler))),
                ino: std::fs::metadata(&path).ok().map(|m| m.ino()),
                path,
            })
        }
        Err(e) => {
            tracing::warn!(
                "management console socket {} unavailable: {e}",
                path.display()
            );
            None
        }
    }
}

#[cfg(not(unix))]
fn unix_console<H>(_dir: &std::path::Path, _handler: Arc<H>) -> Option<UnixConsole> {
    None
}

/// The current time as RFC 3339 UTC (`2026-12-02T11:45:00Z`).
fn utc_now() -> String {
    http::rfc3339(std::time::SystemTime::now())
}

fn ok(data: serde_json::Value) -> Resp {
    reply(StatusCode::OK, &json!({"status": "success", "data": data}))
}

fn err(status: StatusCode, message: &str) -> Resp {
    reply(status, &json!({"status": "error", "message": message}))
}

/// Constant-time comparison of the bearer token.
fn authorized(req: &Req, token: &str) -> bool {
    let Some(h) = req
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(given) = h.strip_prefix("Bearer ") else {
        return false;
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn handle(rt: Arc<L4>, token: String, req: Req) -> Resp {
    let path = req.path.trim_end_matches('/').to_string();
    if req.method == Method::GET && path == "/health" {
        return ok(json!({"healthy": true, "uptime_secs": rt.started.elapsed().as_secs()}));
    }
    // The pages and their assets hold nothing secret; their data needs the token.
    if req.method == Method::GET && path.is_empty() {
        let mut r = http::respond(StatusCode::TEMPORARY_REDIRECT, "text/plain", "");
        r.headers_mut().insert(
            hyper::header::LOCATION,
            hyper::header::HeaderValue::from_static("/swagger-ui"),
        );
        return r;
    }
    if req.method == Method::GET && path != "/ui/data" {
        if let Some(page) = super::ui::asset(&req.path) {
            return page;
        }
    }
    // The route table says which routes are public (ops/routes.rs); everything else, and any
    // path that is not a route, needs the token first.
    let route = super::routes::find(req.method.as_str(), &req.path);
    if !route.is_some_and(|r| r.public) && !authorized(&req, &token) {
        return http::respond(StatusCode::UNAUTHORIZED, "text/plain", "");
    }
    tracing::debug!("➜ {} {}", req.method, req.path);
    // Only declared routes exist: the OpenAPI document cannot miss one.
    if route.is_none() {
        return err(StatusCode::NOT_FOUND, "no such route");
    }
    if let Some(resp) = super::config_api::route(&rt, &req).await {
        return resp;
    }
    match (req.method.clone(), path.as_str()) {
        (Method::GET, "/ui/data") => reply(StatusCode::OK, &super::ui::data(&rt)),
        (Method::GET, "/.well-known/openapi.json") => {
            reply(StatusCode::OK, &super::routes::openapi())
        }
        (Method::GET, "/actors") => {
            let rows: Vec<_> = rt.actors.snapshot().into_iter().map(|a| json!({"name": a.name, "parent": a.parent, "status": a.status.as_str(), "restarts": a.restarts})).collect();
            reply(StatusCode::OK, &json!(rows))
        }
        (Method::POST, "/reload") | (Method::POST, "/config/reload") => {
            match super::config_api::reload_applied(&rt).await {
                Ok(report) => {
                    let status = if report.ok {
                        StatusCode::OK
                    } else {
                        StatusCode::UNPROCESSABLE_ENTITY
                    };
                    reply(
                        status,
                        // `reloaded` and `timestamp` are 0.9.2's answer (everything is reloaded).
                        &json!({"status": if report.ok {"success"} else {"error"}, "data": {"valid": report.ok, "summary": report.summary, "problems": report.problems, "changed": report.changed.iter().map(|n| n.as_str()).collect::<Vec<_>>(), "reloaded": ["all"], "timestamp": utc_now()}}),
                    )
                }
                Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            }
        }
        (Method::GET, "/status") => {
            let snap = rt.config.load();
            let tcp: Vec<u16> = snap
                .listeners
                .keys()
                .filter(|k| k.proto == crate::config::Proto::Tcp)
                .map(|k| k.port)
                .collect();
            let udp: Vec<u16> = snap
                .listeners
                .keys()
                .filter(|k| k.proto == crate::config::Proto::Udp)
                .map(|k| k.port)
                .collect();
            ok(json!({
                "listeners": {"active": tcp.len() + udp.len(), "tcp": tcp, "udp": udp},
                "plugins": {
                    "internal": crate::flow::catalogue::BUILTINS.len(),
                    "external": snap.plugins.doc.len(),
                    "external_healthy": snap.plugins.doc.keys().filter(|n| rt.flow.plugins.healthy.get(*n).is_some_and(|h| *h)).count(),
                },
                "resources": {"nodes": snap.nodes.doc.names.len(), "certificates": rt.certs.load().by_id.len(), "resolvers": snap.resolvers.len(), "applications": snap.applications.len()},
                "connections": rt.limits.active(),
                "config_generation": snap.generation,
            }))
        }
        (Method::GET, "/ports") => {
            let snap = rt.config.load();
            let mut ports: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
            for k in snap.listeners.keys() {
                ports.entry(k.port).or_default().push(k.proto.as_str());
            }
            let list: Vec<_> = ports
                .into_iter()
                .map(|(p, protos)| json!({"port": p, "protocols": protos, "active": true}))
                .collect();
            ok(json!(list))
        }
        (Method::GET, "/plugins") => {
            let snap = rt.config.load();
            // 0.9.2's `?type=all|internal|external`.
            let kind = req
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("type="))
                .unwrap_or("all");
            if !matches!(kind, "all" | "internal" | "external") {
                return err(StatusCode::BAD_REQUEST, "type is all, internal or external");
            }
            let internal: Vec<_> = crate::flow::catalogue::BUILTINS.iter().map(|p| json!({"name": p.name, "role": format!("{:?}", p.role).to_lowercase(), "type": "internal"})).collect();
            let external: Vec<_> = snap
                .plugins
                .doc
                .values()
                .map(|p| json!({"name": p.name, "role": p.role, "type": "external", "healthy": rt.flow.plugins.healthy.get(&p.name).map(|h| *h)}))
                .collect();
            let mut data = serde_json::Map::new();
            if kind != "external" {
                data.insert("internal".into(), json!(internal));
            }
            if kind != "internal" {
                data.insert("external".into(), json!(external));
            }
            ok(serde_json::Value::Object(data))
        }
        (Method::GET, "/certs") => {
            let store = rt.certs.load();
            let list: Vec<_> = store
                .by_id
                .values()
                .map(|c| super::config_api::describe_cert(&rt, c))
                .collect();
            ok(json!(list))
        }
        (Method::GET, "/system") => {
            let built = env!("VANE_BUILD_EPOCH").parse::<u64>().ok().map(|s| {
                httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
            });
            ok(json!({
                "package": {
                    "name": env!("CARGO_PKG_NAME"),
                    "version": env!("CARGO_PKG_VERSION"),
                    "author": "the Vane authors",
                    "license": env!("CARGO_PKG_LICENSE"),
                    "repository": option_env!("CARGO_PKG_REPOSITORY").filter(|r| !r.is_empty()),
                    "description": env!("CARGO_PKG_DESCRIPTION"),
                },
                "build": {
                    "rust_version": env!("VANE_BUILD_RUSTC"),
                    "cargo_version": env!("VANE_BUILD_CARGO"),
                    "build_date": built,
                    "git_commit": env!("VANE_BUILD_COMMIT"),
                },
                "runtime": {"arch": std::env::consts::ARCH, "platform": std::env::consts::OS},
            }))
        }
        (Method::POST, p) if p.starts_with("/chaos/") => chaos(&rt, p, &req.query),
        _ => err(StatusCode::NOT_FOUND, "no such route"),
    }
}

fn chaos(rt: &L4, path: &str, query: &str) -> Resp {
    if !rt.settings.chaos {
        return err(
            StatusCode::NOT_FOUND,
            "chaos endpoints are disabled (CHAOS_ENDPOINTS=true enables them)",
        );
    }
    let (cmd, actor) = if let Some(a) = path.strip_prefix("/chaos/panic/") {
        (Control::Panic, a)
    } else if let Some(a) = path.strip_prefix("/chaos/stall/") {
        let ms = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        (Control::Stall(Duration::from_millis(ms)), a)
    } else {
        return err(StatusCode::NOT_FOUND, "no such chaos route");
    };
    if let (Control::Panic, Some(listener)) = (
        cmd,
        actor
            .strip_prefix("listeners/")
            .and_then(|a| a.strip_suffix("/sessions")),
    ) {
        return if rt.arm_session_panic(listener) {
            reply(
                StatusCode::ACCEPTED,
                &json!({"status": "success", "data": {"armed": actor}}),
            )
        } else {
            err(StatusCode::NOT_FOUND, "no such listener")
        };
    }
    if rt.actors.control(actor, cmd) {
        tracing::warn!("chaos: {cmd:?} sent to actor {actor}");
        reply(
            StatusCode::ACCEPTED,
            &json!({"status": "success", "data": {"actor": actor, "command": format!("{cmd:?}")}}),
        )
    } else {
        err(StatusCode::NOT_FOUND, "no such running actor")
    }
}
