//! Per-caller admission: a token bucket of calls a second and a bound on the calls a caller has
//! open at once (streams included, until their last message). Over either bound a call is
//! refused at once with RESOURCE_EXHAUSTED naming the limit: load is shed, never queued, so one
//! caller's flood cannot hold another's calls. Knows nothing of what a call does.

use crate::callers::Caller;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The bounds of one caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallerBounds {
    pub calls_per_second: f64,
    pub calls_burst: u32,
    pub concurrent_calls_max: u32,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    bounds: CallerBounds,
    open_calls: Arc<Semaphore>,
}

/// The buckets of every caller seen, by caller id.
pub struct Limiter {
    defaults: CallerBounds,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Held for as long as the call is open.
pub type CallPermit = OwnedSemaphorePermit;

impl Limiter {
    pub fn new(defaults: CallerBounds) -> Limiter {
        Limiter {
            defaults,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn bounds_of(&self, caller: &Caller) -> CallerBounds {
        CallerBounds {
            calls_per_second: caller.limits.calls_per_second.unwrap_or(self.defaults.calls_per_second),
            calls_burst: caller.limits.calls_burst.unwrap_or(self.defaults.calls_burst),
            concurrent_calls_max: caller
                .limits
                .concurrent_calls_max
                .unwrap_or(self.defaults.concurrent_calls_max),
        }
    }

    /// Takes one call of `caller`'s bucket and one of its open-call permits, or says which
    /// bound it is over. The open mode's caller is not limited (`None`).
    pub fn admit(&self, caller: &Caller) -> Result<Option<CallPermit>, Status> {
        if caller.unlimited {
            return Ok(None);
        }
        let bounds = self.bounds_of(caller);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("limiter lock");
        let bucket = buckets.entry(caller.id.clone()).or_insert_with(|| Bucket {
            tokens: f64::from(bounds.calls_burst),
            refilled: now,
            bounds,
            open_calls: Arc::new(Semaphore::new(bounds.concurrent_calls_max as usize)),
        });
        if bucket.bounds != bounds {
            // The callers file changed this caller's bounds: start again from them.
            *bucket = Bucket {
                tokens: f64::from(bounds.calls_burst),
                refilled: now,
                bounds,
                open_calls: Arc::new(Semaphore::new(bounds.concurrent_calls_max as usize)),
            };
        }
        let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * bounds.calls_per_second).min(f64::from(bounds.calls_burst));
        bucket.refilled = now;
        if bucket.tokens < 1.0 {
            return Err(Status::resource_exhausted(format!(
                "caller {} is over its rate limit of {} calls a second (burst {}); retry later",
                caller.id, bounds.calls_per_second, bounds.calls_burst
            )));
        }
        let permit = Arc::clone(&bucket.open_calls).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "caller {} has {} calls open, its limit; retry when one has ended",
                caller.id, bounds.concurrent_calls_max
            ))
        })?;
        bucket.tokens -= 1.0;
        Ok(Some(permit))
    }
}

/// How many refusals of one kind are audited one by one: a token bucket per kind (calls
/// without a valid token, by anyone who can reach the port; each caller's calls over its own
/// limits), so that a flood cannot grow the audit log at will. Refusals over it are counted
/// instead, and the next one audited carries the count.
pub struct RefusalAudit {
    calls_per_second: f64,
    burst: u32,
    states: Mutex<HashMap<String, RefusalState>>,
}

struct RefusalState {
    tokens: f64,
    refilled: Instant,
    left_out: u64,
}

impl RefusalAudit {
    pub fn new(calls_per_second: f64, burst: u32) -> RefusalAudit {
        RefusalAudit {
            calls_per_second,
            burst,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)`: audit this refusal of kind `kind`, and say that `n` of that kind before it
    /// were left out. `None`: leave it out (it is counted). The kinds are the callers (and one
    /// for calls without a caller), so there are as many as callers.
    pub fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut states = self.states.lock().expect("refusal audit lock");
        let state = states.entry(kind.to_string()).or_insert_with(|| RefusalState {
            tokens: f64::from(self.burst),
            refilled: now,
            left_out: 0,
        });
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.calls_per_second).min(f64::from(self.burst));
        state.refilled = now;
        if state.tokens < 1.0 {
            state.left_out += 1;
            return None;
        }
        state.tokens -= 1.0;
        Some(std::mem::take(&mut state.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callers::{CallerLimits, WriterScope};

    fn caller(limits: CallerLimits) -> Caller {
        Caller {
            id: "c1".into(),
            writer: WriterScope::None,
            reader: None,
            steward: false,
            operator: true,
            limits,
            unlimited: false,
        }
    }

    const DEFAULTS: CallerBounds = CallerBounds {
        calls_per_second: 1.0,
        calls_burst: 3,
        concurrent_calls_max: 2,
    };

    #[test]
    fn the_burst_then_the_rate() {
        let limiter = Limiter::new(DEFAULTS);
        let caller = caller(CallerLimits::default());
        let admitted: Vec<bool> = (0..5).map(|_| limiter.admit(&caller).map(drop).is_ok()).collect();
        assert_eq!(admitted, [true, true, true, false, false]);
        let refused = limiter.admit(&caller).expect_err("over the rate");
        assert_eq!(
            refused.message(),
            "caller c1 is over its rate limit of 1 calls a second (burst 3); retry later"
        );
    }

    #[test]
    fn open_calls_are_bounded_until_their_permits_go() {
        let limiter = Limiter::new(DEFAULTS);
        let caller = caller(CallerLimits {
            calls_burst: Some(100),
            ..CallerLimits::default()
        });
        let first = limiter.admit(&caller).expect("first");
        let _second = limiter.admit(&caller).expect("second");
        let refused = limiter.admit(&caller).expect_err("two open");
        assert_eq!(
            refused.message(),
            "caller c1 has 2 calls open, its limit; retry when one has ended"
        );
        drop(first);
        assert!(limiter.admit(&caller).is_ok());
    }

    #[test]
    fn unauthenticated_refusals_are_audited_at_a_rate_and_the_rest_counted() {
        let audit = RefusalAudit::new(2.0, 3);
        let start = Instant::now();
        let burst: Vec<Option<u64>> = (0..5).map(|_| audit.admit("", start)).collect();
        assert_eq!(burst, [Some(0), Some(0), Some(0), None, None]);
        // Another kind has its own bucket.
        assert_eq!(audit.admit("flood", start), Some(0));
        // Half a second later one more is audited, saying two were left out.
        let later = start + std::time::Duration::from_millis(500);
        assert_eq!(audit.admit("", later), Some(2));
        assert_eq!(audit.admit("", later), None);
        assert_eq!(audit.admit("", later + std::time::Duration::from_secs(10)), Some(1));
    }

    #[test]
    fn the_open_mode_is_not_limited() {
        let limiter = Limiter::new(DEFAULTS);
        let open = Caller::open();
        for _ in 0..10 {
            assert!(limiter.admit(&open).expect("admitted").is_none());
        }
    }
}
