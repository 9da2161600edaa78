//! Cutting a TCP connection with a reset, for the relay and the peer alike.

use std::io;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// Ends a connection so that its peer sees a reset, never a clean end of
/// stream, and wakes every thread blocked reading or writing it.
///
/// A FIN (`shutdown`) would tell the peer its stream ended normally, which is
/// a lie when the stream was cut (the relay's idle timeout, drain timeout,
/// DELETE, expiry, shutdown; a peer whose `--forward` service is down): the
/// other side must know the stream was truncated. On Linux a
/// `connect(AF_UNSPEC)` on a TCP socket aborts it: the kernel sends a RST and
/// fails pending calls with `ECONNRESET`. Elsewhere (or if that fails) the
/// socket gets `SO_LINGER` 0, so its close resets, and is shut down to wake
/// its threads. Over TLS and WebSocket this is the right cut too: no
/// close_notify and no close frame go out, so nobody mistakes it for an end.
pub fn cut(sock: &TcpStream) {
    #[cfg(target_os = "linux")]
    if rustix::net::connect_unspec(sock).is_ok() {
        // The socket is now unconnected: wake anything still blocked on it.
        let _ = sock.shutdown(Shutdown::Both);
        return;
    }
    let _ = set_linger_zero(sock);
    let _ = sock.shutdown(Shutdown::Read);
}

#[cfg(target_os = "linux")]
fn set_linger_zero(sock: &TcpStream) -> io::Result<()> {
    rustix::net::sockopt::set_socket_linger(sock, Some(Duration::ZERO))?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn set_linger_zero(_sock: &TcpStream) -> io::Result<()> {
    let _ = Duration::ZERO;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn a_cut_connection_is_a_reset_for_the_peer_and_wakes_a_blocked_reader() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(WAIT)).unwrap();
        let ours = std::sync::Arc::new(ours);
        let reader = {
            let ours = std::sync::Arc::clone(&ours);
            std::thread::spawn(move || {
                let mut buf = [0u8; 16];
                // Blocks until the cut: nothing is ever sent to us.
                (&*ours).read(&mut buf)
            })
        };
        // The reader may not be blocked yet; the cut must wake it either way.
        peer.write_all(b"").unwrap();
        let start = Instant::now();
        cut(&ours);
        let woke = reader.join().unwrap();
        assert!(
            start.elapsed() < WAIT,
            "the blocked reader returned: {woke:?}"
        );
        let mut buf = [0u8; 16];
        let seen = peer.read(&mut buf);
        assert_eq!(
            seen.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset),
            "the peer must see a reset, not a clean end"
        );
    }
}
