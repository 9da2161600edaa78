//! One channel's state: the two flow-control windows and the flags its threads wait on.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Never ask for fewer than this many bytes in one WINDOW_ADJUST: the deployed
/// client uses the same step, and smaller adjusts would cost a message per read.
pub const MIN_ADJUST: u32 = 4096;

/// The window the peer granted us: how many more data bytes we may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendWindow {
    available: u32,
}

impl SendWindow {
    /// A window of `initial` bytes, from OPEN or OPEN_SUCCESS.
    pub fn new(initial: u32) -> SendWindow {
        SendWindow { available: initial }
    }

    /// Bytes we may still send.
    pub fn available(&self) -> u32 {
        self.available
    }

    /// Adds a WINDOW_ADJUST. A peer that raises the window past 2^32-1 breaks the
    /// spec; the window then stays at the maximum, which can only make us send
    /// less than it allowed, never more.
    pub fn grant(&mut self, increment: u32) {
        self.available = self.available.saturating_add(increment);
    }

    /// Takes up to `wanted` bytes of window and returns how many were taken.
    pub fn take(&mut self, wanted: usize) -> usize {
        let taken = u32::try_from(wanted)
            .unwrap_or(u32::MAX)
            .min(self.available);
        self.available -= taken;
        taken as usize
    }
}

/// DATA beyond the window we granted; the spec lets us drop it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeyondWindow;

/// The window we granted the peer, and what we owe it back once data is consumed.
///
/// Invariant: `outstanding + buffered + owed == size`, where `buffered` is data
/// received but not yet written locally; so a channel never holds more than
/// `size` bytes however slow its local side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveWindow {
    size: u32,
    outstanding: u32,
    owed: u32,
}

impl ReceiveWindow {
    /// A window of `size` bytes, as announced in our OPEN or OPEN_SUCCESS.
    pub fn new(size: u32) -> ReceiveWindow {
        ReceiveWindow {
            size,
            outstanding: size,
            owed: 0,
        }
    }

    /// Bytes the peer may still send before our next WINDOW_ADJUST.
    pub fn outstanding(&self) -> u32 {
        self.outstanding
    }

    /// Accounts for `len` bytes of DATA, or refuses them if they exceed the window.
    pub fn receive(&mut self, len: usize) -> Result<(), BeyondWindow> {
        match u32::try_from(len) {
            Ok(len) if len <= self.outstanding => {
                self.outstanding -= len;
                Ok(())
            }
            _ => Err(BeyondWindow),
        }
    }

    /// Accounts for `len` bytes written to the local side; returns the increment
    /// to send once enough is owed (a quarter of the window, at least [`MIN_ADJUST`]).
    pub fn consume(&mut self, len: usize) -> Option<u32> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.owed = self
            .owed
            .saturating_add(len)
            .min(self.size - self.outstanding);
        let threshold = (self.size / 4).max(MIN_ADJUST).min(self.size);
        if self.owed == 0 || self.owed < threshold {
            return None;
        }
        let increment = self.owed;
        self.outstanding += increment;
        self.owed = 0;
        Some(increment)
    }
}

/// What the reader thread and a channel's two threads tell each other.
#[derive(Debug)]
pub(crate) struct ChannelState {
    /// Our window towards the peer.
    pub send: SendWindow,
    /// The peer's window towards us.
    pub receive: ReceiveWindow,
    /// DATA received and not yet written to the local socket (at most the window).
    pub inbound: VecDeque<Vec<u8>>,
    /// The peer sent EOF: once `inbound` is written, shut the local write side.
    pub eof_received: bool,
    /// The peer sent CLOSE: stop reading locally, answer CLOSE.
    pub close_received: bool,
    /// Our CLOSE is on the wire (set by the writer thread just before writing it).
    pub close_sent: bool,
    /// The local write side is finished: all data written and shut, or failed.
    pub downlink_done: bool,
    /// The local socket failed (reset, broken pipe): close the channel now.
    pub local_failed: bool,
    /// The tunnel ended: the local socket was reset, the threads just exit.
    pub reset: bool,
}

