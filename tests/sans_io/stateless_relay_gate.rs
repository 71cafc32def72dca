//! `dataplane.stateless_relay` relays requests of unregistered UEs: `pcscf run` refuses such a
//! configuration unless the load tools' hidden `--allow-stateless-relay` is given.

use std::process::Command;

fn config(relay: bool) -> std::path::PathBuf {
    let text = format!(
        r#"
[ue]
interface = "pcscf-none0"
addresses = ["192.0.2.1"]
[core]
interface = "pcscf-none1"
address = "192.0.2.2"
icscf = "192.0.2.3:5060"
[ipsec]
max_sas = 16
spi_range = "4096-8191"
[dataplane]
backend = "afpacket"
workers = [0]
stateless_relay = {relay}
"#
    );
    let path = std::env::temp_dir().join(format!(
        "pcscf-relay-gate-{}-{relay}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(relay: bool, allow: bool) -> (bool, String) {
    let path = config(relay);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pcscf"));
    cmd.arg("run").arg("--config").arg(&path);
    if allow {
        cmd.arg("--allow-stateless-relay");
    }
    let out = cmd.output().expect("run pcscf");
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_refuses_stateless_relay_without_the_load_test_switch() {
    let (ok, err) = run(true, false);
    assert!(!ok, "pcscf run started with stateless_relay: {err}");
    assert!(
        err.contains("dataplane.stateless_relay") && err.contains("refusing to start"),
        "{err}"
    );
    // With the switch it goes on (and stops opening the backend: no such address here).
    let (ok, err) = run(true, true);
    assert!(!ok);
    assert!(!err.contains("refusing to start"), "{err}");
    assert!(err.contains("afpacket backend"), "{err}");
    // Without stateless_relay nothing changes.
    let (_, err) = run(false, false);
    assert!(!err.contains("refusing to start"), "{err}");
}
