//! The request keys of templates.md 5.3 (`req.proto`, `req.method`, `req.path`, `req.query`,
//! `req.version`, `req.host`), read off the request's own parts when a flow asks instead of
//! copied into the KV for every request: a shared reference to the URI and the `Host` value
//! costs a counter each, where copies cost an allocation and a table insert each. A flow that
//! writes one of these keys shadows it, as before.

use std::sync::Arc;

use hyper::header::{HeaderValue, HOST};
use hyper::{Method, Request, Uri, Version};

use crate::flow::kv::{Derived, Kv};

/// The keys, in the order a listing shows them.
const NAMES: [&str; 6] = [
    "req.proto",
    "req.method",
    "req.path",
    "req.query",
    "req.version",
    "req.host",
];

/// The names' lengths together.
const NAMES_LEN: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < NAMES.len() {
        n += NAMES[i].len();
        i += 1;
    }
    n
};

/// What the keys are read from, taken when the request arrives (later changes to the
/// request, a rewritten path say, are the flow's to write into the KV).
#[derive(Debug)]
struct RequestKeys {
    /// The application's name.
    proto: Arc<str>,
    method: Method,
    uri: Uri,
    version: Version,
    host: Option<HeaderValue>,
    bytes: usize,
}

impl Derived for RequestKeys {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "req.proto" => Some(&self.proto),
            "req.method" => Some(self.method.as_str()),
            "req.path" => Some(self.uri.path()),
            "req.query" => self.uri.query(),
            "req.version" => Some(version_text(self.version)),
            // Also an HTTP/2 request's authority (0.9.2 left it empty there).
            "req.host" => self
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .or_else(|| self.uri.authority().map(|a| a.as_str())),
            _ => None,
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        Box::new(NAMES.into_iter().filter_map(|k| Some((k, self.get(k)?))))
    }

    fn bytes_bound(&self) -> usize {
        self.bytes
    }
}

/// The KV of one request: its keys over the connection's `base`.
pub fn request_kv<B>(base: Arc<dyn Derived>, app: &Arc<str>, req: &Request<B>) -> Kv {
    Kv::layered_over(base, Arc::new(RequestKeys::of(app, req)))
}

impl RequestKeys {
    fn of<B>(app: &Arc<str>, req: &Request<B>) -> Self {
        let mut keys = RequestKeys {
            proto: app.clone(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: req.headers().get(HOST).cloned(),
            bytes: 0,
        };
        // What a listing of the keys holds (names and values), without walking it.
        let host = keys
            .get("req.host")
            .map_or(0, |h| "req.host".len() + h.len());
        let query = keys.uri.query().map_or(0, |q| "req.query".len() + q.len());
        keys.bytes = NAMES_LEN - "req.host".len() - "req.query".len()
            + keys.proto.len()
            + keys.method.as_str().len()
            + keys.uri.path().len()
            + version_text(keys.version).len()
            + host
            + query;
        keys
    }
}

/// The version as templates read it.
pub fn version_text(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv_of(req: &Request<()>) -> Kv {
        let mut conn = Kv::new();
        conn.set("conn.ip", "127.0.0.1");
        request_kv(Arc::new(conn), &Arc::from("httpx"), req)
    }

    #[test]
    fn the_keys_are_read_off_the_request() {
        let req = Request::builder()
            .method("PATCH")
            .uri("/a/b?x=1&y=2")
            .header("host", "example.test:8080")
            .body(())
            .expect("request");
        let kv = kv_of(&req);
        assert_eq!(kv.get("req.proto"), Some("httpx"));
        assert_eq!(kv.get("req.method"), Some("PATCH"));
        assert_eq!(kv.get("req.path"), Some("/a/b"));
        assert_eq!(kv.get("req.query"), Some("x=1&y=2"));
        assert_eq!(kv.get("req.version"), Some("HTTP/1.1"));
        assert_eq!(kv.get("req.host"), Some("example.test:8080"));
        assert_eq!(
            kv.get("conn.ip"),
            Some("127.0.0.1"),
            "the connection's, below"
        );
        assert_eq!(kv.len(), 7);
    }

    #[test]
    fn an_authority_stands_in_for_host_and_a_missing_query_is_no_key() {
        let req = Request::builder()
            .uri("https://h2.example/p")
            .version(Version::HTTP_2)
            .body(())
            .expect("request");
        let mut kv = kv_of(&req);
        assert_eq!(kv.get("req.host"), Some("h2.example"));
        assert_eq!(kv.get("req.query"), None);
        assert_eq!(kv.get("req.version"), Some("HTTP/2.0"));
        assert!(kv.set("req.path", "/rewritten"));
        assert_eq!(
            kv.get("req.path"),
            Some("/rewritten"),
            "a flow's write shadows it"
        );
        let listed: Vec<_> = kv.iter().filter(|(k, _)| *k == "req.path").collect();
        assert_eq!(listed, [("req.path", "/rewritten")]);
    }

    /// Their bytes count towards the cap.
    #[test]
    fn the_keys_count_towards_the_cap() {
        let long = format!("/{}", "p".repeat(60 * 1024));
        let req = Request::builder().uri(long).body(()).expect("request");
        let mut kv = kv_of(&req);
        assert!(
            !kv.set("big", "x".repeat(5 * 1024)),
            "over 64 KiB with the path"
        );
        assert!(kv.set("small", "x".repeat(1024)));
    }

    /// The count made when a request arrives is what a listing of its keys holds.
    #[test]
    fn the_counted_bytes_are_the_listed_ones() {
        for (uri, host) in [
            ("/a?b=1", Some("example.test")),
            ("/only-path", None),
            ("http://authority.test:81/x?", None),
        ] {
            let mut b = Request::builder().method("DELETE").uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            let req = b.body(()).expect("request");
            let keys = RequestKeys::of(&Arc::from("httpx"), &req);
            let listed: usize = keys.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert_eq!(keys.bytes_bound(), listed, "{uri}");
        }
    }
}
