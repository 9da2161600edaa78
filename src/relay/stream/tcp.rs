//! Plain TCP: reads that take what has arrived without waiting, read
//! deadlines, Nagle off.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Reads what has already arrived on `sock`, without waiting. `Ok(None)`:
/// nothing has (or this system has no such read), and the caller waits with a
/// timeout. A request has usually arrived by the time its thread reads it, and
/// a read that cannot block needs no timeout set first.
pub fn read_arrived(sock: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    #[cfg(target_os = "linux")]
    {
        use rustix::io::Errno;
        use rustix::net::{recv, RecvFlags};
        match recv(sock, buf, RecvFlags::DONTWAIT) {
            Ok((n, _)) => Ok(Some(n)),
            Err(Errno::AGAIN | Errno::INTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (sock, buf);
        Ok(None)
    }
}

/// True where accepted sockets inherit `TCP_NODELAY` from their listener
/// (Linux copies it), so [`nodelay_listener`] replaces one system call per
/// connection; elsewhere each accepted socket gets it.
pub const NODELAY_INHERITED: bool = cfg!(target_os = "linux");

/// Turns Nagle's algorithm off on a listening socket, for the sockets it will
/// accept where they inherit it ([`NODELAY_INHERITED`]).
pub fn nodelay_listener(listener: &TcpListener) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    rustix::net::sockopt::set_tcp_nodelay(listener, true)?;
    #[cfg(not(target_os = "linux"))]
    let _ = listener;
    Ok(())
}

/// Turns Nagle's algorithm off on an accepted socket, unless it inherited
/// that from its listener.
pub fn nodelay_accepted(sock: &TcpStream) {
    if !NODELAY_INHERITED {
        let _ = sock.set_nodelay(true);
    }
}

/// Sets a read timeout, where zero means "already past": the smallest timeout
/// the OS takes, so the next read fails at once instead of blocking forever.
pub fn set_read_deadline(sock: &TcpStream, left: Duration) -> io::Result<()> {
    sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::Shutdown;

    fn socket_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (client, accepted)
    }

    #[test]
    fn accepted_sockets_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        nodelay_listener(&listener).unwrap();
        let (_client, accepted) = socket_pair(&listener);
        nodelay_accepted(&accepted);
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY is off on an accepted socket"
        );
    }

    #[test]
    fn read_arrived_takes_what_is_there_and_never_waits() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut client, accepted) = socket_pair(&listener);
        // Blocking socket, no timeout: a read that waited would hang the test.
        let mut buf = [0u8; 16];
        assert_eq!(read_arrived(&accepted, &mut buf).unwrap(), None);
        client.write_all(b"hello").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        // The bytes are on their way; a blocking read waits for them.
        let mut first = [0u8; 1];
        (&accepted).read_exact(&mut first).unwrap();
        assert_eq!(&first, b"h");
        if cfg!(target_os = "linux") {
            assert_eq!(read_arrived(&accepted, &mut buf).unwrap(), Some(4));
            assert_eq!(&buf[..4], b"ello");
            assert_eq!(
                read_arrived(&accepted, &mut buf).unwrap(),
                Some(0),
                "end of stream"
            );
        }
    }
}
