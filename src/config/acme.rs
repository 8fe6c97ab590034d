//! `acme.<ext>` at the config root: the certificates vane obtains and renews itself (RFC 8555).
//!
//! Either one order at the top level or `orders: [<order>, ...]`; an order is
//! `{directory, email, domains, challenge, ca_bundle, renew_before_days}`.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::Value;

use super::error::{join, Problems};

/// How the CA checks that we control a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `GET /.well-known/acme-challenge/<token>` on port 80 (any plaintext HTTP path of vane).
    Http01,
    /// A TLS handshake with ALPN `acme-tls/1` on port 443 (RFC 8737).
    TlsAlpn01,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// One certificate to obtain and keep renewed.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// The CA's directory URL.
    pub directory: String,
    pub email: Option<String>,
    /// Lower-case DNS names; the first names the pair's files.
    pub domains: Vec<String>,
    pub challenge: Challenge,
    /// Extra trust for the directory's own TLS certificate (a test or private CA), resolved
    /// against the config dir.
    pub ca_bundle: Option<PathBuf>,
    pub renew_before_days: f64,
}

/// Every order of `acme.<ext>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AcmeDoc {
    pub orders: Vec<Order>,
}

/// The default renewal window, as Let's Encrypt advises for 90-day certificates.
pub const DEFAULT_RENEW_BEFORE_DAYS: f64 = 30.0;

/// Parses and validates the document; `None` when it has errors. `root` resolves a relative
/// `ca_bundle`.
pub fn parse(doc: &Value, root: &std::path::Path, pr: &mut Problems) -> Option<AcmeDoc> {
    let list: Vec<(String, &Value)> = match doc.get("orders") {
        Some(Value::Array(l)) => l
            .iter()
            .enumerate()
            .map(|(i, o)| (format!("orders.{i}"), o))
            .collect(),
        Some(_) => {
            pr.error("orders", "expected a list of orders");
            return None;
        }
        None if doc.is_null() => Vec::new(),
        None => vec![(String::new(), doc)],
    };
    let mut out = AcmeDoc::default();
    let mut seen = HashSet::new();
    for (at, o) in list {
        if let Some(order) = parse_order(o, &at, root, pr) {
            for (i, d) in order.domains.iter().enumerate() {
                if !seen.insert(d.clone()) {
                    pr.error(
                        &join(&join(&at, "domains"), &i.to_string()),
                        format!("`{d}` is in another order too; one order owns a name's files"),
                    );
                }
            }
            out.orders.push(order);
        }
    }
    (!pr.has_errors()).then_some(out)
}

fn parse_order(o: &Value, at: &str, root: &std::path::Path, pr: &mut Problems) -> Option<Order> {
    if !o.is_object() {
        pr.error(at, "expected an order (a map)");
        return None;
    }
    let text = |key: &str, pr: &mut Problems| match o.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            pr.error(&join(at, key), "expected a string");
            None
        }
    };
    let directory = text("directory", pr);
    match &directory {
        None if o.get("directory").is_none() => {
            pr.error(&join(at, "directory"), "missing: the CA's directory URL")
        }
        Some(d) if !valid_url(d) => pr.error(
            &join(at, "directory"),
            format!("`{d}` is not an http:// or https:// URL with a host"),
        ),
        _ => {}
    }
    let email = text("email", pr);
    if email.as_deref().is_some_and(|e| !e.contains('@')) {
        pr.error(&join(at, "email"), "expected an e-mail address");
    }
    let mut domains = Vec::new();
    match o.get("domains") {
        Some(Value::Array(l)) if !l.is_empty() => {
            for (i, d) in l.iter().enumerate() {
                let here = join(&join(at, "domains"), &i.to_string());
                match d.as_str().map(str::to_ascii_lowercase) {
                    Some(d) if d.starts_with("*.") => pr.error(
                        &here,
                        format!("`{d}`: wildcard names need dns-01, which vane does not answer"),
                    ),
                    Some(d) if valid_dns_name(&d) => domains.push(d),
                    Some(d) => pr.error(&here, format!("`{d}` is not a DNS name")),
                    None => pr.error(&here, "expected a string"),
                }
            }
        }
        _ => pr.error(&join(at, "domains"), "expected a non-empty list of names"),
    }
    let challenge = match text("challenge", pr).as_deref() {
        None | Some("http-01") => Challenge::Http01,
        Some("tls-alpn-01") => Challenge::TlsAlpn01,
        Some(other) => {
            pr.error(
                &join(at, "challenge"),
                format!("`{other}`: expected http-01 or tls-alpn-01"),
            );
            Challenge::Http01
        }
    };
    let ca_bundle = text("ca_bundle", pr).map(|p| root.join(p));
    if let Some(p) = &ca_bundle {
        if !p.is_file() {
            pr.error(
                &join(at, "ca_bundle"),
                format!("{} is not a readable file", p.display()),
            );
        }
    }
    let renew_before_days = match o.get("renew_before_days") {
        None | Some(Value::Null) => DEFAULT_RENEW_BEFORE_DAYS,
        Some(v) => match v.as_f64() {
            Some(d) if d > 0.0 && d.is_finite() => d,
            _ => {
                pr.error(
                    &join(at, "renew_before_days"),
                    "expected a number of days above 0",
                );
                DEFAULT_RENEW_BEFORE_DAYS
            }
        },
    };
    Some(Order {
        directory: directory?,
        email,
        domains,
        challenge,
        ca_bundle,
        renew_before_days,
    })
}

