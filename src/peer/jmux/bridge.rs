//! A channel's two threads: local socket to tunnel (uplink) and tunnel to local socket (downlink).

use super::channel::Channel;
use super::tunnel::Shared;
use crate::wire::jmux::Message;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::thread;

/// Starts both threads of a channel we opened; false if a thread could not start.
pub(super) fn start(shared: &Arc<Shared>, channel: &Arc<Channel>) -> bool {
    if !spawn_downlink(shared, channel) {
        return false;
    }
    let (shared, channel) = (shared.clone(), channel.clone());
    thread::Builder::new()
        .name("jmux-uplink".into())
        .spawn(move || uplink(&shared, &channel))
        .is_ok()
}

/// Runs an accepted channel on the current thread (its uplink), with a new downlink thread.
pub(super) fn run_accepted(shared: &Arc<Shared>, channel: &Arc<Channel>) {
    if !spawn_downlink(shared, channel) {
        // Without a writer the channel cannot work: the uplink closes it.
        channel.lock().local_failed = true;
    }
    uplink(shared, channel);
}

fn spawn_downlink(shared: &Arc<Shared>, channel: &Arc<Channel>) -> bool {
    let (shared, channel) = (shared.clone(), channel.clone());
    thread::Builder::new()
        .name("jmux-downlink".into())
        .spawn(move || downlink(&shared, &channel))
        .is_ok()
}

/// Queues a message about the channel unless its CLOSE is already queued.
fn send_on(shared: &Shared, channel: &Channel, message: Message) -> bool {
    let closed = channel.lock_gate();
    !*closed && shared.send(message)
}

/// Reads the local socket into DATA, only within the window the peer granted,
/// so a peer that stops granting stops this socket being read and nothing else.
fn uplink(shared: &Shared, channel: &Arc<Channel>) {
    let mut eof_sent = false;
    'reading: loop {
        let wanted = {
            let mut state = channel.lock();
            loop {
                if state.reset {
                    return;
                }
                if state.close_received || state.local_failed {
                    break 'reading;
                }
                let available = state.send.available() as usize;
                if available > 0 {
                    break available.min(channel.remote_max_packet);
                }
                state = channel.wait(state);
            }
        };
        let mut data = vec![0; wanted];
        match (&channel.socket).read(&mut data) {
            Ok(0) => {
                // A CLOSE from the peer shuts our read side to wake us: no EOF then.
                if channel.lock().close_received {
                    break;
                }
                let recipient_id = channel.remote_id;
                if !send_on(shared, channel, Message::Eof { recipient_id }) {
                    return;
                }
                eof_sent = true;
                break;
            }
            Ok(n) => {
                data.truncate(n);
                channel.lock().send.take(n);
                let recipient_id = channel.remote_id;
                if !send_on(shared, channel, Message::Data { recipient_id, data }) {
                    return;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                channel.lock().local_failed = true;
                channel.notify();
                break;
            }
        }
    }
    if eof_sent {
        // Half-closed: the other direction goes on until it is done too.
        let mut state = channel.lock();
        while !(state.eof_received && state.downlink_done
            || state.close_received
            || state.local_failed
            || state.reset)
        {
            state = channel.wait(state);
        }
        if state.reset {
            return;
        }
    }
    let mut closed = channel.lock_gate();
    if !*closed {
        // The writer thread marks the CLOSE sent and frees the id if due.
        *closed = shared.send_close(channel);
    }
}

/// Writes received DATA to the local socket and grants the window back as it
/// goes; a slow local reader only holds up this thread.
fn downlink(shared: &Shared, channel: &Channel) {
    loop {
        let chunks = {
            let mut state = channel.lock();
            loop {
                if state.reset || state.local_failed {
                    return;
                }
                if !state.inbound.is_empty() {
                    break std::mem::take(&mut state.inbound);
                }
                if state.eof_received || state.close_received {
                    drop(state);
                    let _ = channel.socket.shutdown(Shutdown::Write);
                    channel.lock().downlink_done = true;
                    channel.notify();
                    return;
                }
                state = channel.wait(state);
            }
        };
        let mut written = 0;
        for chunk in chunks {
            if (&channel.socket).write_all(&chunk).is_err() {
                let mut state = channel.lock();
                state.local_failed = true;
                state.downlink_done = true;
                drop(state);
                channel.notify();
                // Wakes the uplink if it is blocked reading, so it sends CLOSE.
                let _ = channel.socket.shutdown(Shutdown::Read);
                return;
            }
            written += chunk.len();
        }
        let adjust = channel.lock().receive.consume(written);
        if let Some(increment) = adjust {
            let recipient_id = channel.remote_id;
            let message = Message::WindowAdjust {
                recipient_id,
                increment,
            };
            if !send_on(shared, channel, message) && channel.lock().reset {
                return;
            }
        }
    }
}
