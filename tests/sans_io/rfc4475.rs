//! RFC 4475 torture messages: the valid ones parse and pass the proxy checks, the invalid ones
//! are refused with a typed error, and nothing panics.

use std::fs;
use std::path::Path;

use pcscf::sip::Message;

fn corpus(dir: &str) -> Vec<(String, Vec<u8>)> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/rfc4475")
        .join(dir);
    let mut out: Vec<_> = fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sip"))
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no messages in {}", d.display());
    out
}

/// §3.3 messages that are well-formed but break a rule a proxy checks on its own.
const SEMANTIC_INVALID: &[&str] = &["insuf", "multi01", "mcl01"];

#[test]
fn valid_messages_parse() {
    let mut failures = Vec::new();
    for (name, data) in corpus("valid") {
        if let Err(e) = Message::parse_strict(&data) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "valid messages refused:\n{}",
        failures.join("\n")
    );
}

#[test]
fn invalid_messages_are_refused() {
    let mut accepted = Vec::new();
    for (name, data) in corpus("invalid") {
        match Message::parse_strict(&data) {
            Ok(_) => accepted.push(name),
            Err(e) => eprintln!("{name}: refused: {e}"),
        }
    }
    assert!(
        accepted.is_empty(),
        "invalid messages accepted: {accepted:?}"
    );
}

#[test]
fn semantic_messages() {
    let mut wrong = Vec::new();
    for (name, data) in corpus("semantic") {
        let r = Message::parse_strict(&data);
        let should_refuse = SEMANTIC_INVALID.contains(&name.as_str());
        match (&r, should_refuse) {
            (Ok(_), true) => wrong.push(format!("{name}: accepted")),
            (Err(e), false) => wrong.push(format!("{name}: refused: {e}")),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
