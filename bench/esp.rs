//! ESP-level benches of one IPv4/UDP packet with 200, 500, 1000 and 1400 bytes of UDP data:
//! outbound (encrypt and ICV) and inbound (replay check, ICV check, decrypt, padding check),
//! for aes-gcm and for aes-cbc with hmac-sha-1-96, per crypto backend.
//! Results are in bench/README-esp.md. Run `cargo bench --bench esp`; add
//! `--no-default-features` for the RustCrypto backend alone.

#[path = "../tests/support/mod.rs"]
mod support;

use divan::Bencher;
use pcscf::esp::{BackendKind, EncAlg, EspKeys, Frame, IntegAlg, Sa, SaOptions, Suite};
use support::esp::{CK, Fam, HEADROOM, IK, L4, frame_buf, ip_packet};

const SIZES: &[usize] = &[200, 500, 1000, 1400];

fn main() {
    divan::main();
}

fn make(suite: Suite, backend: BackendKind) -> Sa {
    let keys = EspKeys::derive(suite, &CK, &IK);
    Sa::new(
        0x1000,
        suite,
        &keys,
        SaOptions {
            window: 1024,
            backend,
        },
    )
    .unwrap()
}

fn gcm() -> Suite {
    Suite::new(IntegAlg::Null, EncAlg::AesGcm).unwrap()
}

fn cbc_sha1() -> Suite {
    Suite::new(IntegAlg::HmacSha1_96, EncAlg::AesCbc).unwrap()
}

fn encrypt(b: Bencher, suite: Suite, backend: BackendKind, n: usize) {
    let tx = make(suite, backend);
    let pkt = ip_packet(Fam::V4, L4::Udp, 50001, 5064, &vec![0x41; n], false);
    let buf = frame_buf(&pkt);
    b.with_inputs(|| buf.clone()).bench_local_refs(|buf| {
        let mut f = Frame::new(buf, HEADROOM, HEADROOM + pkt.len());
        assert!(tx.outbound(&mut f).is_ok());
    });
}

fn decrypt(b: Bencher, suite: Suite, backend: BackendKind, n: usize) {
    let tx = make(suite, backend);
    let rx = make(suite, backend);
    let pkt = ip_packet(Fam::V4, L4::Udp, 50001, 5064, &vec![0x41; n], false);
    b.with_inputs(|| {
        let mut buf = frame_buf(&pkt);
        let mut f = Frame::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
        tx.outbound(&mut f).unwrap();
        let (s, e) = (f.start, f.end);
        (buf, s, e)
    })
    .bench_local_refs(|(buf, s, e)| {
        assert!(rx.inbound_ip(&mut buf[*s..*e]).is_ok());
    });
}

macro_rules! backend_benches {
    ($m:ident, $kind:expr) => {
        mod $m {
            use super::*;

            #[divan::bench(args = SIZES)]
            fn gcm_encrypt(b: Bencher, n: usize) {
                encrypt(b, gcm(), $kind, n);
            }

            #[divan::bench(args = SIZES)]
            fn gcm_decrypt(b: Bencher, n: usize) {
                decrypt(b, gcm(), $kind, n);
            }

            #[divan::bench(args = SIZES)]
            fn cbc_sha1_encrypt(b: Bencher, n: usize) {
                encrypt(b, cbc_sha1(), $kind, n);
            }

            #[divan::bench(args = SIZES)]
            fn cbc_sha1_decrypt(b: Bencher, n: usize) {
                decrypt(b, cbc_sha1(), $kind, n);
            }
        }
    };
}

backend_benches!(rustcrypto, BackendKind::RustCrypto);
#[cfg(feature = "aws-lc")]
backend_benches!(aws_lc, BackendKind::AwsLc);
