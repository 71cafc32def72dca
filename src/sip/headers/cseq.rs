//! CSeq (RFC 3261 §20.16).

use crate::sip::lex::{is_token, is_ws, parse_u64, trim};

/// CSeq: `1*DIGIT LWS Method` (RFC 3261 §20.16) → (number, method).
pub fn cseq(v: &[u8]) -> Option<(u64, &[u8])> {
    let v = trim(v);
    let sp = v.iter().position(|&b| is_ws(b))?;
    let num = parse_u64(&v[..sp], 10)?;
    let method = trim(&v[sp..]);
    is_token(method).then_some((num, method))
}
