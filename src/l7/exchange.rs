//! One HTTP request/response pair as an application flow sees it: keys computed from its
//! headers on demand, and the HTTP drivers that fill in the response.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::HeaderMap;
use hyper::http::request;
use hyper::StatusCode;
use serde_json::Value;

use super::body::Body;
use crate::flow::catalogue::Builtin;
use crate::flow::exec::{Driven, Exchange};
use crate::flow::kv::Kv;
use crate::runtime::Runtime;

pub struct HttpExchange {
    pub rt: Arc<Runtime>,
    pub peer: SocketAddr,
    /// The client came over TLS (for `X-Forwarded-Proto`).
    pub tls: bool,
    pub req: request::Parts,
    /// The client's request body until a driver takes it.
    pub body: Option<Body>,
    /// What a driver produced (status, headers, body), until the terminator sends it.
    pub resp: Option<(StatusCode, HeaderMap, Body)>,
}

/// `<prefix><name>`: the first value of that header (empty when absent or not text);
/// `<prefix>s`: every header as a JSON object, repeated ones joined by `, `.
fn header_key(headers: &HeaderMap, key: &str, prefix: &str) -> Option<String> {
    if let Some(name) = key.strip_prefix(prefix) {
        return Some(
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        );
    }
    if key.strip_prefix(prefix.trim_end_matches('.')) == Some("s") {
        let mut map = serde_json::Map::new();
        for name in headers.keys() {
            let joined = headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(", ");
            map.insert(name.as_str().to_string(), joined.into());
        }
        return Some(Value::Object(map).to_string());
    }
    None
}

impl Exchange for HttpExchange {
    fn lookup(&self, key: &str) -> Option<String> {
        if key.starts_with("req.header") {
            return header_key(&self.req.headers, key, "req.header.");
        }
        if key.starts_with("res.header") {
            let empty = HeaderMap::new();
            let h = self.resp.as_ref().map_or(&empty, |(_, h, _)| h);
            return header_key(h, key, "res.header.");
        }
        None
    }

    fn drive<'a>(
        &'a mut self,
        kind: Builtin,
        inputs: serde_json::Map<String, Value>,
        kv: &'a mut Kv,
        _rt: &'a Runtime,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Driven, String>> + Send + 'a>>
    {
        match kind {
            Builtin::Upstream => Box::pin(super::upstream::fetch(self, inputs, kv)),
            other => {
                Box::pin(async move { Err(format!("{other:?} is not available in this build")) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys() {
        let mut h = HeaderMap::new();
        h.insert("user-agent", "probe".parse().expect("value"));
        h.append("accept", "a".parse().expect("value"));
        h.append("accept", "b".parse().expect("value"));
        let get = |k: &str| header_key(&h, k, "req.header.");
        assert_eq!(get("req.header.User-Agent").as_deref(), Some("probe"));
        assert_eq!(get("req.header.missing").as_deref(), Some(""));
        assert_eq!(
            get("req.headers").as_deref(),
            Some(r#"{"user-agent":"probe","accept":"a, b"}"#)
        );
        assert_eq!(get("req.path"), None);
    }
}
