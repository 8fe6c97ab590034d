//! The request `internal.driver.upstream` sends: the client's fields with the proxy's edits
//! (hop-by-hop fields dropped, the client's `Host` moved to `X-Forwarded-Host`, the upstream's
//! authority as `Host`, `X-Forwarded-For`/`-Proto` and `X-Vane-Proxy` set). Described once,
//! then either written straight into an HTTP/1.1 head, so the client's header map is read in
//! place instead of copied and edited, or made into a header map for hyper's clients.

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};
use hyper::{Method, Request, Uri};

use super::body::Body;

/// The version Vane announces upstream in `X-Vane-Proxy`, as 0.9.2 did.
const VANE_PROXY: &str = "0.9.2";

static X_VANE_PROXY: HeaderName = HeaderName::from_static("x-vane-proxy");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static PROXY: HeaderValue = HeaderValue::from_static(VANE_PROXY);

/// Fields that describe one hop, not the message (RFC 9110 7.6.1), plus the common
/// non-standard ones.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A hop-by-hop field (names are lowercase in a header map).
pub fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// The names a message's `Connection` field lists beyond `close` and the hop-by-hop ones
/// (those fields are hop-by-hop too). Allocates only when there are such names, which is rare.
pub fn connection_named(h: &HeaderMap) -> Vec<&str> {
    let known = |t: &str| {
        t.eq_ignore_ascii_case("close") || HOP_BY_HOP.iter().any(|k| k.eq_ignore_ascii_case(t))
    };
    h.get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty() && !known(t))
        .collect()
}

/// Removes hop-by-hop fields, including those the `Connection` field names (a response from
/// an upstream). Found by a scan of the few names present, removed one lookup each: removing
/// every known name by lookup, present or not, cost more than the scans.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = connection_named(h)
        .into_iter()
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    // Bounded by the number of distinct names: each round removes one.
    while let Some(name) = h
        .keys()
        .find(|k| hop_by_hop(k) || named.contains(k))
        .cloned()
    {
        h.remove(&name);
    }
}

/// The upstream request, apart from its body.
pub struct Outbound<'a> {
    pub method: Method,
    /// Absolute: the upstream's scheme and authority, and the target.
    pub uri: Uri,
    client: &'a HeaderMap,
    /// Hop-by-hop fields dropped (not for a WebSocket upgrade, which needs them).
    strip: bool,
    /// What the client's `Connection` field names (dropped too when `strip`).
    named: Vec<&'a str>,
    forwarded_for: Option<HeaderValue>,
    forwarded_proto: HeaderValue,
    forwarded_host: Option<HeaderValue>,
}

/// Who the client was, for the `X-Forwarded-*` fields.
pub struct Client<'a> {
    pub headers: &'a HeaderMap,
    /// The request's own authority (HTTP/2 `:authority`, an absolute-form target).
    pub authority: Option<&'a str>,
    /// The client's IP as a field value (made once per connection).
    pub ip: &'a HeaderValue,
    pub tls: bool,
}

impl<'a> Outbound<'a> {
    pub fn new(method: Method, uri: Uri, client: Client<'a>, strip: bool) -> Self {
        let named = if strip {
            connection_named(client.headers)
        } else {
            Vec::new()
        };
        // The client's value of a field the hop rules let through.
        let kept = |name: &HeaderName| {
            (!dropped(strip, &named, name))
                .then(|| client.headers.get(name))
                .flatten()
        };
        let ip = client.ip;
        let forwarded_for = match kept(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => {
                let ip = ip.to_str().unwrap_or_default();
                HeaderValue::from_str(&format!("{prior}, {ip}")).ok()
            }
            None => Some(ip.clone()),
        };
        let forwarded_host = kept(&HOST)
            .cloned()
            .or_else(|| client.authority.and_then(|a| HeaderValue::from_str(a).ok()));
        Self {
            method,
            uri,
            client: client.headers,
            strip,
            named,
            forwarded_for,
            forwarded_proto: HeaderValue::from_static(if client.tls { "https" } else { "http" }),
            forwarded_host,
        }
    }

