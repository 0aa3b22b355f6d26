//! Per-caller request rates: each caller (a token's subject, else the
//! client's address) may send a sustained number of requests per minute
//! with a burst on top; past it a request is answered `RATE_LIMITED` with
//! `Retry-After`, before anything is parsed. GCRA by `governor`; callers
//! not seen for a while are forgotten by a sweep, so the table stays the
//! size of the active callers.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How many requests a caller may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per minute; 0 turns limiting off.
    pub per_minute: u32,
    /// Requests a caller may make at once beyond the sustained rate.
    pub burst: u32,
}

impl Default for RateLimit {
    /// Generous: 6,000 a minute (100 a second) with bursts of 500, far
    /// above what one front end or till sends, well below what floods a server.
    fn default() -> Self {
        RateLimit { per_minute: 6_000, burst: 500 }
    }
}

/// Who a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller<'a> {
    /// A token's subject.
    Subject(&'a str),
    /// A caller without a token, by address.
    Address(IpAddr),
}

/// The limiter shared by every request of a server. Callers are kept by a
/// 64-bit digest under a key of this process's own, so a request's check
/// copies nothing (and no one can aim two subjects at one bucket).
#[derive(Clone)]
pub struct RateLimiter {
    limiter: Option<Arc<DefaultKeyedRateLimiter<u64>>>,
    digest: std::collections::hash_map::RandomState,
}

impl RateLimiter {
    /// A limiter for `limit` (none when `per_minute` is 0).
    pub fn new(limit: RateLimit) -> Self {
        let limiter = NonZeroU32::new(limit.per_minute).map(|per_minute| {
            let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
            Arc::new(governor::RateLimiter::dashmap(Quota::per_minute(per_minute).allow_burst(burst)))
        });
        RateLimiter { limiter, digest: std::collections::hash_map::RandomState::new() }
    }

    /// `Ok` if `caller` may make a request now, else how long until it may.
    pub fn check(&self, caller: Caller<'_>) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter
            .check_key(&self.digest.hash_one(caller))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets callers whose limit has fully recovered; run now and then.
    pub fn sweep(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Sweeps every minute for as long as the limiter lives.
    pub fn sweep_every_minute(&self) {
        let Some(limiter) = &self.limiter else { return };
        let weak = Arc::downgrade(limiter);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    let Some(limiter) = weak.upgrade() else { return };
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_past_its_burst_waits_and_others_do_not() {
        let limiter = RateLimiter::new(RateLimit { per_minute: 60, burst: 3 });
        let ann = Caller::Subject("ann");
        for _ in 0..3 {
            assert_eq!(limiter.check(ann), Ok(()));
        }
        let wait = limiter.check(ann).expect_err("the fourth waits");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(limiter.check(Caller::Subject("bob")), Ok(()));
        assert_eq!(limiter.check(Caller::Address("127.0.0.1".parse().unwrap())), Ok(()));
        limiter.sweep();
    }

    #[test]
    fn zero_turns_limiting_off() {
        let limiter = RateLimiter::new(RateLimit { per_minute: 0, burst: 0 });
        let ann = Caller::Subject("ann");
        assert!((0..10_000).all(|_| limiter.check(ann).is_ok()));
    }
}
