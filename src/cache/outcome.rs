//! What the cache did with a request: one enum drives `Cache-Status` (RFC 9211), the
//! `result` label of `floodgate_cache_lookups_total`, and logs.

/// What the cache did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served a fresh stored response without contacting the origin.
    Hit,
    /// Served a stale response while one background refresh runs (RFC 5861 §3).
    StaleWhileRevalidate,
    /// Served a stale response because the origin failed (RFC 5861 §4).
    StaleIfError,
    /// A stale response was validated with the origin (304) and served.
    Revalidated,
    /// Nothing stored for the URL: fetched from the origin.
    Miss,
    /// Responses stored for the URL, none for this request's `Vary` headers.
    VaryMiss,
    /// Waited for another request's fetch of the same URL and was served from it.
    Coalesced,
    /// The URL was recently found uncacheable: passed straight to the origin.
    HitForMiss,
    /// The method is not cacheable (POST, PUT, …): passed to the origin.
    Method,
    /// The request itself rules the cache out (`Authorization`, `Range`).
    Request,
}

/// The `result` label values, in the order of [`CacheOutcome::result_index`].
pub const RESULTS: [&str; 5] = ["hit", "miss", "stale", "bypass", "coalesced"];

impl CacheOutcome {
    /// A stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::StaleWhileRevalidate => "stale-while-revalidate",
            CacheOutcome::StaleIfError => "stale-if-error",
            CacheOutcome::Revalidated => "revalidated",
            CacheOutcome::Miss => "miss",
            CacheOutcome::VaryMiss => "vary-miss",
            CacheOutcome::Coalesced => "coalesced",
            CacheOutcome::HitForMiss => "hit-for-miss",
            CacheOutcome::Method => "method",
            CacheOutcome::Request => "request",
        }
    }

    /// Index into [`RESULTS`]: the low-cardinality metric label.
    pub fn result_index(self) -> usize {
        match self {
            CacheOutcome::Hit => 0,
            CacheOutcome::Miss | CacheOutcome::VaryMiss | CacheOutcome::Revalidated => 1,
            CacheOutcome::StaleWhileRevalidate | CacheOutcome::StaleIfError => 2,
            CacheOutcome::HitForMiss | CacheOutcome::Method | CacheOutcome::Request => 3,
            CacheOutcome::Coalesced => 4,
        }
    }

    /// The `Cache-Status` field value (RFC 9211 §2).
    ///
    /// `ttl` is the remaining freshness in seconds, negative when stale (§2.4);
    /// `stored` says the response was accepted for storage (§2.6); `fwd_status` is the
    /// origin's status when it was contacted (§2.3). `hit` means the origin was not
    /// contacted for this request (§2.1), so stale-if-error, where it was contacted and
    /// failed, is `fwd=stale` with a `detail`.
    pub fn cache_status(self, ttl: Option<i64>, stored: bool, fwd_status: Option<u16>) -> String {
        let mut s = String::from("floodgate");
        let head = match self {
            CacheOutcome::Hit => "; hit",
            CacheOutcome::StaleWhileRevalidate => "; hit",
            CacheOutcome::StaleIfError | CacheOutcome::Revalidated => "; fwd=stale",
            CacheOutcome::Miss | CacheOutcome::HitForMiss => "; fwd=uri-miss",
            CacheOutcome::VaryMiss => "; fwd=vary-miss",
            CacheOutcome::Coalesced => "; fwd=uri-miss; collapsed",
            CacheOutcome::Method => "; fwd=method",
            CacheOutcome::Request => "; fwd=request",
        };
        s.push_str(head);
        if let Some(st) = fwd_status {
            s.push_str(&format!("; fwd-status={st}"));
        }
        if stored {
            s.push_str("; stored");
        }
        if let Some(t) = ttl {
            s.push_str(&format!("; ttl={t}"));
        }
        match self {
            CacheOutcome::StaleWhileRevalidate
            | CacheOutcome::StaleIfError
            | CacheOutcome::HitForMiss => {
                s.push_str("; detail=");
                s.push_str(self.as_str());
            }
            _ => {}
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_status_follows_rfc_9211() {
        assert_eq!(
            CacheOutcome::Hit.cache_status(Some(1), false, None),
            "floodgate; hit; ttl=1"
        );
        assert_eq!(
            CacheOutcome::Miss.cache_status(None, true, None),
            "floodgate; fwd=uri-miss; stored"
        );
        assert_eq!(
            CacheOutcome::StaleIfError.cache_status(Some(-3), false, Some(503)),
            "floodgate; fwd=stale; fwd-status=503; ttl=-3; detail=stale-if-error"
        );
        assert_eq!(CacheOutcome::Coalesced.result_index(), 4);
    }
}
