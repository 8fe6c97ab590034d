//! `registries/acme`: keeps every order of `acme.<ext>` served by a valid pair (and runs the
//! LazyCert poller of `lazycert.<ext>`, `ops/lazycert.rs`). One task per
//! order sleeps until its pair is due (or orders at once when there is none), orders, installs
//! the pair in `certs/` and reloads the store; a failure leaves the old pair serving and is
//! retried with jittered backoff (the CA's `Retry-After` as a floor). A config change or a
//! crash of the actor restarts the tasks from what is on disk.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vane_actors::service::{AbortOnDrop, Guard, Service, StartFuture};

use crate::acme::client::CaClient;
use crate::acme::order::{self, AcmeError};
use crate::acme::{files, plan, Renewal};
use crate::config::acme::Order;
use crate::runtime::Runtime;

/// The wait after a rate-limit answer that came without `Retry-After`.
const RATE_LIMIT_FLOOR: Duration = Duration::from_secs(3600);

pub struct AcmeWorker(pub Arc<Runtime>);

impl Service for AcmeWorker {
    fn start(&self) -> StartFuture {
        let rt = self.0.clone();
        Box::pin(async move {
            let orders = rt.config.load().acme.doc.orders.clone();
            rt.acme
                .renewals
                .retain(|id, _| orders.iter().any(|o| o.domains.iter().any(|d| d == id)));
            let mut tasks: Vec<AbortOnDrop> = orders
                .into_iter()
                .map(|o| AbortOnDrop(tokio::spawn(keep(rt.clone(), o))))
                .collect();
            // 0.9.2's LazyCert: another ACME client whose challenges vane answers.
            if let Some(l) = rt.config.load().lazycert.doc.clone().filter(|l| l.enabled) {
                tasks.push(AbortOnDrop(tokio::spawn(super::lazycert::poll(
                    rt.clone(),
                    l,
                ))));
            }
            Ok(Guard::new(tasks))
        })
    }
}

/// Keeps one order's pair valid, for as long as the task lives.
async fn keep(rt: Arc<Runtime>, order: Order) {
    let certs = rt.config.dir().join("certs");
    let renew_before = Duration::from_secs_f64(order.renew_before_days * 86_400.0);
    let mut failures = 0u32;
    let mut last_error = None;
    loop {
        let due = files::existing(&certs, &order).map_or_else(SystemTime::now, |(nb, na)| {
            plan::renew_at(nb, na, renew_before)
        });
        publish(&rt, &order, due, failures, last_error.clone());
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        let names = order.domains.join(", ");
        let (ca, outcome) = attempt(&rt, &order, &certs).await;
        match outcome {
            Ok(()) => {
                failures = 0;
                last_error = None;
                metrics::counter!("vane_acme_orders_total", "result" => "issued").increment(1);
                tracing::info!(directory = %order.directory, "ACME: certificate issued for [{names}]");
                let rt2 = rt.clone();
                let _ = tokio::task::spawn_blocking(move || rt2.reload_certs()).await;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics::counter!("vane_acme_orders_total", "result" => "failed").increment(1);
                let told = ca
                    .as_ref()
                    .and_then(CaClient::take_retry_after)
                    .or_else(|| {
                        (e.problem_type() == Some(order::RATE_LIMITED)).then_some(RATE_LIMIT_FLOOR)
                    });
                let s = rt.settings;
                let wait = plan::retry_delay(failures, s.acme_retry_min, s.acme_retry_max, told);
                tracing::warn!(directory = %order.directory, "ACME: order for [{names}] failed ({failures} in a row): {e}; the current pair keeps serving; retrying in {wait:.0?}");
                last_error = Some(e.to_string());
                publish(
                    &rt,
                    &order,
                    SystemTime::now() + wait,
                    failures,
                    last_error.clone(),
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One order attempt under the CA client it used (for its `Retry-After`).
async fn attempt(
    rt: &Runtime,
    order: &Order,
    certs: &std::path::Path,
) -> (Option<CaClient>, Result<(), AcmeError>) {
    let s = rt.settings;
    let ca = match CaClient::new(order.ca_bundle.as_deref(), s.acme_timeout) {
        Ok(c) => c,
        Err(e) => return (None, Err(e.into())),
    };
    let issued = order::obtain(order, &ca, &rt.acme.challenges, certs, s.acme_timeout).await;
    let done = issued.and_then(|i| {
        files::install(certs, order, &i.chain_pem, &i.key_pem).map_err(AcmeError::Write)
    });
    (Some(ca), done)
}

fn publish(
    rt: &Runtime,
    order: &Order,
    next: SystemTime,
    failures: u32,
    last_error: Option<String>,
) {
    let at = next
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    for name in &order.domains {
        metrics::gauge!("vane_acme_renewal_timestamp_seconds", "certificate" => name.clone())
            .set(at);
        rt.acme.renewals.insert(
            name.clone(),
            Renewal {
                next,
                failures,
                last_error: last_error.clone(),
            },
        );
    }
}
