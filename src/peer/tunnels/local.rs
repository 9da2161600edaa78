//! The client peer's local listeners: one channel per accepted connection, to a fixed destination or to the one a SOCKS5 CONNECT names.

use super::Client;
use crate::peer::jmux::OpenError;
use crate::peer::socks;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How long a SOCKS5 client may take to send its greeting and CONNECT.
pub const SOCKS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections on `listener` for ever; each one opens a channel to
/// `destination` (`tcp://HOST:PORT`) on a thread of its own, so a slow open
/// never holds up the next connection. A refused open resets the connection
/// (the library does it) and is reported.
pub fn serve_forward(listener: TcpListener, destination: String, client: Arc<Client>) {
    let destination = Arc::new(destination);
    accept_each(&listener, &client, move |client, sock| {
        let opened = client
            .opener()
            .map_err(|e| e.to_string())
            .and_then(|opener| {
                opener
                    .open_bridged(&destination, sock.try_clone().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())
            });
        if let Err(why) = opened {
            crate::peer::jmux::reset_socket(&sock);
            (client.notify)(&format!("{destination}: {why}"));
        }
    });
}

/// Accepts SOCKS5 clients on `listener` for ever; each CONNECT opens a
/// channel to `tcp://HOST:PORT`. The SOCKS success reply goes out only after
/// the channel's OPEN_SUCCESS; a refusal becomes the SOCKS reply with the
/// same code (JMUX reasons are SOCKS5's reply codes).
pub fn serve_socks(listener: TcpListener, client: Arc<Client>) {
    accept_each(&listener, &client, |client, mut sock| {
        let (host, port) = match socks::accept_connect(&mut sock, SOCKS_HANDSHAKE_TIMEOUT) {
            Ok(target) => target,
            Err(e) => {
                (client.notify)(&format!("SOCKS5: {e}"));
                return;
            }
        };
        let destination = if host.contains(':') {
            format!("tcp://[{host}]:{port}")
        } else {
            format!("tcp://{host}:{port}")
        };
        // The channel is bridged to one end of a loopback pair: what the
        // other peer sends at once (an SSH banner) waits there until our
        // SOCKS reply is out, then the other end is spliced to the client.
        let opened = client.opener().map_err(|e| {
            (client.notify)(&format!("{destination}: {e}"));
            socks::REPLY_NETWORK_UNREACHABLE
        });
        let result = opened.and_then(|opener| {
            let (near, far) = loopback_pair().map_err(|e| {
                (client.notify)(&format!("{destination}: a loopback pair: {e}"));
                socks::REPLY_GENERAL_FAILURE
            })?;
            opener.open_bridged(&destination, near).map_err(|e| {
                (client.notify)(&format!("{destination}: {e}"));
                reply_code(&e)
            })?;
            Ok(far)
        });
        match result {
            Ok(far) => {
                let bound = sock
                    .local_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                if socks::reply_success(&mut sock, bound).is_ok() {
                    splice(sock, far);
                }
            }
            Err(code) => {
                let _ = socks::reply_failure(&mut sock, code);
                let _ = sock.shutdown(Shutdown::Both);
            }
        }
    });
}

/// The SOCKS5 reply for a failed open.
fn reply_code(err: &OpenError) -> u8 {
    match err {
        // The codes are the same numbers (JMUX took them from SOCKS5).
        OpenError::Refused { reason, .. } => u8::try_from(*reason)
            .ok()
            .filter(|code| (1..=8).contains(code))
            .unwrap_or(socks::REPLY_GENERAL_FAILURE),
        OpenError::DestinationTooLong => socks::REPLY_ADDRESS_TYPE_NOT_SUPPORTED,
        OpenError::Timeout => socks::REPLY_TTL_EXPIRED,
        OpenError::TooManyChannels | OpenError::TunnelEnded => socks::REPLY_GENERAL_FAILURE,
    }
}

/// Runs `handle` on its own thread for every connection `listener` accepts.
fn accept_each(
    listener: &TcpListener,
    client: &Arc<Client>,
    handle: impl Fn(&Client, TcpStream) + Send + Sync + Clone + 'static,
) {
    for conn in listener.incoming() {
        let sock = match conn {
            Ok(sock) => sock,
            // A client that went away before accept returned is its own business.
            Err(e) if crate::error::is_disconnect(&e) => continue,
            Err(e) => {
                (client.notify)(&format!("accepting a local connection: {e}"));
                // Out of descriptors, say: give the process a moment.
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let notify = Arc::clone(&client.notify);
        let client = Arc::clone(client);
        let handle = handle.clone();
        let spawned = thread::Builder::new()
            .name("jmux-local".into())
            .spawn(move || handle(&client, sock));
        // The connection was moved into the failed closure and is closed with it.
        if let Err(e) = spawned {
            notify(&format!("no thread for a local connection: {e}"));
        }
    }
}

/// Two connected loopback sockets.
fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let near = TcpStream::connect(listener.local_addr()?)?;
    let (far, _) = listener.accept()?;
    Ok((near, far))
}

/// Copies both ways until both directions ended, passing each EOF on as a
/// write shutdown so the other direction goes on.
fn splice(a: TcpStream, b: TcpStream) {
    let (Ok(mut a2), Ok(mut b2)) = (a.try_clone(), b.try_clone()) else {
        crate::peer::jmux::reset_socket(&a);
        crate::peer::jmux::reset_socket(&b);
        return;
    };
    let forward = thread::spawn(move || {
        let _ = io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Write);
    let _ = forward.join();
}
