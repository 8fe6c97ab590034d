//! The status page at `/ui/` on the management console: a page, its script and its style,
//! built into the binary (no CDN, no network fetch), and `GET /ui/data`, everything the page
//! shows in one authorised answer. The page itself holds nothing secret and is served without
//! the token; it asks for the token once, keeps it for the browser session, and sends it with
//! every `/ui/data` request, which answers 401 without it like every other route.

mod data;

use hyper::StatusCode;

use super::http::{self, Resp};

pub use data::data;

const INDEX: &str = include_str!("index.html");
const API: &str = include_str!("api.html");
const API_SCRIPT: &str = include_str!("api.js");
const SCRIPT: &str = include_str!("app.js");
const COMMON: &str = include_str!("common.js");
const STYLE: &str = include_str!("style.css");

/// The pages' assets: the status page (`/ui/`), the API page (`/swagger-ui`, 0.9.2's path),
/// their scripts and style.
pub fn asset(path: &str) -> Option<Resp> {
    let (kind, body) = match path {
        "/ui" | "/ui/" | "/ui/index.html" => ("text/html; charset=utf-8", INDEX),
        "/ui/app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/ui/common.js" => ("text/javascript; charset=utf-8", COMMON),
        "/swagger-ui" | "/swagger-ui/" => ("text/html; charset=utf-8", API),
        "/ui/api.js" => ("text/javascript; charset=utf-8", API_SCRIPT),
        "/ui/style.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    let mut r = http::respond(StatusCode::OK, kind, body);
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        hyper::header::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache"),
    );
    Some(r)
}
