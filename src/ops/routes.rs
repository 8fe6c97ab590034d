//! Every route of the management console, declared once: the console refuses what is not
//! here (so a route cannot exist without being described), `GET /.well-known/openapi.json`
//! is generated from it, and a test calls each one (so nothing here can lack a handler).

use serde_json::{json, Map, Value};

/// One route: method, path template (`{name}` one segment, `{name*}` the rest of the path),
/// what it does, and whether it answers without the token.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub public: bool,
}

const fn r(method: &'static str, path: &'static str, summary: &'static str) -> Route {
    Route {
        method,
        path,
        summary,
        public: false,
    }
}

const fn public(method: &'static str, path: &'static str, summary: &'static str) -> Route {
    Route {
        method,
        path,
        summary,
        public: true,
    }
}

pub const ROUTES: &[Route] = &[
    public("GET", "/", "Redirects to the API page (307)"),
    public(
        "GET",
        "/swagger-ui",
        "The interactive API page (asks for the token)",
    ),
    public("GET", "/ui/", "The live status page (asks for the token)"),
    public("GET", "/ui/app.js", "The status page's script"),
    public("GET", "/ui/common.js", "What both pages' scripts share"),
    public("GET", "/ui/api.js", "The API page's script"),
    public("GET", "/ui/style.css", "The pages' style"),
    public("GET", "/health", "Liveness and uptime"),
    public(
        "GET",
        "/.well-known/openapi.json",
        "This API as an OpenAPI 3.1 document (unauthenticated, as in 0.9.2)",
    ),
    r("GET", "/ui/data", "Everything the status page shows"),
    public(
        "GET",
        "/system",
        "Package, build and runtime (unauthenticated, as in 0.9.2)",
    ),
    r(
        "GET",
        "/status",
        "Listeners, plugins, resources, connections",
    ),
    r(
        "GET",
        "/actors",
        "The supervision tree: each actor's state and restarts",
    ),
    r(
        "POST",
        "/reload",
        "Reload the config dir (keeps the last good version)",
    ),
    r(
        "POST",
        "/config/reload",
        "Reload the config dir (0.9.2's name)",
    ),
    r("GET", "/config/export", "The config dir as a tar archive"),
    r(
        "POST",
        "/config/import",
        "Replace the config dir from a tar archive (validated first)",
    ),
    r("GET", "/ports", "Configured ports and their protocols"),
    r(
        "GET",
        "/ports/{port}",
        "One port: its TCP and UDP listeners",
    ),
    r("POST", "/ports/{port}", "Create a port's directory"),
    r("DELETE", "/ports/{port}", "Remove a port and its listeners"),
    r(
        "POST",
        "/ports/{port}/{proto}",
        "Create an empty listener file (proto: tcp or udp)",
    ),
    r(
        "DELETE",
        "/ports/{port}/{proto}",
        "Delete a listener in every format",
    ),
    r(
        "GET",
        "/ports/{port}/{proto}/flow",
        "A listener's flow (proto: tcp or udp)",
    ),
    r(
        "POST",
        "/ports/{port}/{proto}/flow",
        "Create a listener's flow (validated)",
    ),
    r(
        "PUT",
        "/ports/{port}/{proto}/flow",
        "Replace a listener's flow (validate_only=true: dry run)",
    ),
    r(
        "DELETE",
        "/ports/{port}/{proto}/flow",
        "Delete a listener's flow",
    ),
    r(
        "POST",
        "/ports/{port}/{proto}/flow/validate",
        "Validate a listener flow without writing it",
    ),
    r("GET", "/resolvers", "Resolver names"),
    r("GET", "/resolvers/{name}", "A resolver's flow"),
    r("POST", "/resolvers/{name}", "Create a resolver (validated)"),
    r("PUT", "/resolvers/{name}", "Replace a resolver (validated)"),
    r("DELETE", "/resolvers/{name}", "Delete a resolver"),
    r(
        "POST",
        "/resolvers/{name}/validate",
        "Validate a resolver flow without writing it",
    ),
    r("GET", "/applications", "Application names"),
    r("GET", "/applications/{name}", "An application's pipeline"),
    r(
        "POST",
        "/applications/{name}",
        "Create an application (validated)",
    ),
    r(
        "PUT",
        "/applications/{name}",
        "Replace an application (validated)",
    ),
    r("DELETE", "/applications/{name}", "Delete an application"),
    r(
        "POST",
        "/applications/{name}/validate",
        "Validate a pipeline without writing it",
    ),
    r("GET", "/nodes", "Named groups of upstream addresses"),
    r("POST", "/nodes", "Add a node"),
    r("GET", "/nodes/{name}", "One node"),
    r("PUT", "/nodes/{name}", "Replace a node"),
    r("DELETE", "/nodes/{name}", "Delete a node"),
    r("GET", "/plugins", "Built-in and external plugins"),
    r("GET", "/plugins/{name}", "One plugin: role, parameters"),
    r("POST", "/plugins/{name}", "Declare an external plugin"),
    r("PUT", "/plugins/{name}", "Replace an external plugin"),
    r("DELETE", "/plugins/{name}", "Remove an external plugin"),
    r("GET", "/certs", "Loaded certificates and their expiry"),
    r("GET", "/certs/{id}", "One certificate"),
    r(
        "POST",
        "/certs/{id}",
        "Upload a certificate and key (checked)",
    ),
    r("DELETE", "/certs/{id}", "Delete a certificate"),
    r(
        "POST",
        "/chaos/panic/{actor*}",
        "Chaos (CHAOS_ENDPOINTS=true): panic an actor, or arm a session panic",
    ),
    r(
        "POST",
        "/chaos/stall/{actor*}",
        "Chaos (CHAOS_ENDPOINTS=true): stall an actor (ms=...)",
    ),
];

