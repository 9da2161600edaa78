//! The server role: check an OPEN against the policy, connect its destination, run the channel.

use super::bridge;
use super::channel::Channel;
use super::tunnel::Shared;
use super::{reset_socket, Refusal};
use crate::wire::jmux::{self as wire, Destination, Message};
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;

/// Runs on its own thread per accepted OPEN: policy, connect, then the uplink.
pub(super) fn accept(shared: &Arc<Shared>, id: u32, peer: (u32, u32, usize), destination: &str) {
    let (peer_id, peer_window, peer_max_packet) = peer;
    let allowed = match &shared.config.policy {
        Some(policy) => policy(destination),
        None => Err(Refusal {
            reason: wire::REASON_NOT_ALLOWED,
            description: "this side accepts no channels".into(),
        }),
    };
    let connected = allowed.and_then(|()| connect(destination, shared.config.connect_timeout));
    let socket = match connected {
        Ok(socket) => socket,
        Err(refusal) => {
            crate::info!("jmux: refused {destination}: {}", refusal.description);
            // Sent before the id is freed; the peer never learned our id anyway.
            let _ = shared.send(Message::OpenFailure {
                recipient_id: peer_id,
                reason: refusal.reason,
                description: refusal.description,
            });
            shared.release(id);
            return;
        }
    };
    let channel = Arc::new(Channel::new(
        (id, peer_id),
        peer_window,
        peer_max_packet.min(wire::MAX_DATA_PAYLOAD),
        shared.config.window,
        socket,
    ));
    if !shared.install_accepted(&channel) {
        // The tunnel ended while we were connecting.
        return reset_socket(&channel.socket);
    }
    let success = Message::OpenSuccess {
        recipient_id: peer_id,
        sender_id: id,
        initial_window: shared.config.window,
        max_packet: shared.config.max_packet,
    };
    if shared.send(success) {
        bridge::run_accepted(shared, &channel);
    }
}

/// Connects a `tcp://HOST:PORT` destination, mapping failures to reason codes.
fn connect(destination: &str, timeout: std::time::Duration) -> Result<TcpStream, Refusal> {
    let refusal = |reason, description: String| Refusal {
        reason,
        description,
    };
    let parsed = Destination::parse(destination)
        .map_err(|text| refusal(wire::REASON_ADDRESS_TYPE_NOT_SUPPORTED, text))?;
    if parsed.scheme != "tcp" {
        return Err(refusal(
            wire::REASON_ADDRESS_TYPE_NOT_SUPPORTED,
            format!("scheme {:?} is not supported", parsed.scheme),
        ));
    }
    let addrs: Vec<SocketAddr> = (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(|err| refusal(wire::REASON_HOST_UNREACHABLE, format!("resolving: {err}")))?
        .collect();
    let mut last = refusal(wire::REASON_HOST_UNREACHABLE, "no address".into());
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(socket) => {
                let _ = socket.set_nodelay(true);
                return Ok(socket);
            }
            Err(err) => {
                let reason = match err.kind() {
                    io::ErrorKind::ConnectionRefused => wire::REASON_CONNECTION_REFUSED,
                    io::ErrorKind::TimedOut => wire::REASON_TTL_EXPIRED,
                    io::ErrorKind::HostUnreachable => wire::REASON_HOST_UNREACHABLE,
                    io::ErrorKind::NetworkUnreachable => wire::REASON_NETWORK_UNREACHABLE,
                    _ => wire::REASON_GENERAL_FAILURE,
                };
                last = refusal(reason, format!("connecting {addr}: {err}"));
            }
        }
    }
    Err(last)
}
