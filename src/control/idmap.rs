//! Hash maps keyed by identifiers this process hands out itself: binding numbers (a counter)
//! and our branches (a keyed permutation of a counter). Nobody outside chooses these keys, so
//! the default SipHash's defence against chosen colliding keys buys nothing here, and it was
//! most of the cost of each lookup; a map keyed by what a UE or the core sends (an IMPI, a
//! Call-ID) keeps the default hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map from one of our own identifiers.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Fibonacci hashing of a `u64`: one multiplication by an odd constant spreads a counter over
/// the high bits (hashbrown's tag) and keeps the low bits (its bucket) a permutation.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        // (only `u64` keys use this hasher; any other input still hashes, byte by byte)
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_spreads_over_the_tag_bits_and_keeps_distinct_buckets() {
        let hash = |n: u64| {
            let mut h = IdHasher::default();
            h.write_u64(n);
            h.finish()
        };
        // hashbrown's tag: the top 7 bits; 4,096 consecutive ids use every tag value
        let tags: std::collections::HashSet<u64> = (1..=4096).map(|n| hash(n) >> 57).collect();
        assert_eq!(tags.len(), 128);
        // its bucket: the low bits; consecutive ids never share one in a 4,096-bucket table
        let buckets: std::collections::HashSet<u64> = (0..4096).map(|n| hash(n) & 4095).collect();
        assert_eq!(buckets.len(), 4096);
        let mut m: IdMap<u64> = IdMap::default();
        for n in 0..10_000 {
            m.insert(n, n * 2);
        }
        assert!((0..10_000).all(|n| m.get(&n) == Some(&(n * 2))));
    }
}
