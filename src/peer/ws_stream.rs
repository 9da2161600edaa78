//! The peer's WebSocket client stream: masked binary frames, one reader and one writer.

use crate::peer::tls_stream::TlsStream;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tungstenite::protocol::WebSocket;
use uuid::Uuid;

/// Where a WebSocket's bytes go: the socket, or TLS over it.
pub(crate) enum Sink {
    Plain(TcpStream),
    Tls(Arc<TlsStream>),
}

impl Sink {
    fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain(sock) => (&*sock).write_all(bytes),
            Sink::Tls(tls) => tls.write_all(bytes),
        }
    }
}

/// The sending half of a WebSocket. Data frames are built and written by the
/// writing thread; the few frames tungstenite writes while reading (pong, the
/// reply to a close) are queued and sent by whichever thread holds `send`, so
/// the reader never waits behind a writer blocked on a full socket.
pub(crate) struct WsSender {
    pub(crate) sink: Sink,
    /// Held while bytes go to the socket: frames never interleave.
    pub(crate) send: Mutex<()>,
    /// Frames tungstenite wrote from the reading thread, not yet sent.
    pub(crate) control: Mutex<Vec<u8>>,
    /// During the upgrade tungstenite writes the request directly.
    pub(crate) handshaking: AtomicBool,
    /// Our close frame is out: nothing may follow it.
    pub(crate) sent_close: AtomicBool,
}

impl WsSender {
    /// Sends one whole frame (after any queued control frames), blocking.
    fn send_frame(&self, frame: &[u8]) -> io::Result<()> {
        let guard = self.send.lock().unwrap_or_else(|e| e.into_inner());
        if self.sent_close.load(Ordering::Acquire) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.send_control_locked()?;
        self.sink.write_all(frame)?;
        self.send_control_locked()?;
        drop(guard);
        self.flush_control()
    }

    /// Sends the close frame; nothing is sent after it.
    fn send_close(&self, frame: &[u8]) -> io::Result<()> {
        let _guard = self.send.lock().unwrap_or_else(|e| e.into_inner());
        if self.sent_close.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.send_control_locked()?;
        self.sink.write_all(frame)
    }

    fn send_control_locked(&self) -> io::Result<()> {
        let queued = std::mem::take(&mut *self.control.lock().unwrap_or_else(|e| e.into_inner()));
        if queued.is_empty() || self.sent_close.load(Ordering::Acquire) {
            return Ok(());
        }
        self.sink.write_all(&queued)
    }

    /// Sends queued control frames unless another thread is sending: that
    /// thread sends them after its frame (and re-checks after letting go).
    fn flush_control(&self) -> io::Result<()> {
        loop {
            let Ok(guard) = self.send.try_lock() else {
                return Ok(());
            };
            self.send_control_locked()?;
            drop(guard);
            if self
                .control
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                return Ok(());
            }
        }
    }
}

/// The stream tungstenite reads from: reads are the socket's (or TLS's);
/// writes are queued control frames, except during the upgrade.
pub(crate) struct WsIo(pub(crate) Arc<WsSender>);

impl Read for WsIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.0.sink {
            Sink::Plain(sock) => (&*sock).read(buf),
            Sink::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for WsIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.handshaking.load(Ordering::Acquire) {
            self.0.sink.write_all(buf)?;
        } else {
            self.0
                .control
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.0.handshaking.load(Ordering::Acquire) {
            return match &self.0.sink {
                Sink::Plain(_) => Ok(()),
                Sink::Tls(tls) => tls.flush(),
            };
        }
        self.0.flush_control()
    }
}

/// A WebSocket client stream, split in two: the reading thread owns
/// tungstenite's `WebSocket` (which cannot be shared across threads without a
/// lock that a blocked read would hold), and the writing thread builds masked
/// binary frames with tungstenite's frame type and sends them through
/// [`WsSender`]. No lock is held across a blocking read.
pub struct WsStream {
    reader: Mutex<WsState>,
    sender: Arc<WsSender>,
    pub(crate) control: TcpStream,
    pub(crate) over_tls: bool,
}

struct WsState {
    ws: WebSocket<WsIo>,
    /// The rest of the last data frame, not yet read.
    pending: tungstenite::Bytes,
    eof: bool,
}

impl WsStream {
    pub(crate) fn new(ws: WebSocket<WsIo>, sender: Arc<WsSender>, control: TcpStream) -> WsStream {
        let over_tls = matches!(sender.sink, Sink::Tls(_));
        WsStream {
            reader: Mutex::new(WsState {
                ws,
                pending: tungstenite::Bytes::new(),
                eof: false,
            }),
            sender,
            control,
            over_tls,
        }
    }

    /// Reads the payload of data frames (binary or text); a close frame is
    /// the end of the stream; pings are answered.
    ///
    /// The relay's close frame ends only its direction, as a TCP FIN would:
    /// the relay keeps reading what we send after it (it half-closes
    /// WebSocket that way, see src/ws.rs), so our data frames go on until our
    /// own side ends and [`WsStream::shutdown_write`] sends our close frame.
    /// The reply tungstenite queues is never sent: nothing reads it after this.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // Only the reading thread takes this lock.
        let mut state = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if !state.pending.is_empty() {
                let n = buf.len().min(state.pending.len());
                buf[..n].copy_from_slice(&state.pending.split_to(n));
                return Ok(n);
            }
            if state.eof {
                return Ok(0);
            }
            match state.ws.read() {
                Ok(tungstenite::Message::Binary(data)) => state.pending = data,
                Ok(tungstenite::Message::Text(text)) => state.pending = text.into(),
                Ok(tungstenite::Message::Close(_)) => state.eof = true,
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    state.eof = true;
                }
                Err(e) => return Err(ws_error(e)),
            }
        }
    }

    /// Sends `buf` as one masked binary frame.
    pub fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let frame = tungstenite::protocol::frame::Frame::message(
            buf.to_vec(),
            tungstenite::protocol::frame::coding::OpCode::Data(
                tungstenite::protocol::frame::coding::Data::Binary,
            ),
            true,
        );
        self.sender.send_frame(&masked(frame)?)
    }

    /// Sends a close frame: the end of our direction. Data frames from the
    /// relay are still read until its own close frame.
    pub fn shutdown_write(&self) -> io::Result<()> {
        let frame = tungstenite::protocol::frame::Frame::close(None);
        self.sender.send_close(&masked(frame)?)
    }
}

/// Encodes a client frame with a fresh random mask (RFC 6455 §5.3). The mask
/// comes from a version 4 UUID: the system's random source, no extra crate.
fn masked(mut frame: tungstenite::protocol::frame::Frame) -> io::Result<Vec<u8>> {
    let random = *Uuid::new_v4().as_bytes();
    frame.header_mut().mask = Some([random[0], random[5], random[10], random[15]]);
    let mut bytes = Vec::with_capacity(frame.len() + 14);
    frame
        .format(&mut bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(bytes)
}

/// Maps tungstenite's errors onto the I/O errors the bridges classify.
fn ws_error(e: tungstenite::Error) -> io::Error {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::SendAfterClosing) => {
            io::ErrorKind::BrokenPipe.into()
        }
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            io::ErrorKind::ConnectionReset.into()
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}
