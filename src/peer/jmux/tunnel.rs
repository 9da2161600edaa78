//! The tunnel: reader and writer threads, the channel table, opening and accepting.

use super::channel::Channel;
use super::{accept, bridge};
use super::{reset_socket, EndReason, OpenError, Stream, TunnelConfig};
use crate::wire::jmux::{self as wire, Decoded, Message};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};

/// Messages the writer queue holds before senders block: with 32 KiB DATA,
/// about 8 MiB in flight towards the stream.
pub const WRITER_QUEUE: usize = 256;
/// The writer gathers queued messages into one write up to this size.
pub const WRITE_BATCH: usize = 256 * 1024;
/// How much the reader thread asks the stream for at once.
pub const READ_CHUNK: usize = 128 * 1024;
/// Answers the reader thread could not queue at once (refused OPENs) kept aside;
/// beyond this the peer is flooding us without reading and the tunnel ends.
pub const MAX_URGENT: usize = 4 * wire::MAX_CHANNELS;

/// What the writer thread takes from its queue.
pub(super) enum Outgoing {
    Message(Message),
    /// CLOSE for this channel: the writer marks it sent just before it goes on
    /// the wire, so when the peer's answer arrives the reader already knows.
    Close(Arc<Channel>),
    /// Look at the urgent list and the end flag.
    Wake,
}

/// One slot of the channel table, keyed by our channel id.
enum Slot {
    /// We sent OPEN and wait for the answer; the socket is bridged on success.
    Opening {
        socket: TcpStream,
        answer: SyncSender<Result<(), OpenError>>,
    },
    /// The peer sent OPEN; a thread is checking the policy and connecting.
    Accepting,
    /// Open, until both sides have sent CLOSE.
    Open(Arc<Channel>),
}

/// What every thread of one tunnel shares.
pub(super) struct Shared {
    pub(super) config: TunnelConfig,
    queue: SyncSender<Outgoing>,
    urgent: Mutex<VecDeque<Outgoing>>,
    table: Mutex<HashMap<u32, Slot>>,
    /// Channels whose id was freed but whose threads may still run (a
    /// downlink still writing to a slow socket): reset too if the tunnel ends.
    retired: Mutex<Vec<Weak<Channel>>>,
    ended: AtomicBool,
    reason: Mutex<Option<EndReason>>,
    closer: Box<dyn Fn() + Send + Sync>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data are tables and flags that stay consistent between
    // statements, so a panicked holder leaves nothing worth refusing.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// Queues a message, blocking while the queue is full; false once the tunnel ended.
    pub(super) fn send(&self, message: Message) -> bool {
        !self.ended.load(Ordering::Acquire) && self.queue.send(Outgoing::Message(message)).is_ok()
    }

    /// Queues CLOSE for a channel (its id is freed once both CLOSEs passed).
    pub(super) fn send_close(&self, channel: &Arc<Channel>) -> bool {
        !self.ended.load(Ordering::Acquire)
            && self.queue.send(Outgoing::Close(channel.clone())).is_ok()
    }