    /// A client field that goes upstream as it came.
    fn keeps(&self, name: &HeaderName) -> bool {
        let replaced = *name == HOST
            || *name == X_VANE_PROXY
            || (*name == X_FORWARDED_FOR && self.forwarded_for.is_some())
            || *name == X_FORWARDED_PROTO
            || (*name == X_FORWARDED_HOST && self.forwarded_host.is_some());
        !replaced && !dropped(self.strip, &self.named, name)
    }

    /// Every field that goes upstream except `Host`: the client's kept ones in their order,
    /// then the proxy's.
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> + '_ {
        let added = [
            Some((&X_VANE_PROXY, &PROXY)),
            self.forwarded_for.as_ref().map(|v| (&X_FORWARDED_FOR, v)),
            Some((&X_FORWARDED_PROTO, &self.forwarded_proto)),
            self.forwarded_host.as_ref().map(|v| (&X_FORWARDED_HOST, v)),
        ];
        self.client
            .iter()
            .filter(|(n, _)| self.keeps(n))
            .chain(added.into_iter().flatten())
    }

    /// The request for hyper's clients (which set `Host` from the URL themselves).
    pub fn request(&self, body: Body) -> Request<Body> {
        let mut headers = HeaderMap::with_capacity(self.client.len() + 4);
        for (name, value) in self.fields() {
            headers.append(name, value.clone());
        }
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        req
    }
}

/// A client field the hop rules drop: hop-by-hop, or named by `Connection`, when stripping.
fn dropped(strip: bool, named: &[&str], name: &HeaderName) -> bool {
    strip && (hop_by_hop(name) || named.iter().any(|n| n.eq_ignore_ascii_case(name.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn sent(out: &Outbound<'_>) -> Vec<String> {
        out.fields()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect()
    }

    #[test]
    fn hop_by_hop_and_named_fields_go_and_the_proxy_says_who_asked() {
        let h = client(&[
            ("host", "site.test"),
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("accept", "a"),
            ("accept", "b"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-vane-proxy", "forged"),
        ]);
        let who = Client {
            headers: &h,
            authority: None,
            ip: &HeaderValue::from_static("127.0.0.1"),
            tls: true,
        };
        let uri: Uri = "http://up:8080/p".parse().expect("uri");
        let out = Outbound::new(Method::GET, uri, who, true);
        assert_eq!(
            sent(&out),
            [
                "accept: a",
                "accept: b",
                "x-vane-proxy: 0.9.2",
                "x-forwarded-for: 10.0.0.1, 127.0.0.1",
                "x-forwarded-proto: https",
                "x-forwarded-host: site.test",
            ]
        );
        let req = out.request(crate::l7::body::empty());
        assert_eq!(req.headers().len(), 6);
        assert!(req.headers().get(HOST).is_none());
    }

    #[test]
    fn an_upgrade_keeps_its_hop_fields_and_the_authority_stands_in_for_host() {
        let h = client(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let who = Client {
            headers: &h,
            authority: Some("site.test:8443"),
            ip: &HeaderValue::from_static("::1"),
            tls: false,
        };
        let uri: Uri = "http://up/ws".parse().expect("uri");
        let out = Outbound::new(Method::GET, uri, who, false);
        let all = sent(&out);
        assert!(all.contains(&"connection: Upgrade".to_string()), "{all:?}");
        assert!(all.contains(&"upgrade: websocket".to_string()), "{all:?}");
        assert!(all.contains(&"x-forwarded-host: site.test:8443".to_string()));
        assert!(all.contains(&"x-forwarded-for: ::1".to_string()));
    }

    #[test]
    fn strip_removes_what_connection_names() {
        let mut h = client(&[
            ("connection", "close, x-a"),
            ("x-a", "1"),
            ("transfer-encoding", "chunked"),
            ("x-b", "2"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-b"));
    }
}
