//! Milenage (3GPP TS 35.206 §4): the f1, f1*, f2, f3, f4, f5 and f5* functions and OPc.
//!
//! This file owns the Milenage algorithm set and nothing else: no SQN policy, no encodings.
//!
//! - The kernel E_K is AES-128 (TS 35.206 §4.1 allows any 128-bit block cipher; 3GPP profiles
//!   Rijndael = AES, Annex 3). The AES key schedule is expanded **once**, when a [`Milenage`] is
//!   built for a subscriber, and is wiped when it is dropped (`aes` with its `zeroize` feature).
//! - `OPc = E_K(OP) ⊕ OP` (TS 35.206 §4.1). An operator may provision OPc directly
//!   ([`Milenage::new`]) or OP ([`Milenage::from_op`]).
//! - `TEMP = E_K(RAND ⊕ OPc)`; `OUT1 = E_K(TEMP ⊕ rot(IN1 ⊕ OPc, r1) ⊕ c1) ⊕ OPc` with
//!   `IN1 = SQN ‖ AMF ‖ SQN ‖ AMF`; `OUTi = E_K(rot(TEMP ⊕ OPc, ri) ⊕ ci) ⊕ OPc` for i = 2..5,
//!   with r1..r5 = 64, 0, 32, 64, 96 bits and c1..c5 = 0, 1, 2, 4, 8 (TS 35.206 §4.1).
//! - f1 = OUT1[0..8), f1* = OUT1[8..16), f5 = OUT2[0..6), f2 = OUT2[8..16), f3 = OUT3,
//!   f4 = OUT4, f5* = OUT5[0..6) (TS 35.206 §4.1, bit numbering of §3: bit 0 is the MSB of
//!   byte 0).
//!
//! Every rotation amount is a multiple of 8, so rot() is a byte rotation. All buffers are
//! fixed-size arrays: no function here allocates or can panic. Key material (K schedule, OPc,
//! TEMP and the OUT blocks) is zeroised; [`Milenage`]'s `Debug` prints no key.

use core::fmt;

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::sqn::Sqn;
use super::vector::{Ck, Ik, Res};

/// The 16-bit Authentication Management Field (TS 33.102 §6.3.2, Annex F).
pub type Amf = [u8; 2];

/// A Milenage instance for one subscriber: the AES-128 key schedule of K, and OPc.
pub struct Milenage {
    aes: Aes128,
    opc: [u8; 16],
}

/// The outputs of f2, f3, f4, f5 and f5* for one RAND, computed from one TEMP.
#[derive(Clone)]
pub struct KeyOutputs {
    /// f2: RES (the UE's response; XRES on the network side).
    pub res: Res,
    /// f3: CK, the cipher key.
    pub ck: Ck,
    /// f4: IK, the integrity key.
    pub ik: Ik,
    /// f5: AK, the anonymity key that conceals SQN in AUTN.
    pub ak: [u8; 6],
    /// f5*: AK*, the anonymity key that conceals SQN_MS in AUTS.
    pub ak_star: [u8; 6],
}

impl fmt::Debug for KeyOutputs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyOutputs { .. }")
    }
}

impl Drop for KeyOutputs {
    fn drop(&mut self) {
        self.ak.zeroize();
        self.ak_star.zeroize();
    }
}

/// r2..r5 in bytes and the last byte of c2..c5 (TS 35.206 §4.1).
const ROT_CONST_2_5: [(usize, u8); 4] = [(0, 1), (4, 2), (8, 4), (12, 8)];
/// r1 in bytes; c1 = 0.
const R1_BYTES: usize = 8;

fn xor16(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x ^ y;
    }
    out
}

/// rot(x, 8·r_bytes): rotate left (towards the most significant byte).
fn rot_bytes(x: &[u8; 16], r_bytes: usize) -> [u8; 16] {
    let mut out = *x;
    out.rotate_left(r_bytes % 16);
    out
}

impl Milenage {
    /// Builds the per-subscriber state from K and OPc. The AES key schedule is expanded here.
    pub fn new(k: &[u8; 16], opc: &[u8; 16]) -> Milenage {
        Milenage {
            aes: Aes128::new(k.into()),
            opc: *opc,
        }
    }

    /// Builds the per-subscriber state from K and OP, deriving OPc (TS 35.206 §4.1).
    pub fn from_op(k: &[u8; 16], op: &[u8; 16]) -> Milenage {
        let aes = Aes128::new(k.into());
        let opc = opc_with(&aes, op);
        Milenage { aes, opc }
    }

    /// `OPc = E_K(OP) ⊕ OP` (TS 35.206 §4.1).
    pub fn compute_opc(k: &[u8; 16], op: &[u8; 16]) -> [u8; 16] {
        opc_with(&Aes128::new(k.into()), op)
    }

    /// OPc in use (key material: handle with care).
    pub fn opc(&self) -> &[u8; 16] {
        &self.opc
    }

    fn e_k(&self, block: &mut [u8; 16]) {
        self.aes.encrypt_block(block.into());
    }

    /// TEMP = E_K(RAND ⊕ OPc), the intermediate value of TS 35.206 §4.1 (exposed for the
    /// TS 35.208 test sets; it is key material).
    pub fn temp(&self, rand: &[u8; 16]) -> [u8; 16] {
        let mut t = xor16(rand, &self.opc);
        self.e_k(&mut t);
        t
    }

