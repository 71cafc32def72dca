//! rtnetlink, just enough for XDP: read a link's MAC and attached XDP program
//! (`RTM_GETLINK`, `IFLA_ADDRESS`, `IFLA_XDP`), and attach, replace or detach a program
//! (`RTM_SETLINK` with a nested `IFLA_XDP`). Errors carry the kernel's extended-ack text.
//!
//! Owns: message building and parsing (native-endian, 4-byte aligned attributes).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NETLINK_ROUTE: i32 = 0;
const SOL_NETLINK: i32 = 270;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSGERR_ATTR_MSG: u16 = 1;

const IFLA_ADDRESS: u16 = 1;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_NUM_RX_QUEUES: u16 = 32;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_EXPECTED_FD: u16 = 8;

/// `XDP_FLAGS_*` for `IFLA_XDP_FLAGS`.
pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
pub const XDP_FLAGS_DRV_MODE: u32 = 4;
pub const XDP_FLAGS_REPLACE: u32 = 16;

/// `IFLA_XDP_ATTACHED` values.
pub const XDP_ATTACHED_NONE: u8 = 0;
pub const XDP_ATTACHED_DRV: u8 = 1;
pub const XDP_ATTACHED_SKB: u8 = 2;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// What `RTM_GETLINK` tells about one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkXdp {
    pub mac: Option<[u8; 6]>,
    /// `XDP_ATTACHED_*`.
    pub attached: u8,
    /// Id of the attached program (0: none).
    pub prog_id: u32,
    /// Receive queues (`IFLA_NUM_RX_QUEUES`; 0 when the kernel does not say).
    pub rx_queues: u32,
    /// A veth (`IFLA_INFO_KIND`): generic XDP sees all its packets on queue 0.
    pub veth: bool,
}

struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2) call with constant arguments.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: i32 = 1;
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            // SAFETY: `one` is a live c_int and the length says so. Failure only loses the
            // extended error text, so the result is ignored.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    &one as *const i32 as *const libc::c_void,
                    4,
                );
            }
        }
        // A request waits for its answer at most this long (recv would otherwise block for
        // ever if the answer never comes).
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: a timeval of its size on our socket.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Socket { fd, seq: 1 })
    }

    /// Send one request and return the reply messages (type, payload) up to the ACK or DONE.
    fn request(
        &mut self,
        msg_type: u16,
        flags: u16,
        body: &[u8],
    ) -> io::Result<Vec<(u16, Vec<u8>)>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = NLMSG_HDRLEN + body.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&msg_type.to_ne_bytes());
        m.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        // SAFETY: `m` is a live buffer of m.len() bytes; the kernel fills in the address.
        let r = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                m.as_ptr() as *const libc::c_void,
                m.len(),
                0,
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..64 {
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: `buf` and `from` are live, writable buffers of the stated lengths; the
            // socket has a receive timeout, so this does not block for ever.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                    &mut from as *mut libc::sockaddr_nl as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            // Only the kernel (port id 0) answers requests; anything else is another
            // process writing to our port id.
            if (from_len as usize) < std::mem::size_of::<libc::sockaddr_nl>() || from.nl_pid != 0 {
                continue;
            }
            if parse_answer(&buf[..n as usize], seq, &mut out)? {
                return Ok(out);
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "netlink: no ACK"))
    }
}

/// The extended-ack message text of an `NLMSG_ERROR` payload, if any (with CAP_ACK set the
/// echoed request is only its header).
/// One answer datagram: messages of request `seq` go to `out`; returns whether the answer is
/// complete (ACK, error, NLMSG_DONE). Other sequence numbers are skipped; every length is
/// checked, so a truncated or hostile datagram is an error, never a panic.
fn parse_answer(mut p: &[u8], seq: u32, out: &mut Vec<(u16, Vec<u8>)>) -> io::Result<bool> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("netlink: {what}"));
    while p.len() >= NLMSG_HDRLEN {
        let mlen = u32::from_ne_bytes([p[0], p[1], p[2], p[3]]) as usize;
        let mtype = u16::from_ne_bytes([p[4], p[5]]);
        let mflags = u16::from_ne_bytes([p[6], p[7]]);
        let mseq = u32::from_ne_bytes([p[8], p[9], p[10], p[11]]);
        if mlen < NLMSG_HDRLEN || mlen > p.len() {
            return Err(bad("bad message length"));
        }
        let payload = &p[NLMSG_HDRLEN..mlen];
        p = &p[((mlen + 3) & !3).min(p.len())..];
        if mseq != seq {
            continue;
        }
        match mtype {
            NLMSG_ERROR => {
                // struct nlmsgerr: error i32, then the request's header (and ack TLVs).
                let err = payload
                    .get(0..4)
                    .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .ok_or_else(|| bad("truncated error message"))?;
                if err == 0 {
                    return Ok(true);
                }
                let text = ext_ack_msg(payload, mflags);
                let e = io::Error::from_raw_os_error(err.saturating_neg());
                return Err(match text {
                    Some(t) => io::Error::new(e.kind(), format!("{e}: {t}")),
                    None => e,
                });
            }
            NLMSG_DONE => return Ok(true),
            _ => out.push((mtype, payload.to_vec())),
        }
    }
    Ok(false)
}

