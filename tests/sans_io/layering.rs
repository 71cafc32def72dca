//! The house's layering, checked: the `crate::` paths between src/'s top-level modules form no
//! circle, and no lower layer names a higher one. Lower layers know nothing of the ones built on
//! them, so each can be read, tested and replaced alone (README "Layout of src/").

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module's layer: a module may use only modules of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    ("wire", 0),
    ("aka", 1),
    ("esp", 1),
    ("io", 1),
    ("sip", 2),
    ("satable", 3),
    ("config", 3),
    ("tcp", 3),
    ("preload", 4),
    ("dataplane", 4),
    ("control", 5),
    ("daemon", 6),
    ("sim", 6),
    ("lab", 7),
];

fn layer(m: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(n, _)| *n == m)
        .unwrap_or_else(|| {
            panic!("src/{m}: give the new module a layer in tests/sans_io/layering.rs")
        })
        .1
}

/// Top-level module → the modules its non-test code names as `crate::x`.
fn uses() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            // unit tests may reach anywhere; comments are not dependencies
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                let mut rest = line;
                while let Some(i) = rest.find("crate::") {
                    rest = &rest[i + 7..];
                    let m: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                        .collect();
                    if !m.is_empty() && m != top {
                        out.entry(top.clone())
                            .or_default()
                            .entry(m)
                            .or_insert_with(|| rel.display().to_string());
                    }
                }
            }
        }
    }
    out
}

#[test]
fn no_lower_layer_names_a_higher_one() {
    let mut wrong = Vec::new();
    for (from, to) in uses() {
        for (m, file) in to {
            if layer(&m) >= layer(&from) {
                wrong.push(format!(
                    "{file}: {from} (layer {}) uses crate::{m} (layer {})",
                    layer(&from),
                    layer(&m)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_has_a_layer() {
    for (from, to) in uses() {
        layer(&from);
        for m in to.keys() {
            layer(m);
        }
    }
}