    /// OUT1 from TEMP, SQN and AMF.
    fn out1(&self, temp: &[u8; 16], sqn: Sqn, amf: &Amf) -> Zeroizing<[u8; 16]> {
        let s = sqn.to_bytes();
        let mut in1 = [0u8; 16];
        in1[0..6].copy_from_slice(&s);
        in1[6..8].copy_from_slice(amf);
        in1[8..14].copy_from_slice(&s);
        in1[14..16].copy_from_slice(amf);
        let rotated = rot_bytes(&xor16(&in1, &self.opc), R1_BYTES);
        // c1 = 0, so nothing to XOR in.
        let mut block = Zeroizing::new(xor16(temp, &rotated));
        self.e_k(&mut block);
        Zeroizing::new(xor16(&block, &self.opc))
    }

    /// OUT2..OUT5 from TEMP, encrypted as one 4-block batch (the AES backend pipelines them).
    fn out2_5(&self, temp: &[u8; 16]) -> Zeroizing<[[u8; 16]; 4]> {
        let t = Zeroizing::new(xor16(temp, &self.opc));
        let mut blocks: [aes::Block; 4] = Default::default();
        for (block, &(r, c)) in blocks.iter_mut().zip(&ROT_CONST_2_5) {
            let mut x = rot_bytes(&t, r);
            x[15] ^= c;
            block.copy_from_slice(&x);
            x.zeroize();
        }
        self.aes.encrypt_blocks(&mut blocks[..]);
        let mut out = Zeroizing::new([[0u8; 16]; 4]);
        for (o, block) in out.iter_mut().zip(blocks.iter()) {
            for ((o, b), k) in o.iter_mut().zip(block.iter()).zip(&self.opc) {
                *o = b ^ k;
            }
        }
        for block in blocks.iter_mut() {
            block.as_mut_slice().zeroize();
        }
        out
    }

    /// f1 and f1* together (one AES call): (MAC-A, MAC-S) = OUT1 split in halves.
    pub fn f1_pair(&self, rand: &[u8; 16], sqn: Sqn, amf: &Amf) -> ([u8; 8], [u8; 8]) {
        let temp = Zeroizing::new(self.temp(rand));
        let out1 = self.out1(&temp, sqn, amf);
        let mut mac_a = [0u8; 8];
        let mut mac_s = [0u8; 8];
        mac_a.copy_from_slice(&out1[0..8]);
        mac_s.copy_from_slice(&out1[8..16]);
        (mac_a, mac_s)
    }

    /// f1: the network authentication code MAC-A.
    pub fn f1(&self, rand: &[u8; 16], sqn: Sqn, amf: &Amf) -> [u8; 8] {
        self.f1_pair(rand, sqn, amf).0
    }

    /// f1*: the resynchronisation authentication code MAC-S.
    pub fn f1_star(&self, rand: &[u8; 16], sqn: Sqn, amf: &Amf) -> [u8; 8] {
        self.f1_pair(rand, sqn, amf).1
    }

    /// f2, f3, f4, f5 and f5* from one TEMP (5 AES blocks in all).
    pub fn f2345(&self, rand: &[u8; 16]) -> KeyOutputs {
        let temp = Zeroizing::new(self.temp(rand));
        let outs = self.out2_5(&temp);
        let [out2, out3, out4, out5] = &*outs;
        let mut res = [0u8; 8];
        res.copy_from_slice(&out2[8..16]);
        let mut ak = [0u8; 6];
        ak.copy_from_slice(&out2[0..6]);
        let mut ak_star = [0u8; 6];
        ak_star.copy_from_slice(&out5[0..6]);
        KeyOutputs {
            res: Res::from(res),
            ck: Ck::from(*out3),
            ik: Ik::from(*out4),
            ak,
            ak_star,
        }
    }

    /// f2: RES.
    pub fn f2(&self, rand: &[u8; 16]) -> Res {
        self.f2345(rand).res.clone()
    }

    /// f3: CK.
    pub fn f3(&self, rand: &[u8; 16]) -> Ck {
        self.f2345(rand).ck.clone()
    }

    /// f4: IK.
    pub fn f4(&self, rand: &[u8; 16]) -> Ik {
        self.f2345(rand).ik.clone()
    }

    /// f5: AK.
    pub fn f5(&self, rand: &[u8; 16]) -> [u8; 6] {
        self.f2345(rand).ak
    }

    /// f5*: AK* (for AUTS).
    pub fn f5_star(&self, rand: &[u8; 16]) -> [u8; 6] {
        self.f2345(rand).ak_star
    }
}

fn opc_with(aes: &Aes128, op: &[u8; 16]) -> [u8; 16] {
    let mut block = *op;
    aes.encrypt_block((&mut block).into());
    let opc = xor16(&block, op);
    block.zeroize();
    opc
}

impl fmt::Debug for Milenage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Milenage { k: <redacted>, opc: <redacted> }")
    }
}

impl Drop for Milenage {
    fn drop(&mut self) {
        // The AES key schedule wipes itself (aes `zeroize` feature); wipe OPc here.
        self.opc.zeroize();
    }
}

impl ZeroizeOnDrop for Milenage {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rot_is_left_towards_msb() {
        let mut x = [0u8; 16];
        x[8] = 0xaa;
        // rot by 64 bits moves byte 8 to byte 0.
        assert_eq!(rot_bytes(&x, 8)[0], 0xaa);
        x = [0u8; 16];
        x[4] = 0xbb;
        assert_eq!(rot_bytes(&x, 4)[0], 0xbb);
    }

    #[test]
    fn debug_is_redacted() {
        let m = Milenage::new(&[0x42; 16], &[0x17; 16]);
        let s = format!("{m:?}");
        assert!(!s.contains("42") && !s.contains("17"), "{s}");
    }
}
