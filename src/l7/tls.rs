//! TLS termination for L7: one server configuration whose certificate resolver reads the
//! current certificate store at every handshake, so certificate reloads apply to the next
//! connection without rebuilding anything.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::certs::CertStore;
use crate::runtime::Runtime;

/// Picks the certificate: the pinned id when the upgrade named one (and it exists), else by
/// SNI (exact, wildcard, then `default`).
struct ByName {
    store: Arc<ArcSwap<CertStore>>,
    pinned: Option<String>,
}

impl std::fmt::Debug for ByName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByName")
            .field("pinned", &self.pinned)
            .finish()
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.store.load();
        let pinned = self.pinned.as_deref().and_then(|id| store.by_id.get(id));
        pinned
            .or_else(|| store.select(hello.server_name().unwrap_or("default")))
            .map(|c| c.key.clone())
    }
}

fn config(
    store: Arc<ArcSwap<CertStore>>,
    pinned: Option<String>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByName { store, pinned }));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The acceptor for one connection; shared unless the upgrade pinned a certificate.
pub fn acceptor(rt: &Runtime, pinned: Option<&str>) -> Result<TlsAcceptor, rustls::Error> {
    let cfg = match pinned {
        Some(id) => config(rt.certs.clone(), Some(id.to_string()))?,
        None => match rt.l7_tls.get() {
            Some(c) => c.clone(),
            None => {
                let c = config(rt.certs.clone(), None)?;
                rt.l7_tls.get_or_init(|| c).clone()
            }
        },
    };
    Ok(TlsAcceptor::from(cfg))
}
