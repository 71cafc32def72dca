//! `pcscf lab` end to end: namespaces, pcscf, core and UE simulators; every UE registers over
//! IPsec and its protected MESSAGE is answered; with `--calls`, calls both ways complete through
//! the P-CSCF; nothing is left behind. Needs root (CI).

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

/// `pcscf lab --calls`: after registration, half the calls placed by the UEs (INVITE with its
/// SDP over SA1, 100 / 180 / 200 back over SA2, ACK and BYE by the route set), half by the core
/// to the UEs by their Path (180 and 200 from the UE, ACK, BYE either way); every one completes
/// through the P-CSCF's workers, both directions counted, none failed.
#[test]
fn lab_calls_complete_both_ways() {
    let _alone = crate::support::exclusive();
    let out = Command::new(env!("CARGO_BIN_EXE_pcscf"))
        .args([
            "lab",
            "--ues",
            "20",
            "--rate",
            "200",
            "--messages",
            "1",
            "--calls",
            "40",
            "--call-rate",
            "100",
        ])
        .output()
        .expect("run pcscf lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pcscf lab failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("registrations: 20 ok, 0 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("calls: 40 ok, 0 failed of 40"),
        "every call completes: {stdout}"
    );
    assert!(
        stdout.contains("20 originating ok, 20 terminating ok"),
        "both directions: {stdout}"
    );
    assert!(
        stdout.contains("incoming calls: 20 ok; 0 failed"),
        "the UEs answered the core's calls: {stdout}"
    );
    assert!(
        stdout.contains("originating setup INVITE→200: p50")
            && stdout.contains("terminating setup INVITE→200: p50"),
        "{stdout}"
    );
    // the core saw the UEs' ACKs and the BYEs of every call it took part in as the far end
    assert!(
        stdout.contains("core-sim calls: 20 INVITEs answered, 20 ACKs, 30 BYEs answered"),
        "{stdout}"
    );
    assert!(!stdout.contains("call failed"), "{stdout}");
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&ns.stdout);
    assert!(
        !left.contains("pcscf-lab"),
        "namespaces left behind: {left}"
    );
}