/// One open channel, shared by the reader thread and the channel's two threads.
#[derive(Debug)]
pub(crate) struct Channel {
    /// Our id for the channel (the one the peer puts in its messages).
    pub local_id: u32,
    /// The peer's id for the channel (the one we put in ours).
    pub remote_id: u32,
    /// The most data we may put in one DATA message.
    pub remote_max_packet: usize,
    /// The local end of the bridge.
    pub socket: TcpStream,
    state: Mutex<ChannelState>,
    changed: Condvar,
    /// Held while one of the channel's threads queues a message, and true once
    /// CLOSE is queued: so no message about the channel can follow its CLOSE
    /// (the peer may reuse its id as soon as it has our CLOSE). The reader thread
    /// never takes it, so a full queue cannot stall it.
    gate: Mutex<bool>,
}

impl Channel {
    /// A channel with the windows both sides announced.
    pub(crate) fn new(
        ids: (u32, u32),
        remote_window: u32,
        remote_max_packet: usize,
        local_window: u32,
        socket: TcpStream,
    ) -> Channel {
        Channel {
            local_id: ids.0,
            remote_id: ids.1,
            remote_max_packet: remote_max_packet.max(1),
            socket,
            state: Mutex::new(ChannelState {
                send: SendWindow::new(remote_window),
                receive: ReceiveWindow::new(local_window),
                inbound: VecDeque::new(),
                eof_received: false,
                close_received: false,
                close_sent: false,
                downlink_done: false,
                local_failed: false,
                reset: false,
            }),
            changed: Condvar::new(),
            gate: Mutex::new(false),
        }
    }

    /// Locks the state. A thread that panicked while holding it left plain
    /// flags and counters behind, still worth reading, so poison is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, ChannelState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a change announced by [`Channel::notify`].
    pub(crate) fn wait<'a>(
        &self,
        guard: MutexGuard<'a, ChannelState>,
    ) -> MutexGuard<'a, ChannelState> {
        self.changed.wait(guard).unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes both channel threads.
    pub(crate) fn notify(&self) {
        self.changed.notify_all();
    }

    /// Locks the send gate (see [`Channel::gate`]).
    pub(crate) fn lock_gate(&self) -> MutexGuard<'_, bool> {
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_window_takes_what_is_granted_and_saturates() {
        let mut window = SendWindow::new(10);
        assert_eq!(window.take(4), 4);
        assert_eq!(window.take(100), 6);
        assert_eq!(window.take(1), 0, "an exhausted window gives nothing");
        window.grant(5);
        assert_eq!(window.available(), 5);
        window.grant(u32::MAX);
        assert_eq!(window.available(), u32::MAX, "never beyond 2^32-1");
        assert_eq!(window.take(usize::MAX), u32::MAX as usize);
    }

    #[test]
    fn receive_window_refuses_data_beyond_it() {
        let mut window = ReceiveWindow::new(8192);
        assert_eq!(window.receive(8000), Ok(()));
        assert_eq!(window.receive(193), Err(BeyondWindow));
        assert_eq!(window.receive(192), Ok(()));
        assert_eq!(window.receive(1), Err(BeyondWindow));
        assert_eq!(window.receive(usize::MAX), Err(BeyondWindow));
    }

    #[test]
    fn receive_window_adjusts_once_a_quarter_is_consumed() {
        let mut window = ReceiveWindow::new(65_536);
        window.receive(65_536).expect("within the window");
        assert_eq!(window.consume(10_000), None, "below a quarter");
        assert_eq!(window.consume(6_384), Some(16_384));
        assert_eq!(window.outstanding(), 16_384);
        // Consumption can never be reported for more than was received.
        assert_eq!(window.consume(1_000_000), Some(49_152));
        assert_eq!(window.outstanding(), 65_536);
        assert_eq!(window.consume(1), None);
    }

    #[test]
    fn small_windows_adjust_at_the_whole_window() {
        let mut window = ReceiveWindow::new(1000);
        window.receive(1000).expect("within the window");
        assert_eq!(window.consume(999), None);
        assert_eq!(window.consume(1), Some(1000));
    }
}
