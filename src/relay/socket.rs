//! Socket-level operations std does not offer: listening with a chosen
//! backlog and `SO_REUSEPORT`, and stopping a listener (the reset cut lives in
//! `transport::cut`, shared with the peer).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

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

/// The indices of the sockets in `socks` whose peer has left, after waiting
/// at most `limit` for one to: one `poll(2)` over all of them.
///
/// A peer has left when the socket shows a hang-up, an error (a reset) or
/// the peer's FIN (`POLLRDHUP`). `POLLIN` is not asked for: bytes a live peer
/// sent early keep it set, which would end every poll at once, and those
/// bytes belong to the relayed stream, so nothing is read here.
#[cfg(target_os = "linux")]
pub fn poll_gone(socks: &[&TcpStream], limit: Duration) -> io::Result<Vec<usize>> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds: Vec<PollFd<'_>> = socks
        .iter()
        .map(|sock| PollFd::new(*sock, PollFlags::RDHUP))
        .collect();
    let timeout = Timespec::try_from(limit).ok();
    match poll(&mut fds, timeout.as_ref()) {
        Ok(0) | Err(rustix::io::Errno::INTR) => Ok(Vec::new()),
        Ok(_) => Ok(fds
            .iter()
            .enumerate()
            .filter(|(_, fd)| left(fd.revents()))
            .map(|(i, _)| i)
            .collect()),
        Err(e) => Err(e.into()),
    }
}

/// Nothing to poll with here: no peer is ever seen leaving early.
#[cfg(not(target_os = "linux"))]
pub fn poll_gone(socks: &[&TcpStream], limit: Duration) -> io::Result<Vec<usize>> {
    let _ = socks;
    std::thread::sleep(limit);
    Ok(Vec::new())
}

#[cfg(target_os = "linux")]
fn left(revents: rustix::event::PollFlags) -> bool {
    use rustix::event::PollFlags;
    revents.intersects(PollFlags::HUP | PollFlags::ERR | PollFlags::RDHUP | PollFlags::NVAL)
}

/// True when the peer of a socket nobody reads has left (see [`poll_gone`]),
/// checked at once, without reading: a connect checks its accept with it
/// just before pairing. Also true when a peek (`MSG_PEEK`, never consuming)
/// finds the end of the stream or a reset.
///
/// A FIN from a server peer that only half-closed (it has nothing to send)
/// looks the same as one that left, and counts as gone: such a peer can no
/// longer send anything, and a parked accept must be a live socket.
pub fn peer_gone(sock: &TcpStream) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::io::Errno;
        use rustix::net::{recv, RecvFlags};
        if poll_gone(&[sock], Duration::ZERO).is_ok_and(|gone| !gone.is_empty()) {
            return true;
        }
        let mut byte = [0u8; 1];
        match recv(sock, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            Ok((0, _)) => true,
            Ok(_) | Err(Errno::AGAIN | Errno::INTR) => false,
            Err(_) => true,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sock;
        false
    }
}

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
