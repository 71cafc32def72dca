//! A fixed loop of the SIP registration rewrite, for profilers: `perf record` and
//! `valgrind --tool=callgrind` (instructions per message, the stable figure to track).
//!
//! cargo build --release --example sip_loop && valgrind --tool=callgrind target/release/examples/sip_loop 1000

use std::hint::black_box;
use std::net::SocketAddr;

use pcscf::sip::Editor;
use pcscf::sip::rules::{self, Forward};

const REGISTER: &[u8] = include_bytes!("../tests/data/ims/register1_v4.sip");
const HEAD: usize = 256;
#[path = "fixtures.rs"]
#[allow(dead_code)] // (the pipeline's fixtures)
mod fixtures;
use fixtures::{PREFS, me};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let src: SocketAddr = "10.46.0.6:5060".parse().unwrap();
    let mut base = vec![0u8; HEAD + REGISTER.len() + 512];
    base[HEAD..HEAD + REGISTER.len()].copy_from_slice(REGISTER);
    let mut frame = base.clone();
    let mut scratch = vec![0u8; rules::REWRITE_SCRATCH];
    let t = std::time::Instant::now();
    for i in 0..n {
        frame.copy_from_slice(&base);
        let mut ed = Editor::new(&mut frame, HEAD, HEAD + REGISTER.len()).unwrap();
        ed.view().validate().unwrap();
        rules::check_register(ed.view(), PREFS).unwrap();
        let fw = Forward {
            source: src,
            protected: false,
            branch: i,
            icid: i,
        };
        rules::rewrite_register(&mut ed, &me(), &fw, &mut scratch).unwrap();
        black_box(ed.range());
    }
    let el = t.elapsed();
    println!(
        "{n} REGISTERs: {:.0} ns each (parse + validate + check + rewrite)",
        el.as_nanos() as f64 / n as f64
    );
}
