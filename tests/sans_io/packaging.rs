//! The packaging (README "Deploying"), checked without building a .deb: every asset that
//! `[package.metadata.deb]` names exists in the repository or is made by
//! packaging/build-deb.sh, the maintainer scripts are there, and the systemd unit says what the
//! daemon needs (its binary and configuration where the package puts them, its user, its
//! capabilities, restarts that cannot spin, the directories the configuration's defaults use).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn deb_metadata() -> toml::Table {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

/// `(source, dest)` of each asset, in either of cargo-deb's spellings.
fn assets() -> Vec<(String, String)> {
    deb_metadata()["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| match a {
            toml::Value::Array(v) => (
                v[0].as_str().unwrap().to_owned(),
                v[1].as_str().unwrap().to_owned(),
            ),
            toml::Value::Table(t) => (
                t["source"].as_str().unwrap().to_owned(),
                t["dest"].as_str().unwrap().to_owned(),
            ),
            other => panic!("asset {other}"),
        })
        .collect()
}

/// Where an asset lands in the installed system.
fn installed(source: &str, dest: &str) -> String {
    let dest = format!("/{}", dest.trim_start_matches('/'));
    if dest.ends_with('/') {
        let name = Path::new(source).file_name().unwrap().to_str().unwrap();
        format!("{dest}{name}")
    } else {
        dest
    }
}

#[test]
fn every_deb_asset_exists_or_is_built_by_build_deb_sh() {
    let script = read("packaging/build-deb.sh");
    let assets = assets();
    assert!(!assets.is_empty());
    for (source, dest) in &assets {
        if let Some(built) = source.strip_prefix("target/release/") {
            match built {
                // the bin target, built by `cargo build --release --bin pcscf`
                "pcscf" => assert!(
                    script.contains("cargo build --release") && script.contains("--bin pcscf"),
                    "build-deb.sh does not build the binary"
                ),
                // the man pages: rendered and gzipped by the script
                "man/*.1.gz" => assert!(
                    script.contains(r#"man="$target/release/man""#)
                        && script.contains(r#"pcscf" manpage "$man""#)
                        && script.contains(r#"gzip -9n "$man"/*.1"#),
                    "build-deb.sh does not make {source}"
                ),
                _ => {
                    panic!("{source}: built by whom? (packaging/build-deb.sh makes it or it goes)")
                }
            }
        } else {
            assert!(
                !source.contains('*'),
                "{source}: a glob over the repository"
            );
            assert!(
                root().join(source).is_file(),
                "{source} (for {dest}) is missing"
            );
        }
    }
    let dests: BTreeSet<String> = assets.iter().map(|(s, d)| installed(s, d)).collect();
    for path in [
        "/usr/bin/pcscf",
        "/usr/lib/systemd/system/pcscf.service",
        "/usr/lib/sysusers.d/pcscf.conf",
        "/etc/pcscf/pcscf.toml",
        "/usr/share/man/man1/pcscf.1.gz",
        "/usr/share/doc/pcscf/README.md",
        "/usr/share/doc/pcscf/SECURITY.md",
    ] {
        let found = dests.contains(path)
            || (path.starts_with("/usr/share/man/man1/")
                && dests.contains("/usr/share/man/man1/*.1.gz"));
        assert!(found, "the package does not install {path}: {dests:?}");
    }
    // the example configuration is the package's configuration, kept across upgrades
    assert!(assets.contains(&(
        "src/config/example.toml".into(),
        "etc/pcscf/pcscf.toml".into()
    )));
    let conf_files = deb_metadata()["conf-files"].as_array().unwrap().clone();
    assert!(conf_files.contains(&"/etc/pcscf/pcscf.toml".into()));
}

#[test]
fn the_maintainer_scripts_are_there_and_executable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = deb_metadata()["maintainer-scripts"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["postinst", "prerm", "postrm"] {
        let path = root().join(&dir).join(name);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            meta.permissions().mode() & 0o111 != 0,
            "{name} is not executable"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("#!/bin/sh\n") && text.contains("set -e"),
            "{name}"
        );
    }
    let postinst = read(&format!("{dir}postinst"));
    // the user the unit runs as, made from the sysusers.d entry the package installs
    assert!(postinst.contains("systemd-sysusers /usr/lib/sysusers.d/pcscf.conf"));
    assert!(postinst.contains("adduser --system"));
    // never started by the package (no configuration, no seal key yet; upgrades restart when
    // the operator says)
    // (what it echoes, the operator's next steps, aside)
    for line in postinst
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with('#') && !l.starts_with("echo "))
    {
        for verb in ["start", "restart", "enable", "try-restart"] {
            assert!(
                !line.contains(&format!("systemctl {verb}")),
                "postinst starts pcscf: {line}"
            );
        }
    }
    assert!(read("packaging/pcscf.sysusers").contains("\nu pcscf "));
}

/// The unit as section → key → values (a key may repeat).
fn unit() -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("packaging/pcscf.service").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (k, v) = line.split_once('=').expect("key=value");
        assert!(!section.is_empty(), "{line} outside a section");
        sections
            .entry(section.clone())
            .or_default()
            .entry(k.to_owned())
            .or_default()
            .push(v.to_owned());
    }
    sections
}