fn ext_ack_msg(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let mut p = payload.get(4 + NLMSG_HDRLEN..)?;
    while p.len() >= 4 {
        let alen = u16::from_ne_bytes([p[0], p[1]]) as usize;
        let atype = u16::from_ne_bytes([p[2], p[3]]) & 0x3fff;
        if alen < 4 || alen > p.len() {
            break;
        }
        if atype == NLMSGERR_ATTR_MSG {
            let v = &p[4..alen];
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            return Some(String::from_utf8_lossy(&v[..end]).into_owned());
        }
        p = &p[((alen + 3) & !3).min(p.len())..];
    }
    None
}

fn ifinfomsg(ifindex: u32) -> Vec<u8> {
    let mut b = vec![0u8; IFINFOMSG_LEN];
    // ifi_family = AF_UNSPEC (0), ifi_type = 0, ifi_index at offset 4.
    b[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    b
}

fn put_attr(b: &mut Vec<u8>, atype: u16, value: &[u8]) {
    let len = 4 + value.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&atype.to_ne_bytes());
    b.extend_from_slice(value);
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
}

/// Iterate attributes (type without flag bits, value).
fn attrs(mut p: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if p.len() < 4 {
            return None;
        }
        let alen = u16::from_ne_bytes([p[0], p[1]]) as usize;
        let atype = u16::from_ne_bytes([p[2], p[3]]) & 0x3fff;
        if alen < 4 || alen > p.len() {
            return None;
        }
        let v = &p[4..alen];
        p = &p[((alen + 3) & !3).min(p.len())..];
        Some((atype, v))
    })
}

