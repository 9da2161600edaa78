//! The server peer's host-candidate listener: answers a client's JET connect
//! like a relay would and hands the socket over.

use crate::error::{Error, Result};
use crate::peer::local_addrs::local_addresses;
use crate::transport::listener;
use crate::transport::{TcpHalf, TimedRead};
use crate::wire::candidate::CandidateUrl;
use crate::wire::message::{self, Command, RequestError};
use crate::wire::packet;
use crate::wire::Transport;
use std::collections::HashSet;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The most connections the server peer's host listener handshakes at once.
pub const MAX_HOST_HANDSHAKES: usize = 32;
/// How long a connection to the host listener has to send its JET request.
pub const HOST_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server peer's own listener for host candidates: answers a client's
/// JET connect on a host candidate with 200 and hands the stream over.
pub struct HostServer {
    /// The host candidates: one per local address, all on this listener.
    pub candidates: Vec<(Uuid, CandidateUrl)>,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    served: Receiver<(Uuid, TcpStream)>,
}

impl HostServer {
    /// Binds `addr` and starts answering connects for `association`. On a
    /// wildcard address the candidates are the machine's own addresses.
    pub fn start(addr: &str, association: Uuid) -> Result<HostServer> {
        let listener =
            TcpListener::bind(addr).map_err(|e| Error::io(format!("binding {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("reading the host listener address", e))?;
        let ips = if local.ip().is_unspecified() {
            local_addresses(local.ip())
        } else {
            vec![local.ip()]
        };
        let candidates: Vec<(Uuid, CandidateUrl)> = ips
            .into_iter()
            .map(|ip| {
                let url = CandidateUrl {
                    scheme: Transport::Tcp,
                    host: ip.to_string(),
                    port: local.port(),
                    explicit_port: true,
                    query: Some("ctype=host".into()),
                };
                (Uuid::new_v4(), url)
            })
            .collect();
        let ids: Arc<Vec<Uuid>> = Arc::new(candidates.iter().map(|(id, _)| *id).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, served) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("host-listener".into())
                .spawn(move || host_accept_loop(listener, association, ids, stop, tx))
                .map_err(|e| Error::io("starting the host listener", e))?
        };
        Ok(HostServer {
            candidates,
            local,
            stop,
            thread: Some(thread),
            served,
        })
    }

    /// Stops listening and closes every connection it served, except the one
    /// on `keep`, which is returned (waiting a little for it if its handshake
    /// is finishing).
    pub fn stop(mut self, keep: Option<Uuid>) -> Option<TcpStream> {
        let mut kept = None;
        if let Some(keep) = keep {
            let deadline = Instant::now() + HOST_HANDSHAKE_TIMEOUT;
            while kept.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.served.recv_timeout(left) {
                    Ok((id, sock)) if id == keep => kept = Some(sock),
                    Ok((id, sock)) => close_host(id, &sock),
                    Err(_) => break,
                }
            }
        }
        self.stop.store(true, Ordering::Release);
        listener::wake_and_join(self.local, self.thread.take(), Duration::from_secs(1));
        while let Ok((id, sock)) = self.served.try_recv() {
            close_host(id, &sock);
        }
        kept
    }
}

fn close_host(id: Uuid, sock: &TcpStream) {
    crate::info!("candidate {id} not selected: closing it");
    let _ = sock.shutdown(Shutdown::Both);
}

fn host_accept_loop(
    listener: TcpListener,
    association: Uuid,
    ids: Arc<Vec<Uuid>>,
    stop: Arc<AtomicBool>,
    tx: Sender<(Uuid, TcpStream)>,
) {
    let taken = Arc::new(Mutex::new(HashSet::new()));
    let busy = Arc::new(AtomicUsize::new(0));
    listener::accept_until(
        &listener,
        || stop.load(Ordering::Acquire),
        |accepted| {
            let Ok((sock, peer)) = accepted else {
                return;
            };
            if busy.load(Ordering::Acquire) >= MAX_HOST_HANDSHAKES {
                crate::warn!("host listener: {peer} refused: too many handshakes");
                return;
            }
            busy.fetch_add(1, Ordering::AcqRel);
            let (ids, taken, busy, tx, stop) = (
                Arc::clone(&ids),
                Arc::clone(&taken),
                Arc::clone(&busy),
                tx.clone(),
                Arc::clone(&stop),
            );
            let spawned = thread::Builder::new()
                .name("host-handshake".into())
                .spawn(move || {
                    serve_host(sock, association, &ids, &taken, &stop, &tx);
                    busy.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                crate::warn!("host listener: cannot start a thread for {peer}");
            }
        },
    );
}

/// Answers one connection on the host listener like a relay would: 200 to a
/// connect (or test) on one of our host candidates, an error status otherwise.
fn serve_host(
    sock: TcpStream,
    association: Uuid,
    ids: &[Uuid],
    taken: &Mutex<HashSet<Uuid>>,
    stop: &AtomicBool,
    tx: &Sender<(Uuid, TcpStream)>,
) {
    let _ = sock.set_nodelay(true);
    let deadline = Instant::now() + HOST_HANDSHAKE_TIMEOUT;
    if sock.set_read_timeout(Some(HOST_HANDSHAKE_TIMEOUT)).is_err()
        || sock
            .set_write_timeout(Some(HOST_HANDSHAKE_TIMEOUT))
            .is_err()
    {
        return;
    }
    // The request must arrive whole by the deadline, however slowly it trickles.
    let sock = Arc::new(sock);
    let mut reader = TcpHalf::new(Arc::clone(&sock));
    if reader.set_deadline(Some(deadline)).is_err() {
        return;
    }
    let packet = match packet::read_packet(&mut reader) {
        Ok(packet) => packet,
        Err(e) => {
            crate::info!("host listener: connection closed before a request: {e}");
            return;
        }
    };
    // The reasons, like a relay's, go in a Jet-Error header.
    let (status, version, handed, why) = match message::parse_request(&packet.payload) {
        Err(RequestError::Malformed(why)) => {
            crate::info!("host listener: malformed request: {why}");
            return;
        }
        Err(RequestError::BadRequest(why)) => (400, 2, None, why),
        Ok(request) => {
            let ours = request
                .command
                .ids()
                .filter(|(a, c)| *a == association && ids.contains(c));
            match (request.command, ours) {
                (_, None) => (
                    404,
                    request.version,
                    None,
                    "not a candidate of this host".into(),
                ),
                (Command::AcceptNew | Command::Accept { .. }, _) => (
                    400,
                    request.version,
                    None,
                    "a host candidate takes connects, not accepts".into(),
                ),
                (Command::Test { .. }, _) => (200, request.version, None, String::new()),
                (Command::Connect { candidate, .. }, Some(_)) => {
                    let fresh = taken
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(candidate);
                    if fresh && !stop.load(Ordering::Acquire) {
                        (200, request.version, Some(candidate), String::new())
                    } else {
                        (409, request.version, None, "candidate already taken".into())
                    }
                }
            }
        }
    };
    // Short heads (a reason is capped): always fit a packet.
    let Ok(response) = message::refusal_packet(status, version, &why) else {
        return;
    };
    if (&*sock).write_all(&response).is_err() {
        return;
    }
    match handed {
        Some(candidate) => {
            let _ = reader.set_deadline(None);
            let _ = sock.set_write_timeout(None);
            // The reader was the only other owner: the socket is ours alone.
            drop(reader);
            let Ok(sock) = Arc::try_unwrap(sock) else {
                return;
            };
            crate::info!("host candidate {candidate}: the client connected");
            // If the negotiation is over, the receiver is gone and the socket
            // closes here.
            let _ = tx.send((candidate, sock));
        }
        None => {
            let _ = sock.shutdown(Shutdown::Write);
        }
    }
}
