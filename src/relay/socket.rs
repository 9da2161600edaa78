//! Socket-level operations std does not offer: listening with a chosen
//! backlog and `SO_REUSEPORT`, and stopping a listener (the reset cut lives in
//! `transport::cut`, shared with the peer).

use std::io;
use std::net::{SocketAddr, TcpListener};

/// The listen backlog when the configuration names none: a burst of this many
/// connections waits in the kernel instead of overflowing into SYN retransmits
/// (a one-second stall each). std's own is 128.
pub const DEFAULT_BACKLOG: u32 = 1024;

/// Where Linux keeps the cap it silently applies to every listen backlog.
const SOMAXCONN_PATH: &str = "/proc/sys/net/core/somaxconn";

/// The backlog the kernel will really use for `wanted`: Linux caps it at
/// `net.core.somaxconn` without saying so.
pub fn effective_backlog(wanted: u32) -> u32 {
    let cap = std::fs::read_to_string(SOMAXCONN_PATH)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match cap {
        Some(cap) => wanted.min(cap),
        None => wanted,
    }
}

/// Binds a listening TCP socket on `addr` with `backlog` (capped by the
/// kernel, see [`effective_backlog`]) and, when `reuse_port` is set,
/// `SO_REUSEPORT`, so a new relay process can bind the same port while the old
/// one drains. `SO_REUSEADDR` is set as std does, so a restart does not wait
/// out `TIME_WAIT`.
#[cfg(target_os = "linux")]
pub fn bind_listener(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if reuse_port {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    rustix::net::listen(&fd, backlog)?;
    Ok(TcpListener::from(fd))
}

/// Binds a listening TCP socket (std's backlog; no `SO_REUSEPORT` here).
#[cfg(not(target_os = "linux"))]
pub fn bind_listener(addr: SocketAddr, backlog: u32, reuse_port: bool) -> io::Result<TcpListener> {
    let _ = (backlog, reuse_port);
    TcpListener::bind(addr)
}

/// Stops a listening socket at once: new connections are refused (the
/// kernel answers their SYN with a reset, so a balancer's health check and
/// new peers go elsewhere) and a thread blocked in `accept` on it returns
/// with an error. The descriptor closes when its last owner drops it.
pub fn stop_listening(listener: &TcpListener) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::net::shutdown(listener, rustix::net::Shutdown::Read)?;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listener;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "stopping a listener",
        ))
    }
}

/// Cuts a connection with a reset: the one helper the peer shares
/// (see [`crate::transport::cut`]).
pub use crate::transport::cut::cut;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    #[cfg(target_os = "linux")]
    fn a_stopped_listener_refuses_connections_and_wakes_its_accept() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap(), 16, false).unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = std::sync::Arc::new(listener);
        let blocked = {
            let listener = std::sync::Arc::clone(&listener);
            std::thread::spawn(move || listener.accept().map(|_| ()))
        };
        stop_listening(&listener).unwrap();
        assert!(blocked.join().unwrap().is_err(), "accept returns an error");
        let refused = TcpStream::connect_timeout(&addr, WAIT).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn listeners_get_the_backlog_asked_for_up_to_the_kernel_cap() {
        assert!(
            effective_backlog(u32::MAX) >= 128,
            "somaxconn is at least the old default"
        );
        assert_eq!(effective_backlog(7), 7);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn two_listeners_share_a_port_only_with_reuse_port() {
        let first = bind_listener("127.0.0.1:0".parse().unwrap(), 16, true).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_listener(addr, 16, true).expect("a second SO_REUSEPORT listener binds");
        drop(second);
        let err = bind_listener(addr, 16, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
