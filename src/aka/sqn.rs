//! Sequence numbers: the 48-bit SQN, the HSS-side generator and the UE-side freshness state.
//!
//! This file owns SQN arithmetic and both ends' SQN policy (TS 33.102 §6.3.2, §6.3.5, Annex C).
//!
//! **HSS (generator).** TS 33.102 Annex C.1.1 splits SQN into `SEQ ‖ IND`. We keep the split
//! implicit: [`SqnGenerator`] hands out `SQN, SQN + step, SQN + 2·step, …`. With the default
//! [`SqnGenerator::DEFAULT_STEP`] = 32 = 2^5 this is Annex C.3.2's "increment SEQ by one, IND
//! length 5, IND = 0". A step of 1 gives a plain counter. After a resynchronisation the HSS takes
//! SQN_MS from the AUTS and continues at `SQN_MS + step` (TS 33.102 §6.3.5: "the HE/AuC
//! resets the value of the counter SQN_HE to SQN_MS"; the next vector is then one step on).
//! SQN never wraps: past 2^48 − 1 the generator reports [`AkaError::SqnExhausted`].
//!
//! **UE (freshness).** TS 33.102 Annex C.2 describes an array of SEQ values indexed by IND
//! plus an age limit L. We use the simplest scheme allowed by §6.3.3 ("the USIM verifies that
//! SQN is in the correct range"): accept a SQN only if it is **strictly greater than the highest
//! SQN accepted so far**, then remember it. A fresh USIM starts at 0, so SQN 0 is never accepted.
//! A vector that arrives out of order is therefore rejected with a sync failure; with one
//! outstanding challenge per registration (IMS) that does not happen in practice.

use super::AkaError;

/// A 48-bit sequence number (TS 33.102 §6.3.2). Invariant: `value() < 2^48`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sqn(u64);

impl Sqn {
    /// The largest SQN, 2^48 − 1.
    pub const MAX: Sqn = Sqn((1 << 48) - 1);
    /// SQN zero, the initial UE state.
    pub const ZERO: Sqn = Sqn(0);

    /// A SQN from an integer; [`AkaError::SqnOutOfRange`] if it does not fit in 48 bits.
    pub const fn new(value: u64) -> Result<Sqn, AkaError> {
        if value > Self::MAX.0 {
            Err(AkaError::SqnOutOfRange)
        } else {
            Ok(Sqn(value))
        }
    }

    /// A SQN from its 6-byte big-endian encoding (as in AUTN and AUTS).
    pub const fn from_bytes(b: [u8; 6]) -> Sqn {
        Sqn((b[0] as u64) << 40
            | (b[1] as u64) << 32
            | (b[2] as u64) << 24
            | (b[3] as u64) << 16
            | (b[4] as u64) << 8
            | b[5] as u64)
    }

    /// The 6-byte big-endian encoding.
    pub const fn to_bytes(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }

    /// The integer value.
    pub const fn value(self) -> u64 {
        self.0
    }

    /// `self + n`, or `None` past [`Sqn::MAX`].
    pub const fn checked_add(self, n: u64) -> Option<Sqn> {
        match self.0.checked_add(n) {
            Some(v) if v <= Self::MAX.0 => Some(Sqn(v)),
            _ => None,
        }
    }
}

/// HSS-side per-subscriber SQN counter (see the module docs for the scheme).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqnGenerator {
    next: Sqn,
    step: u64,
}

impl SqnGenerator {
    /// 2^5: TS 33.102 Annex C.3.2 with a 5-bit IND that is always 0.
    pub const DEFAULT_STEP: u64 = 32;

    /// A generator whose next SQN is `next`, advancing by `step` (a step of 0 is taken as 1).
    pub const fn new(next: Sqn, step: u64) -> SqnGenerator {
        SqnGenerator {
            next,
            step: if step == 0 { 1 } else { step },
        }
    }

    /// A generator starting at `DEFAULT_STEP` (so the first SQN is already > a fresh USIM's 0).
    pub const fn with_default_step() -> SqnGenerator {
        SqnGenerator::new(Sqn(Self::DEFAULT_STEP), Self::DEFAULT_STEP)
    }

