//! The upstream URL of `internal.driver.upstream` (plugins.md 10): `url_prefix`, then the
//! path and the query, the request's own unless the flow gives others.

use std::cell::RefCell;

use hyper::http::uri::{Authority, Parts, Scheme};
use hyper::Uri;

use crate::flow::kv::Kv;

/// Prefixes a thread keeps parsed (a prefix may be templated from the request, so the set is
/// not the config's to bound); past this the oldest is forgotten.
const PREFIXES: usize = 16;

/// A prefix that is a scheme and an authority alone, parsed; `None` when it is not one.
type Parsed = Option<(Scheme, Authority)>;

thread_local! {
    static PARSED: RefCell<Vec<(Box<str>, Parsed)>> = const { RefCell::new(Vec::new()) };
}

/// A URL that does not parse (its text, for the flow's `error`).
#[derive(Debug, thiserror::Error)]
#[error("invalid upstream URL `{0}`")]
pub struct InvalidUrl(pub String);

/// The URL as text, built in one allocation.
pub fn url(prefix: &str, path: Option<&str>, query: Option<&str>, kv: &Kv) -> String {
    let prefix = prefix.trim_end_matches('/');
    let raw = path.or_else(|| kv.get("req.path")).unwrap_or("/");
    let (p, q) = match (query, raw.split_once('?')) {
        (Some(q), _) => (raw.split('?').next().unwrap_or(raw), Some(q)),
        (None, Some((p, q))) => (p, Some(q)),
        (None, None) if path.is_none() => (raw, kv.get("req.query")),
        (None, None) => (raw, None),
    };
    let p = p.trim_start_matches('/');
    let q = q.filter(|q| !q.is_empty());
    let mut url = String::with_capacity(prefix.len() + p.len() + q.map_or(0, str::len) + 2);
    url.push_str(prefix);
    url.push('/');
    url.push_str(p);
    if let Some(q) = q {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// The URL as a `Uri`, or the text that does not parse as one. The common proxy (a prefix
/// that is a scheme and authority, no `path` or `query` input, the request's own path and
/// query in the KV) builds no text and parses nothing: the prefix is parsed once per thread
/// and the request's path and query are shared with its `Uri`. What it gives is the `Uri`
/// of [`url`]'s text, which any other case parses.
pub fn uri(
    prefix: &str,
    path: Option<&str>,
    query: Option<&str>,
    kv: &Kv,
    request: &Uri,
) -> Result<Uri, InvalidUrl> {
    if path.is_none() && query.is_none() {
        if let Some(uri) = request_path(prefix, kv, request) {
            return Ok(uri);
        }
    }
    let text = url(prefix, path, query, kv);
    // The text's bytes become the `Uri`'s without a copy (`parse` would copy them).
    Uri::try_from(text).map_err(|_| InvalidUrl(url(prefix, path, query, kv)))
}

/// `prefix` with the request's path and query, when [`url`] would give exactly that.
fn request_path(prefix: &str, kv: &Kv, request: &Uri) -> Option<Uri> {
    let pq = request.path_and_query()?;
    let (p, q) = (request.path(), request.query());
    // What `url` rewrites: leading slashes collapsed, an empty query dropped; and a path or
    // query a flow put in the KV in place of the request's.
    if !p.starts_with('/') || p.starts_with("//") || q == Some("") {
        return None;
    }
    if kv.get("req.path") != Some(p) || kv.get("req.query") != q {
        return None;
    }
    let (scheme, authority) = parsed(prefix.trim_end_matches('/'))?;
    let mut parts = Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(pq.clone());
    Uri::from_parts(parts).ok()
}

/// The scheme and authority of a prefix that is nothing more, parsed once per thread.
fn parsed(prefix: &str) -> Parsed {
    PARSED.with_borrow_mut(|kept| {
        if let Some((_, p)) = kept.iter().find(|(k, _)| &**k == prefix) {
            return p.clone();
        }
        let p = prefix.parse::<Uri>().ok().and_then(|u| {
            // `http::Uri` gives an absolute URL without a path the path `/`; the prefix's
            // own trailing slashes are gone already.
            let bare = u
                .path_and_query()
                .is_none_or(|pq| matches!(pq.as_str(), "" | "/"));
            let parts = u.into_parts();
            match (parts.scheme, parts.authority) {
                (Some(s), Some(a)) if bare => Some((s, a)),
                _ => None,
            }
        });
        if kept.len() >= PREFIXES {
            kept.remove(0);
        }
        kept.push((prefix.into(), p.clone()));
        p
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_as_vane_does() {
        let mut kv = Kv::new();
        kv.set("req.path", "/a/b");
        kv.set("req.query", "x=1");
        assert_eq!(url("http://h:1/", None, None, &kv), "http://h:1/a/b?x=1");
        assert_eq!(
            url("http://h:1/base", Some("/p?q=2"), None, &kv),
            "http://h:1/base/p?q=2"
        );
        assert_eq!(url("http://h:1", Some("/p"), None, &kv), "http://h:1/p");
        assert_eq!(
            url("http://h:1", Some("/p?q=2"), Some("z=3"), &kv),
            "http://h:1/p?z=3"
        );
        assert_eq!(url("http://h:1", None, Some(""), &kv), "http://h:1/a/b");
    }

    /// The shortcut gives the `Uri` the text would parse to, for every prefix, request and
    /// KV below, and is taken exactly where it may be.
    #[test]
    fn the_request_path_shortcut_agrees_with_the_text() {
        let prefixes = [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "https://example.com",
            "http://[::1]:9000//",
            "http://u@h:1",
            "http://h:1/base",
            "http://h:1?x",
            "not a url",
            "h:1",
        ];
        let requests = [
            "/",
            "/a/b",
            "/a/b?x=1&y=2",
            "/a?",
            "//a",
            "/%20?q=%41",
            "*",
            "/p?",
        ];
        for prefix in prefixes {
            for target in requests {
                let request: Uri = target.parse().expect("request target");
                for rewritten in [false, true] {
                    let mut kv = Kv::new();
                    kv.set("req.path", request.path());
                    if let Some(q) = request.query() {
                        kv.set("req.query", q);
                    }
                    if rewritten {
                        kv.set("req.path", "/elsewhere");
                    }
                    let text = url(prefix, None, None, &kv);
                    let expected = text.parse::<Uri>().map(|u| u.to_string());
                    let got = uri(prefix, None, None, &kv, &request).map(|u| u.to_string());
                    assert_eq!(
                        got.as_ref().ok(),
                        expected.as_ref().ok(),
                        "{prefix} + {target} (rewritten: {rewritten})"
                    );
                    let short = request_path(prefix, &kv, &request).is_some();
                    let may = !rewritten
                        && matches!(
                            prefix,
                            "http://127.0.0.1:8080"
                                | "http://127.0.0.1:8080/"
                                | "https://example.com"
                                | "http://[::1]:9000//"
                                | "http://u@h:1"
                        )
                        && matches!(target, "/" | "/a/b" | "/a/b?x=1&y=2" | "/%20?q=%41");
                    assert_eq!(short, may, "{prefix} + {target} (rewritten: {rewritten})");
                }
            }
        }
    }

    /// A thread keeps at most [`PREFIXES`] parsed prefixes.
    #[test]
    fn parsed_prefixes_are_bounded() {
        std::thread::spawn(|| {
            for n in 0..100 {
                assert!(parsed(&format!("http://h{n}:1")).is_some());
            }
            assert_eq!(PARSED.with_borrow(Vec::len), PREFIXES);
            assert!(parsed("http://h99:1").is_some(), "the newest is kept");
        })
        .join()
        .expect("test thread");
    }
}
