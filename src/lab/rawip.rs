//! Raw IPv4 sockets for the simulators and tests: send whole IP packets (IP_HDRINCL through
//! IPPROTO_RAW) and receive every packet of one IP protocol (e.g. ESP), non-blocking. This is
//! how a user-space UE speaks ESP on a kernel without ESP support.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A non-blocking raw IPv4 socket for `proto` (`libc::IPPROTO_RAW` to send, `IPPROTO_ESP` to
/// receive ESP).
pub fn raw(proto: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send a whole IPv4 packet (header included) toward `dst`.
pub fn send_ip(fd: &OwnedFd, pkt: &[u8], dst: Ipv4Addr) {
    // SAFETY: sockaddr_in is plain data; zeroed is valid and we fill family and address.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_addr.s_addr = u32::from(dst).to_be();
    // SAFETY: pkt is valid for its length; sa is a valid sockaddr_in.
    unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr() as *const libc::c_void,
            pkt.len(),
            0,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
}

/// The next packet (with its IP header), if one is waiting.
pub fn recv_ip(fd: &OwnedFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: buf is valid for writes of its length; the socket is non-blocking.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
        )
    };
    (n > 0).then_some(n as usize)
}
