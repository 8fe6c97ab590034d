//! Rate-limit counting shared by every vane that points at one Redis (`RATELIMIT_REDIS_URL`):
//! one atomic round trip per decision (a script that counts and starts the window), within a
//! small time budget. When Redis is slow or down the decision fails open (the limit is a
//! protection, not an outage), counted in a metric and logged once per change of state; the
//! connection manager reconnects with backoff on its own.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Counts a hit and starts the window on the first one; a key left without expiry (by a crash
/// between the two calls of an older client) is given one. Returns the count.
const HIT: &str = r"
local c = redis.call('INCR', KEYS[1])
if c == 1 or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return c
";

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

pub struct SharedCounter {
    conn: ConnectionManager,
    script: redis::Script,
    budget: Duration,
    state: AtomicU8,
    /// Where the URL points, without credentials (for log lines).
    target: String,
}

impl SharedCounter {
    /// Connects lazily (the first decision connects); must run inside a tokio runtime, whose
    /// tasks then drive the connection.
    pub fn new(url: &str, budget: Duration) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let target = client.get_connection_info().addr().to_string();
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(budget))
            .set_number_of_retries(6)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(5));
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client, cfg)?,
            script: redis::Script::new(HIT),
            budget,
            state: AtomicU8::new(UNKNOWN),
            target,
        })
    }

    /// True while `key` has used at most `limit` hits in its `window`; `None` when Redis did not
    /// answer within the budget (the caller fails open).
    pub async fn hit(&self, window: Duration, key: &str, limit: u64) -> Option<bool> {
        let name = format!("vane:rl:{}:{key}", window.as_secs());
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let mut call = self.script.key(name);
        call.arg(ms);
        let answer = tokio::time::timeout(self.budget, call.invoke_async::<u64>(&mut conn)).await;
        match answer {
            Ok(Ok(count)) => {
                self.set(UP, None);
                Some(count <= limit)
            }
            Ok(Err(e)) => {
                self.fail("error", &e.to_string());
                None
            }
            Err(_) => {
                self.fail("timeout", &format!("no answer within {:?}", self.budget));
                None
            }
        }
    }

    fn fail(&self, reason: &'static str, why: &str) {
        metrics::counter!("vane_ratelimit_redis_failures_total", "reason" => reason).increment(1);
        self.set(DOWN, Some(why));
    }

    fn set(&self, new: u8, why: Option<&str>) {
        let old = self.state.swap(new, Ordering::Relaxed);
        if old == new {
            return;
        }
        metrics::gauge!("vane_ratelimit_redis_up").set(if new == UP { 1.0 } else { 0.0 });
        match (new, why) {
            (UP, _) if old == DOWN => {
                tracing::info!(redis = %self.target, "shared rate limits: Redis answers again; counting there")
            }
            (UP, _) => {
                tracing::info!(redis = %self.target, "shared rate limits: counting in Redis")
            }
            (_, why) => tracing::warn!(
                redis = %self.target,
                "shared rate limits: Redis unavailable ({}); failing open until it answers",
                why.unwrap_or("?")
            ),
        }
    }
}
