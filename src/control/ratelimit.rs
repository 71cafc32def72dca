//! Token buckets keyed by source address or IMPI, for the unprotected REGISTERs the registration
//! thread takes from anyone.
//!
//! Owns: one bucket per key with bounded memory. A full table first forgets the buckets that
//! have refilled (they hold nothing a fresh bucket would not); if every bucket is still in use,
//! a new key is refused: under a flood from that many sources, keys already known keep their
//! share rather than being evicted by the flood.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// `burst` requests at once, then `per_second` on average, per key; at most `max_keys` keys.
#[derive(Debug)]
pub struct RateLimiter<K> {
    buckets: HashMap<K, Bucket>,
    burst: f64,
    per_second: f64,
    max_keys: usize,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// New limits (a reload): buckets keep their tokens, capped at the new burst.
    pub fn set_limits(&mut self, burst: u32, per_second: f64) {
        self.burst = burst as f64;
        self.per_second = per_second;
    }

    pub fn new(burst: u32, per_second: f64, max_keys: usize) -> RateLimiter<K> {
        RateLimiter {
            buckets: HashMap::new(),
            burst: burst as f64,
            per_second,
            max_keys,
        }
    }

    /// Whether a request from `key` may go on now (and takes its token).
    pub fn allow<Q>(&mut self, key: &Q, now: Instant) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let (burst, rate) = (self.burst, self.per_second);
        if let Some(b) = self.buckets.get_mut(key) {
            let dt = now.saturating_duration_since(b.at).as_secs_f64();
            let tokens = (b.tokens + dt * rate).min(burst);
            let ok = tokens >= 1.0;
            b.tokens = if ok { tokens - 1.0 } else { tokens };
            b.at = now;
            return ok;
        }
        if self.buckets.len() >= self.max_keys {
            self.buckets.retain(|_, b| {
                let dt = now.saturating_duration_since(b.at).as_secs_f64();
                b.tokens + dt * rate < burst
            });
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        self.buckets.insert(
            key.to_owned(),
            Bucket {
                tokens: self.burst - 1.0,
                at: now,
            },
        );
        true
    }

    /// Keys tracked (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate_and_bounded_keys() {
        let t0 = Instant::now();
        let mut l: RateLimiter<u32> = RateLimiter::new(3, 1.0, 2);
        assert!((0..3).all(|_| l.allow(&1, t0)));
        assert!(!l.allow(&1, t0));
        assert!(l.allow(&1, t0 + Duration::from_secs(1)));
        assert!(l.allow(&2, t0));
        // both keys in use: a third is refused, not let in by evicting one
        assert!(!l.allow(&3, t0));
        assert_eq!(l.len(), 2);
        // once refilled, their buckets are forgotten to make room
        assert!(l.allow(&3, t0 + Duration::from_secs(10)));
    }
}
