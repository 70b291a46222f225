//! What the rate limit layer tells [`crate::respond`] when it refuses a request.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

/// Share of the wait added at random to `Retry-After`, so clients refused in the same
/// instant come back over a spread of seconds instead of in one wave; a tenth keeps
/// the answer close to the truth.
pub const RETRY_JITTER_FRACTION: f64 = 0.1;

/// A request refused by one limit; carries what the 429 answer must say.
#[derive(Debug, Clone, thiserror::Error)]
#[error("over the rate limit {limit:?}")]
pub struct RateLimited {
    /// The limit that refused (its name), for headers, logs and metrics.
    pub limit: Arc<str>,
    /// The pre-rendered `RateLimit-Policy` field: `"per-ip";q=40;w=2`.
    pub policy: HeaderValue,
    /// Seconds for `Retry-After` and the `t` parameter of `RateLimit`: never 0.
    pub retry_after_secs: u64,
}

impl RateLimited {
    /// The `RateLimit` field for this refusal: `"per-ip";r=0;t=3`.
    pub fn rate_limit_field(&self) -> HeaderValue {
        HeaderValue::try_from(format!(
            "\"{}\";r=0;t={}",
            self.limit, self.retry_after_secs
        ))
        .expect("limit names are checked to be header-safe")
    }
}

/// `Retry-After` seconds for a wait: rounded up, never 0, plus up to
/// [`RETRY_JITTER_FRACTION`] of it (at least one second) at random.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let base = (wait.as_secs_f64().ceil() as u64).max(1);
    base + rand::random_range(0..=max_jitter(base))
}

/// The largest jitter [`retry_after_secs`] adds to `base` seconds.
pub fn max_jitter(base: u64) -> u64 {
    ((base as f64 * RETRY_JITTER_FRACTION).ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_rounded_up_never_zero_and_jittered_a_little() {
        for _ in 0..200 {
            let a = retry_after_secs(Duration::from_millis(1));
            assert!((1..=2).contains(&a), "{a}");
            let b = retry_after_secs(Duration::from_millis(29_100));
            assert!((30..=33).contains(&b), "{b}");
        }
        let seen: std::collections::HashSet<u64> =
            (0..200).map(|_| retry_after_secs(Duration::ZERO)).collect();
        assert_eq!(seen.len(), 2, "jitter should spread answers: {seen:?}");
    }
}
