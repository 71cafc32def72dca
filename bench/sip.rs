//! SIP engine benchmarks: parse, and parse + full P-CSCF rewrite, of the registration flow's
//! messages (REGISTER ~1 KB, 401, 200). Run with `cargo bench --bench sip`.

use std::hint::black_box;
use std::net::SocketAddr;

use pcscf::sip::rules::{self, Forward};
use pcscf::sip::{Editor, Message};

const REGISTER: &[u8] = include_bytes!("../tests/data/ims/register1_v4.sip");
const CHALLENGE: &[u8] = include_bytes!("../tests/data/ims/401_from_scscf.sip");
const OK: &[u8] = include_bytes!("../tests/data/ims/200_register.sip");
const HEAD: usize = 256;

#[path = "../perf/fixtures.rs"]
#[allow(dead_code)] // (the pipeline's fixtures)
mod fixtures;
use fixtures::{PREFS, me};

fn main() {
    divan::main();
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HEAD + msg.len() + 512];
    f[HEAD..HEAD + msg.len()].copy_from_slice(msg);
    f
}

#[divan::bench(args = ["register", "401", "200"])]
fn parse(b: divan::Bencher, which: &str) {
    let msg = match which {
        "register" => REGISTER,
        "401" => CHALLENGE,
        _ => OK,
    };
    b.counter(divan::counter::BytesCount::new(msg.len()))
        .bench(|| Message::parse(black_box(msg)).unwrap().idx.headers().len());
}

#[divan::bench]
fn parse_strict_register(b: divan::Bencher) {
    b.bench(|| {
        Message::parse_strict(black_box(REGISTER))
            .unwrap()
            .idx
            .headers()
            .len()
    });
}

/// What the registration thread does with an initial REGISTER: parse, validate, the §1.1 checks
/// and the full rewrite toward the I-CSCF.
#[divan::bench]
fn parse_check_rewrite_register(b: divan::Bencher) {
    let src: SocketAddr = "10.46.0.6:5060".parse().unwrap();
    let base = framed(REGISTER);
    let mut frame = base.clone();
    let mut n = 0u64;
    let mut scratch = vec![0u8; rules::REWRITE_SCRATCH];
    b.bench_local(|| {
        frame.copy_from_slice(&base);
        n += 1;
        let mut ed = Editor::new(&mut frame, HEAD, HEAD + REGISTER.len()).unwrap();
        ed.view().validate().unwrap();
        rules::check_register(ed.view(), PREFS).unwrap();
        let fw = Forward {
            source: src,
            protected: false,
            branch: n,
            icid: n,
        };
        rules::rewrite_register(&mut ed, &me(), &fw, &mut scratch).unwrap();
        black_box(ed.range());
    });
}

#[divan::bench]
fn parse_rewrite_401(b: divan::Bencher) {
    let base = framed(CHALLENGE);
    let mut frame = base.clone();
    let ss = b"ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5102;port-s=5103;alg=hmac-sha-1-96;ealg=aes-cbc";
    b.bench_local(|| {
        frame.copy_from_slice(&base);
        let mut ed = Editor::new(&mut frame, HEAD, HEAD + CHALLENGE.len()).unwrap();
        black_box(rules::rewrite_401(&mut ed, ss).unwrap());
    });
}

#[divan::bench]
fn parse_rewrite_200(b: divan::Bencher) {
    let base = framed(OK);
    let mut frame = base.clone();
    b.bench_local(|| {
        frame.copy_from_slice(&base);
        let mut ed = Editor::new(&mut frame, HEAD, HEAD + OK.len()).unwrap();
        black_box(rules::rewrite_200(&mut ed, None).unwrap());
    });
}

/// The frame copy that the rewrite benches include, to subtract.
#[divan::bench]
fn baseline_frame_copy(b: divan::Bencher) {
    let base = framed(REGISTER);
    let mut frame = base.clone();
    b.bench_local(|| {
        frame.copy_from_slice(black_box(&base));
        black_box(&frame);
    });
}
