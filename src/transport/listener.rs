//! Accept loops that stop on a flag, woken by a connection of our own.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

/// Accepts connections and hands each result to `on_accept` until
/// `stopping()` is true after an accept returns. A blocking `accept` cannot
/// be interrupted, so whoever stops the loop sets the flag and then calls
/// [`wake_and_join`].
pub fn accept_until(
    listener: &TcpListener,
    stopping: impl Fn() -> bool,
    mut on_accept: impl FnMut(io::Result<(TcpStream, SocketAddr)>),
) {
    loop {
        let accepted = listener.accept();
        if stopping() {
            return;
        }
        on_accept(accepted);
    }
}

/// Wakes the accept loop of a listener bound to `local` (its stop flag
/// already set) with a connection of our own, then waits for its thread.
/// If that connection fails the thread stays blocked in accept, harmless at
/// process exit, so it is not waited for.
pub fn wake_and_join(local: SocketAddr, thread: Option<JoinHandle<()>>, timeout: Duration) {
    if TcpStream::connect_timeout(&wake_address(local), timeout).is_ok() {
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

/// Where to connect to reach a listener bound to `local` (a wildcard address
/// is reached through loopback).
pub fn wake_address(local: SocketAddr) -> SocketAddr {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(ref mut a) => a.set_ip(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(ref mut a) => a.set_ip(Ipv6Addr::LOCALHOST),
        }
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::sync::Arc;

    #[test]
    fn a_stopped_loop_is_woken_and_joined() {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let local = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            accept_until(
                &listener,
                || flag.load(Ordering::Acquire),
                |accepted| {
                    let _ = tx.send(accepted.is_ok());
                },
            )
        });
        let _first = TcpStream::connect(wake_address(local)).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
        stop.store(true, Ordering::Release);
        wake_and_join(local, Some(thread), Duration::from_secs(5));
        assert!(
            rx.recv().is_err(),
            "the loop ended without another hand-off"
        );
    }
}