    /// The SQN that the next call to [`SqnGenerator::next_sqn`] returns; `None` once exhausted.
    pub const fn peek(&self) -> Option<Sqn> {
        if self.next.0 > Sqn::MAX.0 {
            None
        } else {
            Some(self.next)
        }
    }

    /// The increment between consecutive SQNs.
    pub const fn step(&self) -> u64 {
        self.step
    }

    /// Takes the next SQN and advances. [`AkaError::SqnExhausted`] once SQN would pass 2^48 − 1
    /// (the last SQN is still handed out; the generator then stays exhausted).
    pub fn next_sqn(&mut self) -> Result<Sqn, AkaError> {
        let cur = self.next;
        if cur.0 > Sqn::MAX.0 {
            return Err(AkaError::SqnExhausted);
        }
        // Park one past MAX (outside the Sqn invariant, never handed out) when exhausted.
        self.next = Sqn(cur.0.saturating_add(self.step));
        Ok(cur)
    }

    /// Resynchronisation (TS 33.102 §6.3.5): continue at `SQN_MS + step`.
    pub fn resync(&mut self, sqn_ms: Sqn) -> Result<(), AkaError> {
        self.next = sqn_ms
            .checked_add(self.step)
            .ok_or(AkaError::SqnExhausted)?;
        Ok(())
    }
}

impl Default for SqnGenerator {
    fn default() -> Self {
        Self::with_default_step()
    }
}

/// UE-side (USIM) SQN state: the highest SQN accepted so far (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UeSqnState {
    highest: Sqn,
}

impl UeSqnState {
    /// A state that has already accepted `highest`.
    pub const fn new(highest: Sqn) -> UeSqnState {
        UeSqnState { highest }
    }

    /// SQN_MS: the highest SQN accepted so far (what an AUTS reports).
    pub const fn highest(&self) -> Sqn {
        self.highest
    }

    /// Whether `sqn` is fresh: strictly greater than every SQN accepted so far.
    pub const fn is_fresh(&self, sqn: Sqn) -> bool {
        sqn.0 > self.highest.0
    }

    /// Records `sqn` as accepted if it is fresh; returns whether it was.
    pub fn accept(&mut self, sqn: Sqn) -> bool {
        if self.is_fresh(sqn) {
            self.highest = sqn;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_roundtrip_and_range() {
        let s = Sqn::from_bytes([0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07]);
        assert_eq!(s.value(), 0xff9b_b4d0_b607);
        assert_eq!(s.to_bytes(), [0xff, 0x9b, 0xb4, 0xd0, 0xb6, 0x07]);
        assert_eq!(Sqn::new(1 << 48), Err(AkaError::SqnOutOfRange));
        assert_eq!(Sqn::MAX.checked_add(1), None);
    }

    #[test]
    fn generator_exhausts_without_wrapping() {
        let mut g = SqnGenerator::new(Sqn::new(Sqn::MAX.value() - 32).unwrap(), 32);
        assert_eq!(g.next_sqn().unwrap().value(), Sqn::MAX.value() - 32);
        assert_eq!(g.next_sqn(), Ok(Sqn::MAX));
        assert_eq!(g.next_sqn(), Err(AkaError::SqnExhausted));
        assert_eq!(g.next_sqn(), Err(AkaError::SqnExhausted));
        assert_eq!(g.resync(Sqn::MAX), Err(AkaError::SqnExhausted));
        g.resync(Sqn::new(64).unwrap()).unwrap();
        assert_eq!(g.next_sqn().unwrap().value(), 96);
    }

    #[test]
    fn ue_freshness() {
        let mut ue = UeSqnState::default();
        assert!(!ue.accept(Sqn::ZERO));
        assert!(ue.accept(Sqn::new(32).unwrap()));
        assert!(!ue.accept(Sqn::new(32).unwrap()));
        assert!(!ue.accept(Sqn::new(31).unwrap()));
        assert!(ue.accept(Sqn::new(33).unwrap()));
        assert_eq!(ue.highest().value(), 33);
    }
}
