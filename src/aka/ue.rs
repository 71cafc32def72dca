//! UE / USIM role: checking a challenge and producing RES, CK, IK or an AUTS.
//!
//! This file owns the USIM procedure of TS 33.102 §6.3.3, in the order the spec gives it:
//! 1. `AK = f5(RAND)`, `SQN = AUTN[0..6) ⊕ AK`.
//! 2. `XMAC = f1(SQN, RAND, AMF)`; if `XMAC ≠ MAC-A` the USIM MUST reject the challenge
//!    ([`AkaError::MacFailure`]: the network is not authentic). Compared in constant time.
//! 3. If SQN is not fresh (see [`UeSqnState`]) the USIM MUST send a synchronisation failure
//!    with `AUTS = SQN_MS ⊕ f5*(RAND) ‖ f1*(SQN_MS, RAND, AMF = 0x0000)`
//!    ([`AkaError::SyncFailure`] carries it). In SIP the UE then sends the `auts` parameter and
//!    computes the digest response with an **empty password** (RFC 3310 §3.4; see
//!    [`super::digest::response_auts`]).
//! 4. Otherwise the USIM stores SQN as accepted and returns RES = f2, CK = f3, IK = f4.
//!
//! The AMF separation bit (TS 33.401 §6.1.1) is not checked: IMS AKA does not require it.

use subtle::ConstantTimeEq;

use super::AkaError;
use super::hss::RESYNC_AMF;
use super::milenage::Milenage;
use super::sqn::{Sqn, UeSqnState};
use super::vector::{Autn, Auts, Ck, Ik, Rand, Res, decode_nonce};

/// What a successful challenge gives the UE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UeAuthResult {
    /// The SQN recovered from AUTN.
    pub sqn: Sqn,
    /// RES, the Digest password (RFC 3310 §3.3).
    pub res: Res,
    /// CK.
    pub ck: Ck,
    /// IK.
    pub ik: Ik,
}

/// AUTS for a sync failure: `SQN_MS ⊕ f5*(RAND) ‖ f1*(SQN_MS, RAND, 0x0000)` (TS 33.102 §6.3.3).
pub fn compute_auts(m: &Milenage, rand: &Rand, sqn_ms: Sqn) -> Auts {
    let ak_star = m.f5_star(rand);
    let mac_s = m.f1_star(rand, sqn_ms, &RESYNC_AMF);
    let mut b = [0u8; 14];
    for ((o, s), a) in b[0..6].iter_mut().zip(sqn_ms.to_bytes()).zip(ak_star) {
        *o = s ^ a;
    }
    b[6..14].copy_from_slice(&mac_s);
    Auts::new(b)
}

/// Runs steps 1-4 without changing `state` (the caller decides whether to record the SQN).
pub fn check_challenge(
    m: &Milenage,
    state: &UeSqnState,
    rand: &Rand,
    autn: &Autn,
) -> Result<UeAuthResult, AkaError> {
    let k = m.f2345(rand);
    let mut sqn_b = [0u8; 6];
    for ((o, c), a) in sqn_b.iter_mut().zip(&autn[0..6]).zip(k.ak) {
        *o = c ^ a;
    }
    let sqn = Sqn::from_bytes(sqn_b);
    let amf = [autn[6], autn[7]];
    let xmac = m.f1(rand, sqn, &amf);
    if !bool::from(xmac.ct_eq(&autn[8..16])) {
        return Err(AkaError::MacFailure);
    }
    if !state.is_fresh(sqn) {
        return Err(AkaError::SyncFailure {
            auts: compute_auts(m, rand, state.highest()),
        });
    }
    Ok(UeAuthResult {
        sqn,
        res: k.res.clone(),
        ck: k.ck.clone(),
        ik: k.ik.clone(),
    })
}

/// A USIM: Milenage keys plus SQN state.
#[derive(Debug)]
pub struct Usim {
    milenage: Milenage,
    state: UeSqnState,
}

impl Usim {
    /// A USIM with the given keys and SQN state (use `UeSqnState::default()` for a fresh one).
    pub fn new(milenage: Milenage, state: UeSqnState) -> Usim {
        Usim { milenage, state }
    }

    /// TS 33.102 §6.3.3: checks the challenge and, on success, records SQN as accepted.
    pub fn authenticate(&mut self, rand: &Rand, autn: &Autn) -> Result<UeAuthResult, AkaError> {
        let r = check_challenge(&self.milenage, &self.state, rand, autn)?;
        self.state.accept(r.sqn);
        Ok(r)
    }

    /// [`Usim::authenticate`] on a Digest-AKA nonce (quotes removed).
    pub fn authenticate_nonce(&mut self, nonce: &str) -> Result<UeAuthResult, AkaError> {
        let (rand, autn) = decode_nonce(nonce)?;
        self.authenticate(&rand, &autn)
    }

    /// The SQN state.
    pub fn state(&self) -> &UeSqnState {
        &self.state
    }

    /// The Milenage instance.
    pub fn milenage(&self) -> &Milenage {
        &self.milenage
    }
}
