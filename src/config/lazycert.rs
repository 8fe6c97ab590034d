//! `lazycert.<ext>` at the config root: Vane 0.9.2's LazyCert integration. A LazyCert service
//! runs the ACME orders and writes the pairs into `certs/`; vane answers the http-01
//! challenges it lists.

use std::net::IpAddr;

use serde_json::Value;

use super::error::Problems;

/// Where vane's public address comes from (told to LazyCert by 0.9.2; kept for the record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicIp {
    Auto,
    Fixed(IpAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LazyCert {
    pub enabled: bool,
    /// Without a trailing `/`.
    pub url: String,
    pub token: String,
    pub poll_interval_secs: u64,
    pub public_ip: PublicIp,
}

/// Parses and validates the document; `None` when it has errors.
pub fn parse(doc: &Value, pr: &mut Problems) -> Option<LazyCert> {
    let enabled = match doc.get("enabled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            pr.error("enabled", "expected true or false");
            false
        }
    };
    let url = doc
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    let valid_url = url.parse::<hyper::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    });
    if !valid_url {
        pr.error("url", format!("`{url}` is not an http:// or https:// URL"));
    }
    let token = doc
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if token.is_empty() {
        pr.error("token", "must not be empty");
    }
    let poll_interval_secs = match doc.get("poll_interval") {
        None | Some(Value::Null) => 5,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=300).contains(&n) => n,
            _ => {
                pr.error("poll_interval", "expected seconds, 1 to 300");
                5
            }
        },
    };
    let public_ip = match doc.get("public_ip").and_then(Value::as_str) {
        None | Some("auto") => PublicIp::Auto,
        Some(ip) => match ip.parse() {
            Ok(ip) => PublicIp::Fixed(ip),
            Err(_) => {
                pr.error(
                    "public_ip",
                    format!("`{ip}`: expected \"auto\" or an address"),
                );
                PublicIp::Auto
            }
        },
    };
    (!pr.has_errors()).then_some(LazyCert {
        enabled,
        url,
        token,
        poll_interval_secs,
        public_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_0_9_2_shape_and_its_checks() {
        let mut pr = Problems::for_file("lazycert.yaml");
        let l = parse(
            &json!({"enabled": true, "url": "https://lazycert.internal:8443/", "token": "t", "poll_interval": 2}),
            &mut pr,
        )
        .expect("valid");
        assert_eq!(l.url, "https://lazycert.internal:8443");
        assert_eq!((l.enabled, l.poll_interval_secs), (true, 2));
        assert_eq!(l.public_ip, PublicIp::Auto);
        let mut pr = Problems::for_file("lazycert.yaml");
        assert!(parse(
            &json!({"url": "ftp://x", "token": "", "poll_interval": 0, "public_ip": "nope"}),
            &mut pr
        )
        .is_none());
        let all: Vec<String> = pr.list.iter().map(ToString::to_string).collect();
        for at in ["url", "token", "poll_interval", "public_ip"] {
            assert!(
                all.iter()
                    .any(|p| p.contains(&format!("lazycert.yaml: {at}:"))),
                "{at}: {all:?}"
            );
        }
    }
}
