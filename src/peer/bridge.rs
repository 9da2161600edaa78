//! Bridges from the relayed stream to stdio, a `--forward` service or a `--listen` connection.

use crate::error::{is_disconnect, Error, Result};
use crate::peer::connector::{connect_tcp, Connector};
use crate::peer::stream::Relayed;
use crate::wire::candidate::CandidateUrl;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{mpsc, Arc};
use std::thread;

/// The largest chunk a bridge moves in one read (and one WebSocket frame).
pub(crate) const BRIDGE_BUFFER: usize = 64 * 1024;

/// Byte counts of a finished bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bridged {
    /// Bytes sent to the other peer.
    pub sent: u64,
    /// Bytes received from the other peer.
    pub received: u64,
}

/// Why one direction of a bridge stopped before its end.
#[derive(Debug)]
enum Stop {
    /// The relayed stream was reset: the relay or the other peer cut it (a
    /// dead `--forward` service, the relay's idle timeout...). Bytes may be
    /// lost, so this is a failure, never a clean end.
    Reset(io::Error),
    /// Any other error, on either side.
    Failed(io::Error),
}

impl Stop {
    /// The relayed stream's own error: a reset is [`Stop::Reset`]. The
    /// kernel reports a reset to exactly one call (later ones see EOF or a
    /// broken pipe), so both directions classify their relayed errors.
    fn relayed(e: io::Error) -> Stop {
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Stop::Reset(e),
            _ => Stop::Failed(e),
        }
    }

    /// The result of a bridge whose directions ended with `sent` and
    /// `received`: a reset wins; other disconnects are the other side going
    /// away, as before.
    fn settle(
        sent: Result<u64, Stop>,
        received: Result<u64, Stop>,
        failed: &str,
    ) -> Result<Bridged> {
        match (sent, received) {
            (Err(Stop::Reset(e)), _) | (_, Err(Stop::Reset(e))) => {
                Err(Error::io("the relayed stream was reset", e))
            }
            (Ok(sent), Ok(received)) => Ok(Bridged { sent, received }),
            (Err(Stop::Failed(e)), _) | (_, Err(Stop::Failed(e))) if is_disconnect(&e) => {
                Ok(Bridged::default())
            }
            (Err(Stop::Failed(e)), _) | (_, Err(Stop::Failed(e))) => Err(Error::io(failed, e)),
        }
    }
}

/// Copies `src` into the relayed stream until EOF, then half-closes it; with
/// `paired`, not before that channel's sender is gone (see [`bridge_stdio`]).
fn pump_into(
    relayed: &Relayed,
    mut src: impl Read,
    paired: Option<mpsc::Receiver<()>>,
) -> Result<u64, Stop> {
    let mut buf = vec![0u8; BRIDGE_BUFFER];
    let mut total = 0;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stop::Failed(e)),
        };
        relayed.write_all(&buf[..n]).map_err(Stop::relayed)?;
        total += n as u64;
    }
    if let Some(paired) = paired {
        // Returns when the sender is dropped: the other peer is there.
        let _ = paired.recv();
    }
    relayed.shutdown_write().map_err(Stop::relayed)?;
    Ok(total)
}

/// Copies the relayed stream into `dst` until the other peer ends its side.
/// `paired` is dropped once the first read returns: the stream is paired.
fn pump_out(
    relayed: &Relayed,
    mut dst: impl Write,
    mut paired: Option<mpsc::Sender<()>>,
) -> Result<u64, Stop> {
    let mut buf = vec![0u8; BRIDGE_BUFFER];
    let mut total = 0;
    loop {
        let read = relayed.read(&mut buf);
        paired.take();
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => match Stop::relayed(e) {
                Stop::Failed(e) if is_disconnect(&e) => break,
                stop => return Err(stop),
            },
        };
        dst.write_all(&buf[..n])
            .and_then(|()| dst.flush())
            .map_err(Stop::Failed)?;
        total += n as u64;
    }
    Ok(total)
}

/// The pairing signal of a parked accept's bridge: the sender goes to the
/// direction that reads from the relay, the receiver to the one that
/// half-closes toward it. Neither for a stream that is paired already.
fn pairing_signal(parked: bool) -> (Option<mpsc::Sender<()>>, Option<mpsc::Receiver<()>>) {
    if !parked {
        return (None, None);
    }
    let (tx, rx) = mpsc::channel();
    (Some(tx), Some(rx))
}

/// Copies stdin to the relayed stream (half-closing it at EOF) and the stream
/// to stdout, until both directions have ended: a peer that sends, ends its
/// stdin and then reads the reply gets all of it, and so does the other side.
///
/// `parked`: the stream is an accept still waiting for its connect. Its
/// half-close then waits until the other peer shows up (a byte or its end),
/// since a relay takes a parked accept whose peer sent a FIN for one that
/// left, and closes it.
pub(crate) fn bridge_stdio(relayed: Relayed, parked: bool) -> Result<Bridged> {
    let relayed = Arc::new(relayed);
    let writer = Arc::clone(&relayed);
    let (paired_tx, paired_rx) = pairing_signal(parked);
    let upstream = thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let result = pump_into(&writer, io::stdin().lock(), paired_rx);
            if result.is_err() {
                writer.kill();
            }
            result
        })
        .map_err(|e| Error::io("starting the stdin thread", e))?;
    let received = match pump_out(&relayed, io::stdout().lock(), paired_tx) {
        Ok(received) => received,
        Err(Stop::Failed(e)) => {
            relayed.kill();
            return Err(Error::io("relaying to stdout", e));
        }
        // A reset stream wakes the stdin thread with an error of its own
        // only when it writes; do not wait on stdin for it.
        Err(Stop::Reset(e)) => return Err(Error::io("the relayed stream was reset", e)),
    };
    let sent = upstream
        .join()
        .unwrap_or_else(|_| Err(Stop::Failed(io::Error::other("the stdin thread panicked"))));
    match sent {
        Ok(sent) => Ok(Bridged { sent, received }),
        Err(Stop::Failed(e)) if is_disconnect(&e) => Ok(Bridged { sent: 0, received }),
        sent => Stop::settle(sent, Ok(received), "relaying stdin"),
    }
}

