//! TLS termination for L7: one server configuration whose certificate resolver reads the
//! current certificate store at every handshake, so certificate reloads apply to the next
//! connection without rebuilding anything.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions,
};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use super::L7;
use crate::acme::challenges::{self, Challenges};
use crate::certs::CertStore;
use crate::conn::carrier::OpenError;
use crate::runtime::Runtime;

/// Picks the certificate: the pinned id when the upgrade named one (and it exists), else by
/// SNI (exact, wildcard, then `default`).
struct ByName {
    store: Arc<ArcSwap<CertStore>>,
    pinned: Option<String>,
    acme: Arc<Challenges>,
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
        // ACME tls-alpn-01 (RFC 8737): a validator offers only `acme-tls/1` and gets the
        // validation certificate of the name, never a served one.
        if hello
            .alpn()
            .is_some_and(|mut a| a.any(|p| p == challenges::ACME_TLS_ALPN))
        {
            return hello.server_name().and_then(|n| self.acme.tls_alpn01(n));
        }
        let store = self.store.load();
        let pinned = self.pinned.as_deref().and_then(|id| store.by_id.get(id));
        pinned
            .or_else(|| store.select(hello.server_name().unwrap_or("default")))
            .map(|c| c.key.clone())
    }
}

/// TLS sessions a client may resume without tickets (TLS 1.2 clients that do not take them),
/// oldest dropped first. Tickets carry the rest.
const SESSION_CACHE: usize = 4096;

/// What termination shares between connections: the server configurations (the default one
/// and one per pinned certificate id, built on first use) and, across all of them, the
/// session cache and the ticket keys, so that a client resumes whichever configuration
/// served it before. Resuming skips the certificate signature and the key exchange's
/// public-key work, the bulk of a handshake's cost.
pub struct Termination {
    shared: OnceLock<Arc<rustls::ServerConfig>>,
    /// Pinned ids come from the config, not from clients: a handful.
    pinned: DashMap<String, Arc<rustls::ServerConfig>>,
    sessions: Arc<dyn StoresServerSessions>,
    /// Rotating ticket keys (every 6 hours, the previous still accepted), made on first use.
    tickets: OnceLock<Arc<dyn ProducesTickets>>,
}

impl Default for Termination {
    fn default() -> Self {
        Self {
            shared: OnceLock::new(),
            pinned: DashMap::new(),
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE),
            tickets: OnceLock::new(),
        }
    }
}

impl Termination {
    fn tickets(&self) -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
        if let Some(t) = self.tickets.get() {
            return Ok(t.clone());
        }
        let made = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        Ok(self.tickets.get_or_init(|| made).clone())
    }
}

/// The provider's suites with those whose handshake hashes with SHA-256 first, chosen in this
/// order whatever the client's (`ignore_client_order`). OpenSSL-based clients (curl, wget,
/// most scripts) put AES-256-GCM-SHA384 first, and x86 has SHA extensions for SHA-256 only:
/// with ring, 4.5 % of a full handshake's CPU went to SHA-512 blocks, and full handshakes ran
/// 13-15 % faster with AES-128-GCM-SHA256 (openssl s_time); AWS-LC hashes SHA-384 no faster.
/// Browsers ask for AES-128-GCM first already; every client offers it or ChaCha20, both
/// SHA-256 suites, so nobody is refused.
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::hash::HashAlgorithm;
    use rustls::SupportedCipherSuite as Suite;
    let hash = |s: &Suite| match s {
        Suite::Tls13(s) => s.common.hash_provider.algorithm(),
        Suite::Tls12(s) => s.common.hash_provider.algorithm(),
    };
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites
        .sort_by_key(|s| hash(s) != HashAlgorithm::SHA256);
    Arc::new(p)
}

fn config(rt: &L7, pinned: Option<String>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = server_provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByName {
            store: rt.certs.clone(),
            pinned,
            acme: rt.acme.challenges.clone(),
        }));
    cfg.ignore_client_order = true;
    cfg.session_storage = rt.tls.sessions.clone();
    cfg.ticketer = rt.tls.tickets()?;
    // `acme-tls/1` last: only a client that offers nothing else negotiates it.
    cfg.alpn_protocols = vec![
        b"h2".to_vec(),
        b"http/1.1".to_vec(),
        challenges::ACME_TLS_ALPN.to_vec(),
    ];
    Ok(Arc::new(cfg))
}

/// A QUIC (HTTP/3) server configuration: TLS 1.3 only, ALPN `h3`, certificates chosen per
/// handshake like TCP termination.
pub fn h3_server_config(rt: &Runtime) -> Result<quinn::ServerConfig, OpenError> {
    let provider = server_provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ByName {
            store: rt.certs.clone(),
            pinned: None,
            acme: rt.acme.challenges.clone(),
        }));
    cfg.ignore_client_order = true;
    cfg.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(cfg)
        .map_err(|e| OpenError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(quinn::IdleTimeout::try_from(std::time::Duration::from_secs(30)).ok())
        .keep_alive_interval(Some(std::time::Duration::from_secs(10)));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// The acceptor for one connection; shared unless the upgrade pinned a certificate.
pub fn acceptor(rt: &L7, pinned: Option<&str>) -> Result<TlsAcceptor, rustls::Error> {
    let cfg = match pinned {
        Some(id) => match rt.tls.pinned.get(id) {
            Some(c) => c.clone(),
            None => {
                let c = config(rt, Some(id.to_string()))?;
                rt.tls.pinned.entry(id.to_string()).or_insert(c).clone()
            }
        },
        None => match rt.tls.shared.get() {
            Some(c) => c.clone(),
            None => {
                let c = config(rt, None)?;
                rt.tls.shared.get_or_init(|| c).clone()
            }
        },
    };
    Ok(TlsAcceptor::from(cfg))
}