/// Read the MAC and XDP state of `ifindex`.
pub fn link_xdp(ifindex: u32) -> io::Result<LinkXdp> {
    let mut s = Socket::open()?;
    let msgs = s.request(RTM_GETLINK, 0, &ifinfomsg(ifindex))?;
    let mut out = LinkXdp::default();
    for (t, payload) in msgs {
        if t != RTM_NEWLINK || payload.len() < IFINFOMSG_LEN {
            continue;
        }
        for (at, v) in attrs(&payload[IFINFOMSG_LEN..]) {
            match at {
                IFLA_ADDRESS if v.len() == 6 => out.mac = Some(v.try_into().unwrap()),
                IFLA_NUM_RX_QUEUES if v.len() == 4 => {
                    out.rx_queues = u32::from_ne_bytes(v.try_into().unwrap())
                }
                IFLA_LINKINFO => {
                    for (it, iv) in attrs(v) {
                        if it == IFLA_INFO_KIND {
                            out.veth = iv.split(|&b| b == 0).next() == Some(b"veth");
                        }
                    }
                }
                IFLA_XDP => {
                    for (xt, xv) in attrs(v) {
                        match xt {
                            IFLA_XDP_ATTACHED if !xv.is_empty() => out.attached = xv[0],
                            IFLA_XDP_PROG_ID if xv.len() == 4 => {
                                out.prog_id = u32::from_ne_bytes(xv.try_into().unwrap())
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        return Ok(out);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no link with index {ifindex}"),
    ))
}

/// Attach `prog_fd` (or detach with -1) with `flags` (`XDP_FLAGS_*`). With
/// `XDP_FLAGS_REPLACE`, `expected_fd` names the program that must be attached now.
pub fn set_xdp(ifindex: u32, prog_fd: i32, flags: u32, expected_fd: Option<i32>) -> io::Result<()> {
    let mut nested = Vec::new();
    put_attr(&mut nested, IFLA_XDP_FD, &prog_fd.to_ne_bytes());
    put_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    if let Some(e) = expected_fd {
        put_attr(&mut nested, IFLA_XDP_EXPECTED_FD, &e.to_ne_bytes());
    }
    let mut body = ifinfomsg(ifindex);
    put_attr(&mut body, IFLA_XDP | NLA_F_NESTED, &nested);
    let mut s = Socket::open()?;
    s.request(RTM_SETLINK, 0, &body)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn nlmsg(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&NLM_F_ACK_TLVS.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while !m.len().is_multiple_of(4) {
            m.push(0);
        }
        m
    }

    #[test]
    fn hostile_answers_are_errors_not_panics() {
        let mut out = Vec::new();
        // A truncated NLMSG_ERROR: the old code sliced `payload[0..4]` and panicked.
        assert!(parse_answer(&nlmsg(NLMSG_ERROR, 3, &[]), 3, &mut out).is_err());
        assert!(parse_answer(&nlmsg(NLMSG_ERROR, 3, &[1, 2]), 3, &mut out).is_err());
        // An error code whose negation overflows.
        assert!(
            parse_answer(&nlmsg(NLMSG_ERROR, 3, &i32::MIN.to_ne_bytes()), 3, &mut out).is_err()
        );
        // An error with ack TLVs cut anywhere.
        let mut e = (-22i32).to_ne_bytes().to_vec();
        e.extend(nlmsg(RTM_SETLINK, 3, &[]));
        put_attr(&mut e, NLMSGERR_ATTR_MSG, b"bad thing\0");
        let m = nlmsg(NLMSG_ERROR, 3, &e);
        let err = parse_answer(&m, 3, &mut out).unwrap_err();
        assert!(err.to_string().contains("bad thing"), "{err}");
        for cut in 0..m.len() {
            let _ = parse_answer(&m[..cut], 3, &mut Vec::new());
        }
        // Lengths below the header or past the datagram.
        let mut m = nlmsg(RTM_NEWLINK, 3, &[0; 16]);
        m[0..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(parse_answer(&m, 3, &mut out).is_err());
        m[0..4].copy_from_slice(&9999u32.to_ne_bytes());
        assert!(parse_answer(&m, 3, &mut out).is_err());
        // Another sequence number is skipped (a stale ACK does not end this request).
        let mut m = nlmsg(NLMSG_ERROR, 2, &0i32.to_ne_bytes());
        m.extend(nlmsg(RTM_NEWLINK, 3, &[0; 16]));
        let mut out = Vec::new();
        assert!(!parse_answer(&m, 3, &mut out).unwrap());
        assert_eq!(out.len(), 1);
    }

    /// A forged ACK from another socket (any process may address ours by port id), with the
    /// sequence number of the next request, is ignored: the kernel's answer counts.
    #[test]
    fn answers_from_other_senders_are_ignored() {
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
        let mut s = Socket::open().unwrap();
        // The first request binds the socket to its port id (autobind on send).
        s.request(RTM_GETLINK, 0, &ifinfomsg(1)).unwrap();
        let mut me: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut l = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: getsockname fills a sockaddr_nl of the stated size.
        let r = unsafe {
            libc::getsockname(
                s.fd.as_raw_fd(),
                &mut me as *mut libc::sockaddr_nl as *mut libc::sockaddr,
                &mut l,
            )
        };
        assert_eq!(r, 0);
        assert_ne!(me.nl_pid, 0);
        let spoof = Socket::open().unwrap();
        let forged = nlmsg(NLMSG_ERROR, s.seq.wrapping_add(1), &0i32.to_ne_bytes());
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as u16;
        to.nl_pid = me.nl_pid;
        // SAFETY: live buffers of the stated sizes.
        let r = unsafe {
            libc::sendto(
                spoof.fd.as_raw_fd(),
                forged.as_ptr() as *const libc::c_void,
                forged.len(),
                0,
                &to as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        assert_eq!(r as usize, forged.len(), "{}", io::Error::last_os_error());
        // ifindex 1 is the loopback of any namespace.
        let msgs = s.request(RTM_GETLINK, 0, &ifinfomsg(1)).unwrap();
        assert!(
            msgs.iter().any(|(t, _)| *t == RTM_NEWLINK),
            "the forged ACK ended the request"
        );
    }
}

/// `ETHTOOL_GCHANNELS`: the queues in use.
const ETHTOOL_GCHANNELS: u32 = 0x3c;

#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// `struct ifreq` with its `ifr_data` member (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _rest: [u8; 16],
}

/// The receive queues `ifname` has in use (`ETHTOOL_GCHANNELS`: its RX plus combined
/// channels), which an AF_XDP socket can bind; `None` where the driver does not say. (The
/// netlink `IFLA_NUM_RX_QUEUES` counts the queues allocated: a veth made without
/// `numrxqueues` has one per possible CPU allocated and one in use.)
pub fn active_rx_queues(ifname: &str) -> Option<u32> {
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: (&mut ch as *mut EthtoolChannels).cast(),
        _rest: [0; 16],
    };
    let n = ifname.len();
    if n == 0 || n >= libc::IFNAMSIZ {
        return None;
    }
    req.name[..n].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket(2) call with constant arguments.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: SIOCETHTOOL reads the ifreq (a NUL-terminated name and a pointer to a live
    // ethtool_channels of the size ETHTOOL_GCHANNELS writes) and writes only into that struct.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SIOCETHTOOL,
            &mut req as *mut IfreqData,
        )
    };
    (r == 0).then(|| ch.rx_count + ch.combined_count)
}