    /// Queues a message without ever blocking: for the reader thread.
    fn send_urgent(&self, message: Outgoing) {
        match self.queue.try_send(message) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(Outgoing::Wake)) => {}
            Err(TrySendError::Full(message)) => {
                let mut urgent = lock(&self.urgent);
                if urgent.len() >= MAX_URGENT {
                    drop(urgent);
                    self.end(EndReason::Flooded);
                    return;
                }
                urgent.push_back(message);
                drop(urgent);
                // If this finds the queue full too, the writer has messages to
                // take and looks at the urgent list after each of them.
                let _ = self.queue.try_send(Outgoing::Wake);
            }
        }
    }

    /// Ends the tunnel once: records why, cuts the stream, resets every channel.
    pub(super) fn end(&self, reason: EndReason) {
        {
            let mut slot = lock(&self.reason);
            if slot.is_some() {
                return;
            }
            crate::info!("jmux tunnel ended: {reason}");
            *slot = Some(reason);
        }
        // Set before the table is emptied, so no open can slip in after it.
        self.ended.store(true, Ordering::Release);
        (self.closer)();
        let retired = std::mem::take(&mut *lock(&self.retired));
        for channel in retired.iter().filter_map(Weak::upgrade) {
            channel.lock().reset = true;
            channel.notify();
            reset_socket(&channel.socket);
        }
        let slots = std::mem::take(&mut *lock(&self.table));
        for (_, slot) in slots {
            match slot {
                Slot::Opening { socket, answer } => {
                    reset_socket(&socket);
                    let _ = answer.try_send(Err(OpenError::TunnelEnded));
                }
                Slot::Accepting => {}
                Slot::Open(channel) => {
                    channel.lock().reset = true;
                    channel.notify();
                    reset_socket(&channel.socket);
                }
            }
        }
        let _ = self.queue.try_send(Outgoing::Wake);
    }

    /// Frees a channel id once both CLOSEs passed; called with the channel state locked.
    pub(super) fn release(&self, local_id: u32) {
        lock(&self.table).remove(&local_id);
    }

    /// Frees a closed channel's id, keeping an eye on its threads until they end.
    fn retire(&self, channel: &Arc<Channel>) {
        self.release(channel.local_id);
        let mut retired = lock(&self.retired);
        retired.retain(|weak| weak.strong_count() > 0);
        retired.push(Arc::downgrade(channel));
    }

    /// Our CLOSE is about to go on the wire: the channel is closed if the peer's came already.
    fn close_sent(&self, channel: &Arc<Channel>) {
        let mut state = channel.lock();
        state.close_sent = true;
        if state.close_received {
            self.retire(channel);
        }
    }

    /// Puts an accepted, connected channel in its reserved slot; false if the tunnel ended.
    pub(super) fn install_accepted(&self, channel: &Arc<Channel>) -> bool {
        match lock(&self.table).get_mut(&channel.local_id) {
            Some(slot @ Slot::Accepting) => {
                *slot = Slot::Open(channel.clone());
                true
            }
            _ => false,
        }
    }

    fn channel(&self, local_id: u32) -> Option<Arc<Channel>> {
        match lock(&self.table).get(&local_id) {
            Some(Slot::Open(channel)) => Some(channel.clone()),
            _ => None,
        }
    }

    /// The lowest free id, so ids are reused (only) once released.
    fn reserve(&self, table: &mut HashMap<u32, Slot>, slot: Slot) -> Option<u32> {
        if table.len() >= wire::MAX_CHANNELS {
            return None;
        }
        let id = (0..).find(|id| !table.contains_key(id))?;
        table.insert(id, slot);
        Some(id)
    }
}

/// A running JMUX tunnel over one stream.
///
/// It runs one reader thread, one writer thread (fed by a bounded queue) and
/// two threads per channel, one per direction of its local socket. The reader
/// thread only decodes and hands bytes over: data for a channel waits in that
/// channel's buffer, bounded by the window it granted, so a stalled local
/// socket stops its own channel and nothing else. Dropping the tunnel ends it
/// (even while [`Opener`]s remain); [`Tunnel::wait`] says why it ended.
pub struct Tunnel {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// A cheap, cloneable handle that opens channels on a tunnel from any thread.
#[derive(Clone)]
pub struct Opener {
    shared: Arc<Shared>,
}

impl Tunnel {
    /// Starts a tunnel in the server role: OPENs are checked with `policy`, then connected.
    pub fn server(stream: Stream, policy: super::Policy) -> io::Result<Tunnel> {
        let config = TunnelConfig {
            policy: Some(policy),
            ..TunnelConfig::default()
        };
        Tunnel::start(stream, config)
    }

    /// Starts a tunnel in the client role: it opens channels and refuses the peer's OPENs.
    pub fn client(stream: Stream) -> io::Result<Tunnel> {
        Tunnel::start(stream, TunnelConfig::default())
    }

    /// Starts the reader and writer threads over `stream`.
    pub fn start(stream: Stream, config: TunnelConfig) -> io::Result<Tunnel> {
        let (queue, outgoing) = mpsc::sync_channel(WRITER_QUEUE);
        let shared = Arc::new(Shared {
            config,
            queue,
            urgent: Mutex::new(VecDeque::new()),
            table: Mutex::new(HashMap::new()),
            retired: Mutex::new(Vec::new()),
            ended: AtomicBool::new(false),
            reason: Mutex::new(None),
            closer: stream.closer,
        });
        let mut threads = Vec::new();
        let spawned = {
            let shared = shared.clone();
            let writer = stream.writer;
            thread::Builder::new()
                .name("jmux-writer".into())
                .spawn(move || write_loop(&shared, writer, outgoing))
        }
        .and_then(|handle| {
            threads.push(handle);
            let shared = shared.clone();
            let reader = stream.reader;
            thread::Builder::new()
                .name("jmux-reader".into())
                .spawn(move || read_loop(&shared, reader))
        });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(err) => {
                shared.end(EndReason::Closed);
                return Err(err);
            }
        }
        Ok(Tunnel { shared, threads })
    }

    /// A handle for opening channels from other threads.
    pub fn opener(&self) -> Opener {
        Opener {
            shared: self.shared.clone(),
        }
    }

    /// Opens a channel to `destination` and bridges it to `local`; see [`Opener::open_bridged`].
    pub fn open_bridged(&self, destination: &str, local: TcpStream) -> Result<(), OpenError> {
        self.opener().open_bridged(destination, local)
    }