/// Whether `path` (no query, no trailing slash but the root's) fits `template`.
fn fits(template: &str, path: &str) -> bool {
    let mut t = template.trim_start_matches('/').split('/');
    let mut p = path.trim_start_matches('/').split('/');
    loop {
        match (t.next(), p.next()) {
            (None, None) => return true,
            (Some(seg), Some(got)) if seg.ends_with("*}") => return !got.is_empty(),
            (Some(seg), Some(got)) if seg.starts_with('{') => {
                if got.is_empty() {
                    return false;
                }
            }
            (Some(seg), Some(got)) if seg == got => {}
            _ => return false,
        }
    }
}

/// The route `method path` is, if any.
pub fn find(method: &str, path: &str) -> Option<&'static Route> {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    ROUTES.iter().find(|r| {
        r.method == method && (fits(r.path, path) || fits(r.path.trim_end_matches('/'), path))
    })
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let template = route.path.replace("*}", "}");
        let params: Vec<Value> = template
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{} {}", route.method, route.path),
            "parameters": params,
            "responses": {
                "200": {"description": "`{\"status\":\"success\",\"data\":...}`"},
                "401": {"description": "missing or wrong token"},
                "404": {"description": "`{\"status\":\"error\",\"message\":...}`"},
            },
        });
        if route.public {
            op["security"] = json!([]);
        }
        if matches!(route.method, "POST" | "PUT") {
            op["requestBody"] =
                json!({"required": false, "content": {"application/json": {"schema": {}}}});
        }
        let entry = paths
            .entry(template)
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Vane management API", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_their_paths_only() {
        assert!(find("GET", "/ports/80/tcp/flow").is_some());
        assert!(find("POST", "/ports/80/tcp/flow/validate").is_some());
        assert!(find("GET", "/ports/80/tcp/flow/x").is_none());
        assert!(find("POST", "/chaos/panic/listeners/tcp:80/sessions").is_some());
        assert!(find("GET", "/").is_some_and(|r| r.public));
        assert!(find("GET", "/ui").is_some() && find("GET", "/ui/").is_some());
        assert!(find("PATCH", "/ports").is_none());
        assert!(find("GET", "/nope").is_none());
        let doc = openapi();
        assert!(doc["paths"]["/ports/{port}/{proto}/flow"]["put"].is_object());
        assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([]));
    }
}
