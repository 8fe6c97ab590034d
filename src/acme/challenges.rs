//! The answers a CA is waiting for while an order is being validated: the key authorization of
//! each http-01 token, and the self-signed certificate of each tls-alpn-01 name (RFC 8737).
//! Entries live exactly as long as the [`Published`] guard of the order that made them.

use std::sync::Arc;

use dashmap::DashMap;
use rustls::sign::CertifiedKey;

/// The path prefix of http-01 (RFC 8555 section 8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// The ALPN protocol of tls-alpn-01 (RFC 8737 section 6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

#[derive(Default)]
pub struct Challenges {
    http01: DashMap<String, String>,
    tls_alpn01: DashMap<String, Arc<CertifiedKey>>,
}

impl Challenges {
    /// The answer for `path` when it is an http-01 request for a published token.
    pub fn http01(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        self.http01.get(token).map(|v| v.value().clone())
    }

    /// True when `path` asks for a published http-01 token.
    pub fn answers_http01(&self, path: &str) -> bool {
        path.strip_prefix(HTTP01_PREFIX)
            .is_some_and(|t| self.http01.contains_key(t))
    }

    /// The validation certificate of `name` while its tls-alpn-01 challenge is published.
    pub fn tls_alpn01(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn01
            .get(&name.to_ascii_lowercase())
            .map(|v| v.value().clone())
    }

    /// True when a tls-alpn-01 challenge of `name` is published.
    pub fn answers_tls_alpn01(&self, name: &str) -> bool {
        self.tls_alpn01.contains_key(&name.to_ascii_lowercase())
    }

    /// Publishes until the returned guard drops (also when the order's task is aborted).
    pub fn publish(self: &Arc<Self>) -> Published {
        Published {
            table: self.clone(),
            tokens: Vec::new(),
            names: Vec::new(),
        }
    }
}

/// Withdraws what it published when dropped.
pub struct Published {
    table: Arc<Challenges>,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl Published {
    pub fn http01(&mut self, token: &str, key_authorization: &str) {
        self.table
            .http01
            .insert(token.to_string(), key_authorization.to_string());
        self.tokens.push(token.to_string());
    }

    /// Withdraws one http-01 token before the guard drops (its challenge is gone).
    pub fn withdraw_http01(&mut self, token: &str) {
        self.table.http01.remove(token);
        self.tokens.retain(|t| t != token);
    }

    pub fn tls_alpn01(&mut self, name: &str, cert: Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        self.table.tls_alpn01.insert(name.clone(), cert);
        self.names.push(name);
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.table.http01.remove(t);
        }
        for n in &self.names {
            self.table.tls_alpn01.remove(n);
        }
    }
}

/// The tls-alpn-01 validation certificate of `name`: self-signed, the name as its only SAN,
/// and the critical acmeIdentifier extension holding SHA-256 of the key authorization.
pub fn tls_alpn01_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_while_published() {
        let t = Arc::new(Challenges::default());
        {
            let mut p = t.publish();
            p.http01("tok", "tok.thumb");
            p.tls_alpn01(
                "A.example",
                tls_alpn01_cert("a.example", &[7; 32]).expect("cert"),
            );
            assert_eq!(
                t.http01("/.well-known/acme-challenge/tok").as_deref(),
                Some("tok.thumb")
            );
            assert!(t.http01("/.well-known/acme-challenge/other").is_none());
            assert!(t.http01("/tok").is_none());
            assert!(t.answers_tls_alpn01("a.EXAMPLE"));
            let ck = t.tls_alpn01("a.example").expect("cert");
            assert_eq!(crate::certs::der::dns_names(&ck.cert[0]), ["a.example"]);
        }
        assert!(!t.answers_http01("/.well-known/acme-challenge/tok"));
        assert!(t.tls_alpn01("a.example").is_none());
    }
}