fn valid_url(s: &str) -> bool {
    s.parse::<hyper::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    })
}

/// LDH labels of 1-63 bytes, 253 in all.
pub fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> (Option<AcmeDoc>, Vec<String>) {
        let mut pr = Problems::for_file("acme.yaml");
        let d = parse(&v, std::path::Path::new("/nonexistent"), &mut pr);
        (d, pr.list.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn one_order_or_a_list() {
        let one = json!({"directory": "https://ca.test/dir", "email": "a@b.c",
            "domains": ["A.example", "b.example"], "challenge": "tls-alpn-01", "renew_before_days": 10});
        let (d, p) = run(one.clone());
        assert!(p.is_empty(), "{p:?}");
        let d = d.expect("valid");
        assert_eq!(d.orders[0].domains, ["a.example", "b.example"]);
        assert_eq!(d.orders[0].challenge, Challenge::TlsAlpn01);
        assert_eq!(d.orders[0].renew_before_days, 10.0);
        let (d, _) = run(
            json!({"orders": [one, {"directory": "http://127.0.0.1:14000/dir", "domains": ["c.example"]}]}),
        );
        let d = d.expect("valid");
        assert_eq!(d.orders.len(), 2);
        assert_eq!(d.orders[1].challenge, Challenge::Http01);
        assert_eq!(d.orders[1].renew_before_days, DEFAULT_RENEW_BEFORE_DAYS);
    }

    #[test]
    fn problems_name_the_place() {
        let (d, p) = run(json!({"orders": [
            {"directory": "ftp://x", "domains": ["ok.example", "*.w.example", "bad_name"], "challenge": "dns-01", "renew_before_days": 0},
            {"domains": ["ok.example"], "ca_bundle": "missing.pem"}
        ]}));
        assert!(d.is_none());
        let all = p.join("\n");
        for needle in [
            "acme.yaml: orders.0.directory: `ftp://x`",
            "orders.0.domains.1: `*.w.example`: wildcard",
            "orders.0.domains.2: `bad_name` is not a DNS name",
            "orders.0.challenge: `dns-01`",
            "orders.0.renew_before_days",
            "orders.1.directory: missing",
            "orders.1.ca_bundle",
        ] {
            assert!(all.contains(needle), "{needle} not in:\n{all}");
        }
    }

    #[test]
    fn a_name_belongs_to_one_order() {
        let o = json!({"directory": "https://ca.test/d", "domains": ["x.example"]});
        let (d, p) = run(json!({"orders": [o.clone(), o]}));
        assert!(d.is_none());
        assert!(p[0].contains("orders.1.domains.0: `x.example` is in another order"));
    }
}
