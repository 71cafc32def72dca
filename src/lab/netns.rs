//! Network namespaces for a lab: `ue` — `pcscf` — `core`, joined by two veth pairs, with
//! addresses that exist only inside the namespaces. Everything is removed on drop, also when a
//! test fails half-way. Needs root and iproute2's `ip`.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::Command;

/// Run `ip` with `args`; an error names the command and what `ip` said.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// Whether we can create namespaces here (root and `ip`), with the reason when not.
pub fn check_privileges() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "creating network namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)".into(),
        );
    }
    ip(&["-V"]).map_err(|e| format!("the `ip` command (iproute2) is required: {e}"))
}

/// The lab's three namespaces and the P-CSCF's two interfaces.
#[derive(Debug)]
pub struct Lab {
    pub ue: String,
    pub pcscf: String,
    pub core: String,
    /// The P-CSCF's interface toward the UE namespace, and toward the core.
    pub pcscf_ue_if: String,
    pub pcscf_core_if: String,
    pub ue_if: String,
    pub core_if: String,
    pub ue_addr: IpAddr,
    pub pcscf_ue_addr: IpAddr,
    pub pcscf_core_addr: IpAddr,
    pub core_addr: IpAddr,
    /// IPv6 on the UE side too (fd00:211::/64): UEs of either family.
    pub ue_addr6: IpAddr,
    pub pcscf_ue_addr6: IpAddr,
}

impl Lab {
    /// Create `<prefix>-ue`, `<prefix>-pc`, `<prefix>-co` with IPv4 /24s `10.211.0.0` (ue side)
    /// and `10.212.0.0` (core side): .2 is the peer, .1 the P-CSCF; the ue side also has
    /// `fd00:211::/64` (::2 the UE, ::1 the P-CSCF). `tag` (≤ 3 chars) keeps
    /// interface names unique among concurrent labs of one process.
    pub fn new(prefix: &str, tag: &str) -> Result<Lab, String> {
        Lab::with_queues(prefix, tag, 1)
    }

    /// As [`Lab::new`], with `queues` RX and TX queues on each veth end: one per AF_XDP
    /// worker. In native (drv) XDP a veth delivers a packet on the receive queue numbered as
    /// the peer's transmit queue, which the sender's kernel picks by flow hash, so flows spread
    /// over the workers (generic XDP sees every packet on queue 0).
    pub fn with_queues(prefix: &str, tag: &str, queues: u32) -> Result<Lab, String> {
        check_privileges()?;
        // one queue: veth's defaults (one in use), as labs always had
        let q = queues.to_string();
        let qs: Vec<&str> = if queues > 1 {
            vec!["numtxqueues", &q, "numrxqueues", &q]
        } else {
            Vec::new()
        };
        let pid = std::process::id() % 100_000;
        let lab = Lab {
            ue: format!("{prefix}-{pid}-{tag}-ue"),
            pcscf: format!("{prefix}-{pid}-{tag}-pc"),
            core: format!("{prefix}-{pid}-{tag}-co"),
            pcscf_ue_if: format!("l{pid}{tag}u"),
            pcscf_core_if: format!("l{pid}{tag}c"),
            ue_if: format!("l{pid}{tag}U"),
            core_if: format!("l{pid}{tag}C"),
            ue_addr: "10.211.0.2".parse().expect("literal"),
            pcscf_ue_addr: "10.211.0.1".parse().expect("literal"),
            pcscf_core_addr: "10.212.0.1".parse().expect("literal"),
            core_addr: "10.212.0.2".parse().expect("literal"),
            ue_addr6: "fd00:211::2".parse().expect("literal"),
            pcscf_ue_addr6: "fd00:211::1".parse().expect("literal"),
        };
        // From here on, Drop removes whatever was made.
        for ns in [&lab.ue, &lab.pcscf, &lab.core] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["link", "add", &lab.pcscf_ue_if, "netns", &lab.pcscf]
            .into_iter()
            .chain(qs.iter().copied())
            .chain(["type", "veth", "peer", "name", &lab.ue_if, "netns", &lab.ue])
            .chain(qs.iter().copied())
            .collect::<Vec<_>>())?;
        ip(&["link", "add", &lab.pcscf_core_if, "netns", &lab.pcscf]
            .into_iter()
            .chain(qs.iter().copied())
            .chain([
                "type",
                "veth",
                "peer",
                "name",
                &lab.core_if,
                "netns",
                &lab.core,
            ])
            .chain(qs.iter().copied())
            .collect::<Vec<_>>())?;
        for (ns, ifn, addr) in [
            (&lab.pcscf, &lab.pcscf_ue_if, "10.211.0.1/24"),
            (&lab.ue, &lab.ue_if, "10.211.0.2/24"),
            (&lab.pcscf, &lab.pcscf_core_if, "10.212.0.1/24"),
            (&lab.core, &lab.core_if, "10.212.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", ifn])?;
            ip(&["-n", ns, "link", "set", ifn, "up"])?;
        }
        for (ns, ifn, addr) in [
            (&lab.pcscf, &lab.pcscf_ue_if, "fd00:211::1/64"),
            (&lab.ue, &lab.ue_if, "fd00:211::2/64"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", ifn, "nodad"])?;
        }
        Ok(lab)
    }

    /// Set the MTU of all four veth ends (before the P-CSCF attaches to them).
    pub fn set_mtu(&self, mtu: u32) -> Result<(), String> {
        let m = mtu.to_string();
        for (ns, ifn) in [
            (&self.pcscf, &self.pcscf_ue_if),
            (&self.ue, &self.ue_if),
            (&self.pcscf, &self.pcscf_core_if),
            (&self.core, &self.core_if),
        ] {
            ip(&["-n", ns, "link", "set", ifn, "mtu", &m])?;
        }
        Ok(())
    }

    /// Whether an XDP program is attached to an interface of the P-CSCF namespace.
    pub fn xdp_attached(&self) -> bool {
        Command::new("ip")
            .args(["-n", &self.pcscf, "link", "show"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("xdp"))
    }
}

