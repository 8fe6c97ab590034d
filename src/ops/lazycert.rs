//! Vane 0.9.2's LazyCert integration (`lazycert.<ext>`): a LazyCert service runs the ACME
//! orders and drops the pairs into `certs/`; vane polls its challenge list, answers the http-01
//! ones on every plaintext path (as built-in ACME does), and reports each as solved. Unlike
//! 0.9.2, a challenge LazyCert no longer lists is withdrawn, so the table stays bounded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde::Deserialize;

use crate::acme::client::CaClient;
use crate::config::lazycert::LazyCert;
use crate::runtime::Runtime;

#[derive(Debug, Deserialize)]
struct Envelope {
    data: Listing,
}

#[derive(Debug, Deserialize)]
struct Listing {
    #[serde(default)]
    challenges: Vec<Challenge>,
}

#[derive(Debug, Deserialize)]
struct Challenge {
    id: String,
    #[serde(default)]
    domain: String,
    #[serde(rename = "type")]
    kind: String,
    token: String,
    key_authorization: String,
}

/// Polls until the task is dropped (a config change or a restart of `registries/acme`).
pub async fn poll(rt: Arc<Runtime>, cfg: LazyCert) {
    let ca = match CaClient::new(None, Duration::from_secs(10)) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("LazyCert: {e}");
            return;
        }
    };
    match ca
        .call(Method::GET, &format!("{}/health", cfg.url), None)
        .await
    {
        Ok((s, _)) if (200..300).contains(&s) => {
            tracing::info!("LazyCert at {} is reachable", cfg.url)
        }
        Ok((s, _)) => tracing::warn!("LazyCert health check at {} answered {s}", cfg.url),
        Err(e) => tracing::warn!("LazyCert health check at {} failed: {e}", cfg.url),
    }
    let mut published = rt.acme.challenges.publish();
    // Challenge id -> token, for the ones answered now.
    let mut known: HashMap<String, String> = HashMap::new();
    let mut failing = false;
    let mut tick = tokio::time::interval(Duration::from_secs(cfg.poll_interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let listed = match list(&ca, &cfg).await {
            Ok(l) => {
                if failing {
                    tracing::info!("LazyCert at {} answers again", cfg.url);
                }
                failing = false;
                l
            }
            Err(why) => {
                if !failing {
                    tracing::warn!("LazyCert challenges from {}: {why}", cfg.url);
                }
                failing = true;
                continue;
            }
        };
        let current: Vec<&Challenge> = listed.iter().filter(|c| c.kind == "http-01").collect();
        known.retain(|id, token| {
            let still = current.iter().any(|c| &c.id == id);
            if !still {
                published.withdraw_http01(token);
            }
            still
        });
        for c in current {
            if known.contains_key(&c.id) || c.token.is_empty() {
                continue;
            }
            published.http01(&c.token, &c.key_authorization);
            let solved = format!("{}/challenges/{}/solved", cfg.url, c.id);
            match ca.call(Method::POST, &solved, Some(&cfg.token)).await {
                Ok((s, _)) if (200..300).contains(&s) => {
                    tracing::info!("LazyCert: answering http-01 for {} ({})", c.domain, c.id);
                    known.insert(c.id.clone(), c.token.clone());
                }
                other => {
                    // As 0.9.2: an unreported challenge is forgotten and tried again.
                    tracing::warn!("LazyCert: reporting {} as solved failed: {other:?}", c.id);
                    published.withdraw_http01(&c.token);
                }
            }
        }
    }
}

/// Why a challenge listing failed, by side.
#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error("{0}")]
    Unreachable(#[from] crate::acme::client::CaError),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("unexpected answer: {0}")]
    Answer(#[from] serde_json::Error),
}

async fn list(ca: &CaClient, cfg: &LazyCert) -> Result<Vec<Challenge>, ListError> {
    let url = format!("{}/challenges", cfg.url);
    let (status, body) = ca.call(Method::GET, &url, Some(&cfg.token)).await?;
    if !(200..300).contains(&status) {
        return Err(ListError::Status(status));
    }
    Ok(serde_json::from_slice::<Envelope>(&body)?.data.challenges)
}
