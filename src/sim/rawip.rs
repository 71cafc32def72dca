//! Raw IPv4 sockets for the simulators and tests: send whole IP packets (IP_HDRINCL through
//! IPPROTO_RAW) and receive every packet of one IP protocol (e.g. ESP), non-blocking. This is
//! how a user-space UE speaks ESP on a kernel without ESP support.

use std::net::{Ipv4Addr, Ipv6Addr};
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

/// A non-blocking raw IPv6 socket for ESP, both ways: the kernel writes the IPv6 header on send
/// and strips it on receive.
pub fn esp6_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK,
            libc::IPPROTO_ESP,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Send an ESP payload (from the SPI on) to `dst` over IPv6.
pub fn send_esp6(fd: &OwnedFd, esp: &[u8], dst: Ipv6Addr) {
    // SAFETY: sockaddr_in6 is plain data; zeroed is valid and we fill family and address.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as u16;
    sa.sin6_addr.s6_addr = dst.octets();
    // SAFETY: esp is valid for its length; sa is a valid sockaddr_in6.
    unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            esp.as_ptr() as *const libc::c_void,
            esp.len(),
            0,
            &sa as *const libc::sockaddr_in6 as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in6>() as u32,
        )
    };
}

/// The next ESP payload received over IPv6 (without its IPv6 header), and its source.
pub fn recv_esp6(fd: &OwnedFd, buf: &mut [u8]) -> Option<(usize, Ipv6Addr)> {
    // SAFETY: sockaddr_in6 is plain data; recvfrom fills at most `len` bytes of it and at most
    // buf.len() bytes of buf; the socket is non-blocking.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in6>() as u32;
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            0,
            &mut from as *mut libc::sockaddr_in6 as *mut libc::sockaddr,
            &mut len,
        )
    };
    (n > 0).then(|| (n as usize, Ipv6Addr::from(from.sin6_addr.s6_addr)))
}
