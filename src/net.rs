//! Small helpers shared by every listener: what to tell the user when a port cannot be bound.

use std::net::SocketAddr;

/// True when the error means "this machine has no IPv6" (so the IPv4 wildcard should be tried).
pub fn ipv6_missing(e: &std::io::Error) -> bool {
    // EAFNOSUPPORT (97) when IPv6 is compiled out or disabled; EADDRNOTAVAIL when no address.
    e.raw_os_error() == Some(97) || e.kind() == std::io::ErrorKind::AddrNotAvailable
}

/// One clear sentence naming the port, the setting that chose it, and what to do.
pub fn bind_message(what: &str, addr: SocketAddr, e: &std::io::Error) -> String {
    let port = addr.port();
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {what} {port} ({addr}): the port is already in use by another \
             program (another confab?). Stop it or choose another port"
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot listen on {what} {port} ({addr}): permission denied. Ports below 1024 need \
             CAP_NET_BIND_SERVICE (the systemd unit grants it); by hand, use a port above 1024"
        ),
        _ => format!("cannot listen on {what} {port} ({addr}): {e}"),
    }
}