#[test]
fn the_unit_runs_the_packaged_daemon_as_its_user_with_its_capabilities() {
    let unit = unit();
    let service = &unit["Service"];
    let one = |k: &str| -> &str {
        let v = service.get(k).unwrap_or_else(|| panic!("[Service] {k}="));
        assert_eq!(v.len(), 1, "{k} given twice");
        &v[0]
    };
    assert!(["notify", "simple"].contains(&one("Type")));
    assert_eq!(
        one("ExecStart"),
        "/usr/bin/pcscf run --config /etc/pcscf/pcscf.toml"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("Restart"), "on-failure");
    assert!(service.contains_key("RestartSec"));
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert!(service.contains_key("TimeoutStopSec"));
    // a crash loop must not spin (each start spends a sequence step of every restored SA)
    let unit_sec = &unit["Unit"];
    assert!(
        unit_sec.contains_key("StartLimitIntervalSec") && unit_sec.contains_key("StartLimitBurst")
    );

    assert_eq!(one("User"), "pcscf");
    assert_eq!(one("NoNewPrivileges"), "yes");
    let caps = |k: &str| -> BTreeSet<&str> { one(k).split_whitespace().collect() };
    let needed: BTreeSet<&str> = ["CAP_NET_RAW", "CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"].into();
    assert_eq!(caps("AmbientCapabilities"), needed);
    assert_eq!(caps("CapabilityBoundingSet"), needed);
    assert_eq!(one("LimitMEMLOCK"), "infinity", "UMEM is pinned memory");

    // the directories the configuration's defaults and the README's [state] use
    assert_eq!(one("RuntimeDirectory"), "pcscf");
    assert_eq!(one("RuntimeDirectoryMode"), "0700");
    assert!(pcscf::config::DEFAULT_CONTROL_SOCKET.starts_with("/run/pcscf/"));
    assert_eq!(one("StateDirectory"), "pcscf");
    assert_eq!(one("StateDirectoryMode"), "0700");
    assert_eq!(one("ConfigurationDirectory"), "pcscf");
    let example = pcscf::config::EXAMPLE;
    assert!(example.contains(r#"path = "/var/lib/pcscf/state.redb""#));
    assert!(example.contains(r#"seal_key_file = "/etc/pcscf/state.key""#));

    // hardening that keeps the packet backends working
    assert_eq!(one("ProtectSystem"), "strict");
    assert!(
        !service.contains_key("PrivateNetwork"),
        "pcscf serves the host's interfaces"
    );
    let families = caps("RestrictAddressFamilies");
    for f in [
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
        "AF_PACKET",
        "AF_XDP",
    ] {
        assert!(families.contains(f), "RestrictAddressFamilies lacks {f}");
    }
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
}
