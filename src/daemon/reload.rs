//! SIGHUP: the configuration file read again on the registration thread. What may change while
//! traffic flows is applied at once (the log level, the per-source REGISTER limits, the home
//! domains served and their I-CSCFs); every other key that changed is named in the log as
//! needing a restart, and keeps its running value. A file that no longer parses or validates
//! changes nothing (the error is logged).

use std::path::Path;
use std::time::Instant;

use crate::config::Config;
use crate::control::log;
use crate::control::registrar::Registrar;

/// The keys a reload applies; any other change needs a restart.
pub const RELOADABLE: &[&str] = &[
    "log.level",
    "ue.register_burst_per_source",
    "ue.register_rate_per_source",
    "core.home_domains",
    "core.icscf_by_domain",
];

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys applied.
    pub applied: Vec<String>,
    /// Keys that changed in the file and need a restart (their running values stay).
    pub needs_restart: Vec<String>,
}

/// The dotted keys whose values differ between two configurations.
pub fn changed_keys(old: &Config, new: &Config) -> Result<Vec<String>, String> {
    let a = toml::Value::try_from(old).map_err(|e| e.to_string())?;
    let b = toml::Value::try_from(new).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out.sort();
    Ok(out)
}

fn diff(at: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) if !at.contains('.') => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(&path, p, q, out),
                    _ => out.push(path),
                }
            }
        }
        _ if a != b => out.push(at.to_string()),
        _ => {}
    }
}

/// Reads `path` again and applies what can change to `live` (the running configuration) and
/// the registrar.
pub fn reload(
    path: &Path,
    live: &mut Config,
    registrar: &mut Registrar,
    now: Instant,
) -> Result<Reloaded, String> {
    let new = Config::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut done = Reloaded::default();
    for key in changed_keys(live, &new)? {
        if RELOADABLE.contains(&key.as_str()) {
            done.applied.push(key);
        } else {
            done.needs_restart.push(key);
        }
    }
    live.log = new.log.clone();
    live.ue.register_burst_per_source = new.ue.register_burst_per_source;
    live.ue.register_rate_per_source = new.ue.register_rate_per_source;
    live.core.home_domains = new.core.home_domains.clone();
    live.core.icscf_by_domain = new.core.icscf_by_domain.clone();
    log::set_level(live.log.level);
    registrar.reload(
        live.core.served_domains(),
        live.core
            .icscf_by_domain
            .iter()
            .map(|(d, a)| (d.clone(), *a))
            .collect(),
        (
            live.ue.register_burst_per_source,
            live.ue.register_rate_per_source,
        ),
        now,
    );
    Ok(done)
}

/// [`reload`], said in the log.
pub fn reload_logged(path: &Path, live: &mut Config, registrar: &mut Registrar, now: Instant) {
    match reload(path, live, registrar, now) {
        Ok(r) => {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "nothing".to_string()
                } else {
                    v.join(", ")
                }
            };
            log::info(format_args!(
                "SIGHUP: {} reloaded: applied {}",
                path.display(),
                list(&r.applied)
            ));
            if !r.needs_restart.is_empty() {
                log::warn(format_args!(
                    "SIGHUP: changed but not applied (they need a restart): {}",
                    r.needs_restart.join(", ")
                ));
            }
        }
        Err(e) => log::error(format_args!(
            "SIGHUP: nothing reloaded: {e} (the running configuration stays)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[ue]
interface = "eth0"
addresses = ["10.46.0.1"]
[core]
interface = "eth1"
address = "10.0.1.10"
dns = "10.0.1.53:53"
home_domains = ["ims.example.org"]
[log]
level = "info"
"#;

    #[test]
    fn the_changed_keys_are_named_and_split() {
        let old = Config::parse(BASE).unwrap();
        assert!(changed_keys(&old, &old).unwrap().is_empty());
        let text = BASE
            .replace("level = \"info\"", "level = \"debug\"")
            .replace(
                "home_domains = [\"ims.example.org\"]",
                "home_domains = [\"ims.example.org\", \"ims.other.org\"]\nregister_burst_per_source = 5",
            )
            .replace("addresses = [\"10.46.0.1\"]", "addresses = [\"10.46.0.2\"]");
        // (register_burst_per_source belongs to [ue]: put it there)
        let text = text.replace("\nregister_burst_per_source = 5", "").replace(
            "addresses = [\"10.46.0.2\"]",
            "addresses = [\"10.46.0.2\"]\nregister_burst_per_source = 5",
        );
        let new = Config::parse(&text).unwrap();
        let keys = changed_keys(&old, &new).unwrap();
        assert_eq!(
            keys,
            [
                "core.home_domains",
                "log.level",
                "ue.addresses",
                "ue.register_burst_per_source"
            ]
        );
        let (apply, restart): (Vec<_>, Vec<_>) =
            keys.iter().partition(|k| RELOADABLE.contains(&k.as_str()));
        assert_eq!(restart, ["ue.addresses"]);
        assert_eq!(apply.len(), 3);
    }
}
