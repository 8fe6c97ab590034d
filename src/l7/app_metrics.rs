//! The metric handles of one application (`vane_request_duration_seconds{app}`,
//! `vane_requests_total{app,status}`), shared by its connections. Looking them up in the
//! registry for each new connection (label strings built, hashed, searched) cost about a
//! twentieth of a request on a connection of its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Histogram};

/// Applications a thread keeps handles for; the names come from the config, so this is only
/// a guard (past it, a connection looks its handles up itself).
const MAX_APPS: usize = 256;
/// Status codes an application keeps a counter handle for.
const MAX_STATUSES: usize = 32;

#[derive(Debug)]
pub struct AppMetrics {
    /// The application's name (shared with every request's KV).
    pub name: Arc<str>,
    duration: Histogram,
    by_status: Mutex<Vec<(u16, Counter)>>,
}

thread_local! {
    static APPS: RefCell<HashMap<Arc<str>, Arc<AppMetrics>, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

impl AppMetrics {
    /// The handles of `app`, from this thread's table when it has them.
    pub fn of(app: &str) -> Arc<Self> {
        APPS.with(|apps| {
            let mut apps = apps.borrow_mut();
            if let Some(m) = apps.get(app) {
                return m.clone();
            }
            let name: Arc<str> = Arc::from(app);
            let m = Arc::new(Self {
                duration: metrics::histogram!("vane_request_duration_seconds", "app" => app.to_string()),
                by_status: Mutex::new(Vec::new()),
                name: name.clone(),
            });
            if apps.len() < MAX_APPS {
                apps.insert(name, m.clone());
            }
            m
        })
    }

    /// One request's time, in seconds.
    pub fn record(&self, secs: f64) {
        self.duration.record(secs);
    }

    /// One more request answered with `code` (0: aborted).
    pub fn count(&self, code: u16) {
        let mut cache = self.by_status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = cache.iter().find(|(s, _)| *s == code) {
            c.increment(1);
            return;
        }
        let label = if code == 0 {
            "aborted".to_string()
        } else {
            code.to_string()
        };
        let c = metrics::counter!("vane_requests_total", "app" => self.name.to_string(), "status" => label);
        c.increment(1);
        if cache.len() < MAX_STATUSES {
            cache.push((code, c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_of_handles_per_application_and_thread() {
        let a = AppMetrics::of("app-metrics-test-a");
        let again = AppMetrics::of("app-metrics-test-a");
        let b = AppMetrics::of("app-metrics-test-b");
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(&*b.name, "app-metrics-test-b");
        for code in [200, 200, 404, 0] {
            a.count(code);
        }
        let kept = a.by_status.lock().expect("lock").len();
        assert_eq!(kept, 3, "one handle per status");
    }
}