    /// True once the tunnel ended.
    pub fn is_ended(&self) -> bool {
        self.shared.ended.load(Ordering::Acquire)
    }

    /// Ends the tunnel: the stream is cut and every channel reset.
    pub fn close(&self) {
        self.shared.end(EndReason::Closed);
    }

    /// Waits until the tunnel ends (the stream ended or failed) and says why.
    pub fn wait(mut self) -> EndReason {
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
        lock(&self.shared.reason)
            .take()
            .unwrap_or(EndReason::Closed)
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.shared.end(EndReason::Closed);
    }
}

impl Opener {
    /// Sends OPEN for `destination` and waits for the answer (at most
    /// [`TunnelConfig::open_timeout`]); on success
    /// `local` is bridged to the channel until both sides close it. On failure
    /// `local` is reset, so whoever is on its other end sees the refusal.
    pub fn open_bridged(&self, destination: &str, local: TcpStream) -> Result<(), OpenError> {
        let shared = &self.shared;
        let open_len = Message::Open {
            sender_id: 0,
            initial_window: 0,
            max_packet: 0,
            destination: destination.to_owned(),
        }
        .encoded_len();
        if open_len > wire::MAX_MESSAGE_SIZE {
            reset_socket(&local);
            return Err(OpenError::DestinationTooLong);
        }
        let _ = local.set_nodelay(true);
        let (answer, answered) = mpsc::sync_channel(1);
        let id = {
            let mut table = lock(&shared.table);
            if shared.ended.load(Ordering::Acquire) {
                drop(table);
                reset_socket(&local);
                return Err(OpenError::TunnelEnded);
            }
            let Ok(socket) = local.try_clone() else {
                reset_socket(&local);
                return Err(OpenError::TunnelEnded);
            };
            match shared.reserve(&mut table, Slot::Opening { socket, answer }) {
                Some(id) => id,
                None => {
                    drop(table);
                    reset_socket(&local);
                    return Err(OpenError::TooManyChannels);
                }
            }
        };
        let open = Message::Open {
            sender_id: id,
            initial_window: shared.config.window,
            max_packet: shared.config.max_packet,
            destination: destination.to_owned(),
        };
        if !shared.send(open) {
            return Err(OpenError::TunnelEnded);
        }
        // The reader thread answers, or drops the sender when the tunnel ends.
        match answered.recv_timeout(shared.config.open_timeout) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(OpenError::TunnelEnded),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The slot stays until the answer: a late OPEN_SUCCESS then
                // bridges this dead socket, whose first read fails, and the
                // channel closes itself the ordinary way.
                reset_socket(&local);
                Err(OpenError::Timeout)
            }
        }
    }
}

