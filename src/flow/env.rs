//! What a flow run needs from the running gateway, and nothing more: the template result
//! limit, the two rate-limit tables, the external plugin caller and the flow deadline. It is
//! a plain value, so a flow runs in a unit test as it runs behind a listener.

use std::time::Duration;

use crate::plugins::external::Caller;
use crate::plugins::ratelimit::RateLimiter;
use crate::plugins::shared_limits::SharedCounter;
use crate::ticks::Ticks;

pub struct Env {
    /// `MAX_TEMPLATE_RESULT`: the longest text a template may render.
    pub max_template_result: usize,
    /// `internal.common.ratelimit.sec`'s table.
    pub rate_sec: RateLimiter,
    /// `internal.common.ratelimit.min`'s table.
    pub rate_min: RateLimiter,
    /// Calls external plugins (HTTP, Unix socket, command) with their circuit breaker.
    pub plugins: Caller,
    /// `FLOW_EXECUTION_TIMEOUT_SECS`: a run that has not decided by then fails.
    pub timeout: Duration,
    /// The clock the deadline is counted on (an eighth of it per tick): a run that waits
    /// takes no timer of its own.
    pub ticks: &'static Ticks,
    /// `RATELIMIT_REDIS_URL`: both rate limits count in Redis instead of the tables above
    /// (set once at start by [`Env::share_counts`]).
    pub shared: std::sync::OnceLock<SharedCounter>,
}

impl Env {
    /// The environment the settings describe, for the flows of `config_dir`.
    pub fn new(settings: &crate::settings::Settings, config_dir: &std::path::Path) -> Self {
        let limiter = |window| {
            RateLimiter::new(
                window,
                settings.max_limiter_memory,
                settings.ratelimit_key_max_len,
            )
        };
        Self {
            max_template_result: settings.max_template_result,
            rate_sec: limiter(Duration::from_secs(1)),
            rate_min: limiter(Duration::from_secs(60)),
            plugins: {
                let mut c = Caller::new(config_dir, settings.plugin_quiet, settings.flow_timeout);
                c.skip_tls_verify = settings.plugin_skip_tls_verify;
                c
            },
            timeout: settings.flow_timeout,
            ticks: Ticks::for_wait(settings.flow_timeout, 8),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Counts rate limits in the Redis at `url` from now on; inside a tokio runtime.
    pub fn share_counts(&self, url: &str, budget: Duration) -> redis::RedisResult<()> {
        let counter = SharedCounter::new(url, budget)?;
        let _ = self.shared.set(counter);
        Ok(())
    }

    /// A rate-limit decision: in Redis when shared (failing open when it does not answer),
    /// else in this process's table of `window`.
    pub async fn rate_hit(&self, window: Duration, key: &str, limit: u64) -> bool {
        match self.shared.get() {
            Some(shared) if key.len() <= self.rate_sec.max_key_len() => {
                shared.hit(window, key, limit).await.unwrap_or(true)
            }
            _ => self.rate_hit_local(window, key, limit),
        }
    }

    /// A decision in this process's table of `window`.
    pub fn rate_hit_local(&self, window: Duration, key: &str, limit: u64) -> bool {
        if window >= Duration::from_secs(60) {
            self.rate_min.hit(key, limit)
        } else {
            self.rate_sec.hit(key, limit)
        }
    }
}
