//! HSS / AuC role: authentication vector generation and AUTS resynchronisation.
//!
//! This file owns the network side of AKA (TS 33.102 §6.3.2 and §6.3.5):
//! - [`generate_vector`]: given SQN, AMF and RAND, `AUTN = SQN ⊕ AK ‖ AMF ‖ MAC-A` and the
//!   vector (RAND, AUTN, XRES, CK, IK). RAND is an input: this module has no RNG (the caller
//!   MUST supply an unpredictable RAND, TS 33.102 §6.3.2); tests use fixed values.
//! - [`verify_auts`]: given RAND and AUTS, `SQN_MS = AUTS[0..6) ⊕ f5*(RAND)` and the check
//!   `MAC-S == f1*(SQN_MS, RAND, AMF = 0x0000)` (TS 33.102 §6.3.3: "the dummy value of AMF …
//!   all zeros"; §6.3.5: the HE/AuC verifies MAC-S before it resets SQN_HE).
//! - [`HssSubscriber`]: one subscriber's K/OPc ([`Milenage`]), SQN counter ([`SqnGenerator`])
//!   and AMF, with [`HssSubscriber::next_vector`] and [`HssSubscriber::resync`].
//!
//! MAC-S is compared in constant time.

use subtle::ConstantTimeEq;

use super::AkaError;
use super::milenage::{Amf, Milenage};
use super::sqn::{Sqn, SqnGenerator};
use super::vector::{AuthVector, Autn, Auts, Rand};

/// AMF* for AUTS: the all-zero dummy value (TS 33.102 §6.3.3).
pub const RESYNC_AMF: Amf = [0, 0];

/// Builds the authentication vector for `sqn`, `amf` and `rand` (TS 33.102 §6.3.2).
pub fn generate_vector(m: &Milenage, rand: &Rand, sqn: Sqn, amf: &Amf) -> AuthVector {
    let (mac_a, _) = m.f1_pair(rand, sqn, amf);
    let k = m.f2345(rand);
    let mut autn: Autn = [0u8; 16];
    for ((o, s), a) in autn[0..6].iter_mut().zip(sqn.to_bytes()).zip(k.ak) {
        *o = s ^ a;
    }
    autn[6..8].copy_from_slice(amf);
    autn[8..16].copy_from_slice(&mac_a);
    AuthVector {
        rand: *rand,
        autn,
        xres: k.res.clone(),
        ck: k.ck.clone(),
        ik: k.ik.clone(),
    }
}

/// Verifies an AUTS for `rand` and returns SQN_MS (TS 33.102 §6.3.5).
///
/// [`AkaError::ResyncMacFailure`] if MAC-S does not match: the HSS must then not touch its SQN.
pub fn verify_auts(m: &Milenage, rand: &Rand, auts: &Auts) -> Result<Sqn, AkaError> {
    let ak_star = m.f5_star(rand);
    let mut concealed = auts.concealed_sqn();
    for (c, a) in concealed.iter_mut().zip(ak_star) {
        *c ^= a;
    }
    let sqn_ms = Sqn::from_bytes(concealed);
    let expected = m.f1_star(rand, sqn_ms, &RESYNC_AMF);
    if bool::from(expected.ct_eq(&auts.mac_s())) {
        Ok(sqn_ms)
    } else {
        Err(AkaError::ResyncMacFailure)
    }
}

/// One subscriber as the HSS sees it: Milenage keys, SQN counter and AMF.
#[derive(Debug)]
pub struct HssSubscriber {
    milenage: Milenage,
    sqn: SqnGenerator,
    amf: Amf,
}

impl HssSubscriber {
    /// A subscriber with the given keys, SQN counter and AMF.
    pub fn new(milenage: Milenage, sqn: SqnGenerator, amf: Amf) -> HssSubscriber {
        HssSubscriber { milenage, sqn, amf }
    }

    /// The next vector: takes a SQN from the counter (TS 33.102 §6.3.2).
    pub fn next_vector(&mut self, rand: &Rand) -> Result<AuthVector, AkaError> {
        let sqn = self.sqn.next_sqn()?;
        Ok(generate_vector(&self.milenage, rand, sqn, &self.amf))
    }

    /// Resynchronisation (TS 33.102 §6.3.5). `rand` is the RAND of the challenge the UE
    /// rejected. On success the counter continues at `SQN_MS + step` and SQN_MS is returned;
    /// on a MAC-S failure the counter is untouched.
    pub fn resync(&mut self, rand: &Rand, auts: &Auts) -> Result<Sqn, AkaError> {
        let sqn_ms = verify_auts(&self.milenage, rand, auts)?;
        self.sqn.resync(sqn_ms)?;
        Ok(sqn_ms)
    }

    /// The SQN counter.
    pub fn sqn(&self) -> &SqnGenerator {
        &self.sqn
    }

    /// The AMF put into AUTN.
    pub fn amf(&self) -> Amf {
        self.amf
    }

    /// The subscriber's Milenage instance.
    pub fn milenage(&self) -> &Milenage {
        &self.milenage
    }
}
