//! The man pages the .deb ships, rendered from the clap command line by the hidden
//! `pcscf manpage DIR` (packaging/build-deb.sh): a page for `pcscf` naming every command that
//! `pcscf --help` lists, and a page for each of them with its options.

use std::collections::BTreeSet;
use std::process::Command;

fn pcscf(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pcscf"))
        .args(args)
        .output()
        .expect("run pcscf");
    assert!(
        out.status.success(),
        "pcscf {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The commands `pcscf --help` lists (its "Commands:" section), `help` aside.
fn commands_in_help() -> Vec<String> {
    let help = pcscf(&["--help"]);
    let list = help
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands: section")
        .split("\n\n")
        .next()
        .unwrap();
    list.lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// A roff page as text: hyphens unescaped, so names and options read as typed.
fn page(dir: &std::path::Path, name: &str) -> String {
    let path = dir.join(name);
    let roff = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(roff.contains("\n.TH "), "{name}: no .TH");
    roff.replace(r"\-", "-")
}

#[test]
fn the_man_pages_render_and_name_every_command() {
    let commands = commands_in_help();
    for c in ["lab", "run", "ctl", "check-config", "config-example"] {
        assert!(
            commands.iter().any(|x| x == c),
            "{c} not in --help: {commands:?}"
        );
    }
    assert!(
        !commands.iter().any(|x| x == "manpage"),
        "manpage is hidden"
    );

    let dir = std::env::temp_dir().join(format!("pcscf-manpage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    pcscf(&["manpage", dir.to_str().unwrap()]);

    let top = page(&dir, "pcscf.1");
    assert!(top.contains(".TH pcscf 1"), "{top}");
    for c in &commands {
        assert!(
            top.contains(&format!("pcscf-{c}(1)")),
            "pcscf.1 does not name {c}"
        );
        let sub = page(&dir, &format!("pcscf-{c}.1"));
        assert!(sub.contains(&format!("pcscf-{c}")), "pcscf-{c}.1");
    }
    // the pages are the commands', options and all
    assert!(page(&dir, "pcscf-run.1").contains("--config"));
    assert!(page(&dir, "pcscf-ctl.1").contains("--json"));

    // one page per listed command and pcscf.1: nothing for the hidden one
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut expected: BTreeSet<String> = commands.iter().map(|c| format!("pcscf-{c}.1")).collect();
    expected.insert("pcscf.1".into());
    assert_eq!(files, expected);
    let _ = std::fs::remove_dir_all(&dir);
}