/// Relays between the relayed stream and a local TCP connection, both ways
/// with half-close, until both directions have ended; `parked` as for
/// [`bridge_stdio`].
pub(crate) fn bridge_tcp(relayed: Relayed, local: TcpStream, parked: bool) -> Result<Bridged> {
    let relayed = Arc::new(relayed);
    let local_in = local
        .try_clone()
        .map_err(|e| Error::io("cloning the local socket", e))?;
    let writer = Arc::clone(&relayed);
    let (paired_tx, paired_rx) = pairing_signal(parked);
    let upstream = thread::Builder::new()
        .name("local-to-relay".into())
        .spawn(move || {
            let result = pump_into(&writer, &local_in, paired_rx);
            if result.is_err() {
                writer.kill();
                let _ = local_in.shutdown(Shutdown::Both);
            }
            result
        })
        .map_err(|e| Error::io("starting a bridge thread", e))?;
    let received = pump_out(&relayed, &local, paired_tx);
    match &received {
        Ok(_) => {
            let _ = local.shutdown(Shutdown::Write);
        }
        // Passed on as a reset too: the local client must not take a cut
        // stream for a complete one either.
        Err(Stop::Reset(_)) => {
            relayed.kill();
            crate::transport::cut::cut(&local);
        }
        Err(Stop::Failed(_)) => {
            relayed.kill();
            let _ = local.shutdown(Shutdown::Both);
        }
    }
    let sent = upstream
        .join()
        .unwrap_or_else(|_| Err(Stop::Failed(io::Error::other("the bridge thread panicked"))));
    Stop::settle(sent, received, "relaying")
}

/// Where a peer's relayed stream goes once it is open.
#[derive(Debug)]
pub enum Local {
    /// stdin and stdout.
    Stdio,
    /// Connect to this local service (`--forward HOST:PORT`).
    Forward(String),
    /// A connection accepted on this listener (`--listen ADDR`), taken before
    /// the relay is contacted.
    Accepted(TcpStream),
}

/// Binds `--listen ADDR`, prints `listening tcp://ADDRESS` on stdout (the
/// address actually bound) and accepts one connection.
pub fn listen_once(addr: &str) -> Result<TcpStream> {
    let listener = bind_announced(addr)?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    let (sock, _) = listener
        .accept()
        .map_err(|e| Error::io(format!("accepting on {local}"), e))?;
    let _ = sock.set_nodelay(true);
    Ok(sock)
}

/// Binds a local listener on `addr` and prints its `listening tcp://ADDR`
/// line (the bound address, port 0 resolved), which scripts and tests read.
pub fn bind_announced(addr: &str) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).map_err(|e| Error::io(format!("binding {addr}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "listening tcp://{local}");
    let _ = stdout.flush();
    Ok(listener)
}

/// `--listen` for a command that knows its relay: checks first that the
/// relay at `url` can be reached ([`Connector::reach`]: the connection the
/// request will use, closed unused), then [`listen_once`]. A relay that
/// cannot be reached fails the command before `listening` is printed: no
/// local client may connect to a tunnel that cannot exist.
pub fn listen_once_reaching(
    connector: &Connector,
    url: &CandidateUrl,
    addr: &str,
) -> Result<TcpStream> {
    connector.reach(url).map_err(|e| match e {
        Error::Io { context, source } => Error::io(
            format!("cannot reach the relay {url}, so not listening on {addr}: {context}"),
            source,
        ),
        other => other,
    })?;
    listen_once(addr)
}

/// Bridges a relayed stream to where the command said.
pub fn bridge(relayed: Relayed, local: Local) -> Result<Bridged> {
    bridge_as(relayed, local, false)
}

/// Bridges a parked accept's stream: like [`bridge`], but the local side's
/// end is passed on only once the connecting peer is there (see
/// [`bridge_stdio`]).
pub fn bridge_parked(relayed: Relayed, local: Local) -> Result<Bridged> {
    bridge_as(relayed, local, true)
}

fn bridge_as(relayed: Relayed, local: Local, parked: bool) -> Result<Bridged> {
    match local {
        Local::Stdio => bridge_stdio(relayed, parked),
        Local::Forward(target) => match connect_tcp(&target) {
            Ok(sock) => bridge_tcp(relayed, sock, parked),
            Err(e) => {
                // A FIN would hand the other peer a clean, empty stream, as
                // if the service had answered nothing: reset it instead.
                relayed.cut();
                Err(forward_failed(&target, e))
            }
        },
        Local::Accepted(sock) => bridge_tcp(relayed, sock, parked),
    }
}

/// The error of a `--forward` service that cannot be reached, once the
/// relayed stream was reset: `forward to HOST:PORT failed: WHY; reset the
/// relayed stream`.
fn forward_failed(target: &str, e: Error) -> Error {
    let why = match e {
        Error::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    };
    Error::io(
        format!("forward to {target} failed"),
        io::Error::new(why.kind(), format!("{why}; reset the relayed stream")),
    )
}