fn write_loop(shared: &Shared, mut writer: Box<dyn Write + Send>, outgoing: Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH + wire::MAX_MESSAGE_SIZE);
    let push = |batch: &mut Vec<u8>, item: Outgoing| {
        let message = match item {
            Outgoing::Message(message) => message,
            Outgoing::Close(channel) => {
                shared.close_sent(&channel);
                Message::Close {
                    recipient_id: channel.remote_id,
                }
            }
            Outgoing::Wake => return,
        };
        if let Err(err) = wire::encode(&message, batch) {
            // Our own messages are sized to fit; skip one rather than stop all.
            crate::error!("jmux: not sent: {err}");
        }
    };
    while let Ok(first) = outgoing.recv() {
        if shared.ended.load(Ordering::Acquire) {
            return;
        }
        batch.clear();
        push(&mut batch, first);
        loop {
            for item in lock(&shared.urgent).drain(..) {
                push(&mut batch, item);
            }
            if batch.len() >= WRITE_BATCH {
                break;
            }
            match outgoing.try_recv() {
                Ok(item) => push(&mut batch, item),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        if let Err(err) = writer.write_all(&batch).and_then(|()| writer.flush()) {
            shared.end(EndReason::WriteFailed(err));
            return;
        }
    }
}

fn read_loop(shared: &Arc<Shared>, mut reader: Box<dyn Read + Send>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(READ_CHUNK + wire::MAX_MESSAGE_SIZE);
    loop {
        let mut start = 0;
        loop {
            match wire::decode(&buffer[start..]) {
                Ok(Decoded::Incomplete) => break,
                Ok(Decoded::Complete(message, len)) => {
                    start += len;
                    dispatch(shared, message);
                }
                Err(err) => return shared.end(EndReason::Protocol(err)),
            }
        }
        buffer.drain(..start);
        if shared.ended.load(Ordering::Acquire) {
            return;
        }
        let filled = buffer.len();
        buffer.resize(filled + READ_CHUNK, 0);
        match reader.read(&mut buffer[filled..]) {
            Ok(0) if filled == 0 => return shared.end(EndReason::StreamClosed),
            Ok(0) => return shared.end(EndReason::StreamTruncated),
            Ok(n) => buffer.truncate(filled + n),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => buffer.truncate(filled),
            Err(err) => return shared.end(EndReason::ReadFailed(err)),
        }
    }
}

/// Handles one message on the reader thread: never blocks on a socket or the queue.
fn dispatch(shared: &Arc<Shared>, message: Message) {
    match message {
        Message::Open {
            sender_id,
            initial_window,
            max_packet,
            destination,
        } => {
            let refuse = |reason, description: &str| {
                shared.send_urgent(Outgoing::Message(Message::OpenFailure {
                    recipient_id: sender_id,
                    reason,
                    description: description.into(),
                }))
            };
            if shared.config.policy.is_none() {
                return refuse(wire::REASON_NOT_ALLOWED, "this side accepts no channels");
            }
            // Reserved in its own statement: the table lock is released before
            // a refusal, which may end the tunnel (and that takes the lock).
            let reserved = shared.reserve(&mut lock(&shared.table), Slot::Accepting);
            let Some(id) = reserved else {
                return refuse(wire::REASON_GENERAL_FAILURE, "too many channels");
            };
            let peer = (sender_id, initial_window, usize::from(max_packet));
            let accepting = shared.clone();
            let spawned = thread::Builder::new()
                .name("jmux-accept".into())
                .spawn(move || accept::accept(&accepting, id, peer, &destination));
            if spawned.is_err() {
                shared.release(id);
                refuse(wire::REASON_GENERAL_FAILURE, "out of threads");
            }
        }
        Message::OpenSuccess {
            recipient_id,
            sender_id,
            initial_window,
            max_packet,
        } => {
            let mut table = lock(&shared.table);
            if !matches!(table.get(&recipient_id), Some(Slot::Opening { .. })) {
                return; // unknown or not opening: never disturb other channels
            }
            let Some(Slot::Opening { socket, answer }) = table.remove(&recipient_id) else {
                return;
            };
            let channel = Arc::new(Channel::new(
                (recipient_id, sender_id),
                initial_window,
                usize::from(max_packet).min(wire::MAX_DATA_PAYLOAD),
                shared.config.window,
                socket,
            ));
            // In the table before anything else, so DATA right behind this
            // answer finds its channel.
            table.insert(recipient_id, Slot::Open(channel.clone()));
            drop(table);
            if !bridge::start(shared, &channel) {
                // No thread to send our CLOSE from: send it from here.
                *channel.lock_gate() = true;
                reset_socket(&channel.socket);
                shared.send_urgent(Outgoing::Close(channel.clone()));
            }
            let _ = answer.try_send(Ok(()));
        }
        Message::OpenFailure {
            recipient_id,
            reason,
            description,
        } => {
            let mut table = lock(&shared.table);
            if !matches!(table.get(&recipient_id), Some(Slot::Opening { .. })) {
                return;
            }
            if let Some(Slot::Opening { socket, answer }) = table.remove(&recipient_id) {
                drop(table);
                reset_socket(&socket);
                let _ = answer.try_send(Err(OpenError::Refused {
                    reason,
                    description,
                }));
            }
        }
        Message::WindowAdjust {
            recipient_id,
            increment,
        } => {
            if let Some(channel) = shared.channel(recipient_id) {
                channel.lock().send.grant(increment);
                channel.notify();
            }
        }
        Message::Data { recipient_id, data } => {
            let Some(channel) = shared.channel(recipient_id) else {
                return;
            };
            let mut state = channel.lock();
            // Data after EOF or CLOSE, or beyond the window, is the peer's
            // mistake; dropping it keeps the buffer within the window.
            if state.eof_received || state.close_received || state.local_failed {
                return;
            }
            if state.receive.receive(data.len()).is_ok() && !data.is_empty() {
                state.inbound.push_back(data);
                drop(state);
                channel.notify();
            }
        }
        Message::Eof { recipient_id } => {
            if let Some(channel) = shared.channel(recipient_id) {
                channel.lock().eof_received = true;
                channel.notify();
            }
        }
        Message::Close { recipient_id } => {
            let Some(channel) = shared.channel(recipient_id) else {
                return;
            };
            let mut state = channel.lock();
            state.close_received = true;
            if state.close_sent {
                shared.retire(&channel);
            }
            drop(state);
            channel.notify();
            // Wakes the local reading thread without touching the wire, so it
            // can answer CLOSE.
            let _ = channel.socket.shutdown(std::net::Shutdown::Read);
        }
    }
}
