//! `pcscf lab` end to end: namespaces, pcscf, core and UE simulators; every UE registers over
//! IPsec and its protected MESSAGE is answered; nothing is left behind. Needs root (CI).

use std::process::Command;

#[test]
fn lab_registers_every_ue_and_cleans_up() {
    // 100 UEs at 200/s: alone, so neither it nor the others miss deadlines.
    let _alone = crate::support::exclusive();
    let out = Command::new(env!("CARGO_BIN_EXE_pcscf"))
        .args(["lab", "--ues", "100", "--rate", "200", "--messages", "2"])
        .output()
        .expect("run pcscf lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pcscf lab failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("registrations: 100 ok, 0 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("protected MESSAGEs answered: 200"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dns: 3 answers"),
        "the I-CSCF came from the lab's DNS (NAPTR, SRV, A), then from the cache: {stdout}"
    );
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&ns.stdout);
    assert!(
        !left.contains("pcscf-lab"),
        "namespaces left behind: {left}"
    );
}
