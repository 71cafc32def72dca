//! systemd's readiness notification (`Type=notify`, sd_notify(3)), without libsystemd: one
//! datagram to the Unix socket `NOTIFY_SOCKET` names (a path, or `@name` for the abstract
//! namespace). `pcscf run` says `READY=1` once its workers run and its control socket is
//! bound, and `STOPPING=1` when it starts to stop. Without `NOTIFY_SOCKET` (not started by
//! systemd, or `Type=simple`) nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for a `Type=notify` service.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tell the service manager `state` (e.g. `READY=1`) if it asked to be told; a failure is
/// logged, never fatal: the service manager's own timeout says the rest.
pub(super) fn notify(state: &str) {
    let Some(addr) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    if let Err(e) = notify_to(&addr, state) {
        crate::control::log::warn(format_args!(
            "{NOTIFY_SOCKET}={}: telling systemd {state}: {e}",
            addr.to_string_lossy()
        ));
    }
}

/// Send `state` as one datagram to the socket `addr` names (`@…`: the abstract namespace).
pub(super) fn notify_to(addr: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &socket_addr(addr)?)?;
    Ok(())
}

fn socket_addr(addr: &OsStr) -> io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    match addr.as_bytes() {
        [] => Err(io::Error::new(io::ErrorKind::InvalidInput, "empty")),
        [b'@', name @ ..] => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        [b'/', ..] => SocketAddr::from_pathname(addr),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor @abstract",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn a_path_socket_gets_the_state() {
        let dir = std::env::temp_dir().join(format!("pcscf-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
        notify_to(path.as_os_str(), "STOPPING=1").unwrap();
        assert_eq!(recv(&sock), "STOPPING=1");
        drop(sock);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_abstract_socket_gets_the_state() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("pcscf-notify-test-{}", std::process::id());
        let sock =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(recv(&sock), "READY=1");
    }

    #[test]
    fn nonsense_and_absent_sockets_are_errors() {
        assert!(notify_to(OsStr::new(""), "READY=1").is_err());
        assert!(notify_to(OsStr::new("relative/path"), "READY=1").is_err());
        assert!(notify_to(OsStr::new("/nonexistent/pcscf/notify.sock"), "READY=1").is_err());
    }
}