/// A second P-CSCF namespace beside a [`Lab`]'s, for a pair of nodes: its links reach the same
/// UE and core namespaces (each of those bridges its two links, and its address moves to the
/// bridge), and it holds no service address until [`Standby::take_over`] moves the active
/// node's addresses to it, as keepalived/VRRP would. Dropping it removes its namespace.
#[derive(Debug)]
pub struct Standby {
    pub ns: String,
    pub ue_if: String,
    pub core_if: String,
    lab_pcscf: String,
    lab_ue: String,
    lab_core: String,
    lab_ue_if: String,
    lab_core_if: String,
}

impl Lab {
    /// The standby node's namespace `<prefix>-<pid>-<tag>-pb`, linked to this lab's UE and core
    /// namespaces (IPv4 only).
    pub fn add_standby(&self) -> Result<Standby, String> {
        let ns = self.pcscf.replace("-pc", "-pb");
        let sb = Standby {
            ns: ns.clone(),
            ue_if: format!("{}v", self.pcscf_ue_if.trim_end_matches('u')),
            core_if: format!("{}d", self.pcscf_core_if.trim_end_matches('c')),
            lab_pcscf: self.pcscf.clone(),
            lab_ue: self.ue.clone(),
            lab_core: self.core.clone(),
            lab_ue_if: self.pcscf_ue_if.clone(),
            lab_core_if: self.pcscf_core_if.clone(),
        };
        // From here on, Standby's Drop removes its namespace (its veths go with it).
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        for (peer_ns, peer_if, lab_if, ours, addr) in [
            (
                &self.ue,
                sb.ue_if.to_uppercase(),
                &self.ue_if,
                &sb.ue_if,
                "10.211.0.2/24",
            ),
            (
                &self.core,
                sb.core_if.to_uppercase(),
                &self.core_if,
                &sb.core_if,
                "10.212.0.2/24",
            ),
        ] {
            ip(&[
                "link", "add", ours, "netns", &ns, "type", "veth", "peer", "name", &peer_if,
                "netns", peer_ns,
            ])?;
            ip(&["-n", &ns, "link", "set", ours, "up"])?;
            // the peer's namespace bridges its link to the active node and this one
            ip(&["-n", peer_ns, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", peer_ns, "addr", "del", addr, "dev", lab_if])?;
            ip(&["-n", peer_ns, "link", "set", lab_if, "master", "br0"])?;
            ip(&["-n", peer_ns, "link", "set", &peer_if, "master", "br0"])?;
            ip(&["-n", peer_ns, "link", "set", &peer_if, "up"])?;
            ip(&["-n", peer_ns, "addr", "add", addr, "dev", "br0"])?;
            ip(&["-n", peer_ns, "link", "set", "br0", "up"])?;
        }
        Ok(sb)
    }
}

impl Standby {
    /// The active node's service addresses (UE side 10.211.0.1, core side 10.212.0.1) move to
    /// this one, and the UE and core namespaces forget the old node's link addresses (what
    /// the new owner's gratuitous ARP does).
    pub fn take_over(&self) -> Result<(), String> {
        for (lab_if, ours, addr) in [
            (&self.lab_ue_if, &self.ue_if, "10.211.0.1/24"),
            (&self.lab_core_if, &self.core_if, "10.212.0.1/24"),
        ] {
            ip(&["-n", &self.lab_pcscf, "addr", "del", addr, "dev", lab_if])?;
            ip(&["-n", &self.ns, "addr", "add", addr, "dev", ours])?;
        }
        for ns in [&self.lab_ue, &self.lab_core] {
            ip(&["-n", ns, "neigh", "flush", "all"])?;
        }
        Ok(())
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace removes its veth ends, and with them their peers.
        for ns in [&self.ue, &self.pcscf, &self.core] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Run `f` on a new thread inside namespace `ns` (sockets it opens stay there).
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: a valid namespace fd; setns changes only this thread's network namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}
