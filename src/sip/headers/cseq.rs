//! CSeq (RFC 3261 §20.16).

use crate::sip::lex::{TOKEN, is_ws, skip_ws, span};

/// CSeq: `1*DIGIT LWS Method` (RFC 3261 §20.16) → (number, method). One forward pass: LWS,
/// 1 to 10 digits, LWS (at least one byte), a token, LWS to the end.
pub fn cseq(v: &[u8]) -> Option<(u64, &[u8])> {
    let d0 = skip_ws(v, 0);
    let mut i = d0;
    let mut num: u64 = 0;
    while let Some(&b) = v.get(i).filter(|b| b.is_ascii_digit()) {
        if i - d0 == 10 {
            return None;
        }
        num = num * 10 + u64::from(b - b'0');
        i += 1;
    }
    if i == d0 || !is_ws(*v.get(i)?) {
        return None;
    }
    let m0 = skip_ws(v, i);
    let m1 = span(v, m0, TOKEN);
    (m1 > m0 && skip_ws(v, m1) == v.len()).then_some((num, &v[m0..m1]))
}
