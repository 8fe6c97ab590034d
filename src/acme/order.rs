//! One ACME order from account to certificate: the account (stored, or created and stored),
//! the order, its challenges published for the CA and withdrawn when done, the CSR for a fresh
//! P-256 key, and the chain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};

use super::challenges::{self, Challenges};
use super::client::CaClient;
use super::files;
use crate::config::acme::{Challenge, Order};

/// The RFC 8555 problem type of an account the CA no longer knows (a CA reset, a test CA
/// restarted): the worker makes a new account instead of failing for ever.
const ACCOUNT_UNKNOWN: &str = "urn:ietf:params:acme:error:accountDoesNotExist";
/// The problem type of a rate limit.
pub const RATE_LIMITED: &str = "urn:ietf:params:acme:error:rateLimited";

/// Why an order failed, by side.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA answered with an error, or could not be reached (see the source).
    #[error("CA: {0}")]
    Ca(#[from] instant_acme::Error),
    /// The client for the CA could not be set up (its `ca_bundle`).
    #[error("CA client: {0}")]
    Client(#[from] super::client::CaError),
    #[error("the CA offered no {0} challenge for {1}")]
    NoChallenge(&'static str, String),
    #[error("authorization of {0} is {1:?}")]
    Authorization(String, AuthorizationStatus),
    #[error("the order ended {0:?}{1}")]
    Order(OrderStatus, String),
    #[error("key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("account file {0}: {1}")]
    AccountFile(String, String),
    #[error("writing the pair: {0}")]
    Write(std::io::Error),
}

impl AcmeError {
    /// The CA's problem type, when it answered with one.
    pub fn problem_type(&self) -> Option<&str> {
        match self {
            AcmeError::Ca(instant_acme::Error::Api(p)) => p.r#type.as_deref(),
            _ => None,
        }
    }
}

/// A pair the CA issued.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
}

/// Runs `order` to the end; `poll` bounds each wait on the CA.
pub async fn obtain(
    order: &Order,
    ca: &CaClient,
    table: &Arc<Challenges>,
    certs: &Path,
    poll: Duration,
) -> Result<Issued, AcmeError> {
    let identifiers: Vec<Identifier> = order
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let (account, stored) = account(order, ca, certs).await?;
    let mut acme_order = match account.new_order(&NewOrder::new(&identifiers)).await {
        Err(instant_acme::Error::Api(p))
            if stored && p.r#type.as_deref() == Some(ACCOUNT_UNKNOWN) =>
        {
            tracing::info!(directory = %order.directory, "the CA no longer knows our account; registering a new one");
            let account = account_fresh(order, ca, certs).await?;
            account.new_order(&NewOrder::new(&identifiers)).await?
        }
        other => other?,
    };

    let mut published = table.publish();
    let kind = match order.challenge {
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
    };
    let mut authorizations = acme_order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        let name = authz.identifier().to_string();
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(AcmeError::Authorization(name, other)),
        }
        let mut ch = authz
            .challenge(kind.clone())
            .ok_or_else(|| AcmeError::NoChallenge(order.challenge.as_str(), name.clone()))?;
        let ka = ch.key_authorization();
        match order.challenge {
            Challenge::Http01 => published.http01(&ch.token, ka.as_str()),
            Challenge::TlsAlpn01 => published.tls_alpn01(
                &name,
                challenges::tls_alpn01_cert(&name, ka.digest().as_ref())?,
            ),
        }
        ch.set_ready().await?;
    }
    let retry = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(poll);
    let status = acme_order.poll_ready(&retry).await?;
    if status != OrderStatus::Ready {
        let detail = acme_order
            .state()
            .error
            .as_ref()
            .map(|p| format!(": {p}"))
            .unwrap_or_default();
        return Err(AcmeError::Order(status, detail));
    }
    drop(published);

    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(order.domains.clone())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    acme_order.finalize_csr(csr.der()).await?;
    let chain_pem = acme_order.poll_certificate(&retry).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// The stored account of this (directory, e-mail), else a new one; true when it was stored.
async fn account(order: &Order, ca: &CaClient, certs: &Path) -> Result<(Account, bool), AcmeError> {
    let path = files::account_path(certs, order);
    if let Ok(text) = std::fs::read(&path) {
        let creds: AccountCredentials = serde_json::from_slice(&text)
            .map_err(|e| AcmeError::AccountFile(path.display().to_string(), e.to_string()))?;
        let account = Account::builder_with_http(Box::new(ca.clone()))
            .from_credentials(creds)
            .await?;
        return Ok((account, true));
    }
    Ok((account_fresh(order, ca, certs).await?, false))
}

/// Registers a new account and stores its credentials (owner-only).
async fn account_fresh(order: &Order, ca: &CaClient, certs: &Path) -> Result<Account, AcmeError> {
    let contact = order.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = Account::builder_with_http(Box::new(ca.clone()))
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            order.directory.clone(),
            None,
        )
        .await?;
    let path = files::account_path(certs, order);
    let text = serde_json::to_vec(&creds)
        .map_err(|e| AcmeError::AccountFile(path.display().to_string(), e.to_string()))?;
    files::write_atomic(&path, &text, true).map_err(AcmeError::Write)?;
    tracing::info!(directory = %order.directory, "ACME account registered");
    Ok(account)
}
