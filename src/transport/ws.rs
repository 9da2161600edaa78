//! WebSocket frames (RFC 6455) over any read half and write half, for either role.
//!
//! tungstenite's `WebSocket` cannot be read and written from two threads at
//! once, and sharing it behind one mutex means either holding that mutex
//! across a blocking read (the tiny_http #144 deadlock) or polling the socket
//! with short read timeouts, which delays every write and burns CPU on idle
//! streams. Here the read state (a frame parser) and the write state (a
//! frame writer) are apart: the reading thread owns the parser, the writing
//! thread writes frames, and the only frame the reader ever owes, a pong, is
//! handed to the write side without waiting for it.

use super::{lock, TimedRead};
use crate::wire::websocket::{self, Opcode, Utf8Stream, Violation, MAX_HEADER};
use std::io::{self, IoSlice, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Instant;

/// Bytes read from the stream at once while looking for frame headers: a
/// 64 KiB frame with its largest header (14 bytes) fits, so a message up to
/// the relay's copy buffer crosses as one frame, not two (a 16 KiB buffer
/// split every 16 KiB message into 16,376 + 8 bytes).
pub const WS_READ_BUFFER: usize = 64 * 1024 + 16;

/// Which end of the WebSocket we are: it decides masking (RFC 6455 §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The relay: client frames arrive masked, ours go out unmasked.
    Server,
    /// A peer: we mask our frames, the server's arrive unmasked.
    Client,
}

/// The read half: the payload of data frames (binary, text, continuation);
/// `Ok(0)` at the peer's close frame. Pings are answered, and not data.
///
/// Strict (RFC 6455 §5, §7): a frame a conforming endpoint must reject fails
/// the connection: the close frame with its code (see [`close_code`]) goes
/// to the write side, and this read and every later one fail. Text is
/// checked as UTF-8 as it streams through; binary payloads are not looked at.
///
/// The peer's close frame ends only its direction, as a TCP FIN would: our
/// own close frame goes out when our write half shuts down, after the data
/// we still have to send. That is how far WebSocket lets a half-close go.
pub struct WsReader<R> {
    inner: R,
    role: Role,
    control: Arc<dyn Control>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Payload bytes of the current data frame not yet read.
    remaining: u64,
    /// The current data frame's mask, if it has one.
    mask: Option<[u8; 4]>,
    /// Where in the mask the next payload byte is.
    offset: usize,
    /// A close frame arrived: the stream has ended.
    closed: bool,
    /// A data frame without FIN came, and its message's last frame has not.
    message_open: bool,
    /// The current data frame is its message's last.
    frame_fin: bool,
    /// The UTF-8 check of the current message, when it is text.
    text: Option<Utf8Stream>,
    /// The violation that failed the connection: every later read repeats it.
    failed: Option<Violation>,
}

/// The write half: one binary frame per write; [`WsWriter::shutdown`] sends
/// the close frame.
pub struct WsWriter<W> {
    link: Arc<Link<W>>,
}

/// What the two halves share: the write side, and the pong the reader owes.
struct Link<W> {
    /// Orders frames on the wire; held by whoever writes one.
    out: Mutex<Out<W>>,
    /// The control frames the reader owes, behind one lock a write checks
    /// once.
    owed: Mutex<Owed>,
    /// The reader failed the connection: its close frame is owed or sent.
    failed: AtomicBool,
}

/// Control frames the reader owes the other end, until a writer sends them.
#[derive(Default)]
struct Owed {
    /// The payload of the latest ping not yet answered.
    pong: Option<Vec<u8>>,
    /// The payload of the close frame failing the connection.
    failure: Option<Vec<u8>>,
}

struct Out<W> {
    inner: W,
    /// Masks for our frames (client role only).
    masks: Option<Masks>,
    /// Masked payloads are built here (client role only: the relay's frames
    /// go out header and payload in one vectored write, without a copy).
    staging: Vec<u8>,
    /// Our close frame is sent: no more frames.
    close_sent: bool,
}

/// The write side as the reader sees it: somewhere to leave a pong.
trait Control: Send + Sync {
    fn owe_pong(&self, payload: Vec<u8>);
    /// Owes the close frame failing the connection: sent at once, or by the
    /// writer holding the write lock when it lets go.
    fn fail(&self, payload: Vec<u8>);
}

/// Wraps a read half and a write half whose upgrade is (about to be)
/// answered; `leftover` holds bytes already read after the HTTP head (the
/// first frames, if the other end did not wait for the upgrade's answer).
pub fn new<R: Read, W: Write + Send + 'static>(
    reader: R,
    writer: W,
    role: Role,
    leftover: Vec<u8>,
) -> (WsReader<R>, WsWriter<W>) {
    let link = Arc::new(Link {
        out: Mutex::new(Out {
            inner: writer,
            masks: (role == Role::Client).then(Masks::new),
            staging: Vec::new(),
            close_sent: false,
        }),
        owed: Mutex::new(Owed::default()),
        failed: AtomicBool::new(false),
    });
    let end = leftover.len();
    let mut buf = leftover;
    buf.resize(end.max(WS_READ_BUFFER), 0);
    let reader = WsReader {
        inner: reader,
        role,
        control: Arc::clone(&link) as Arc<dyn Control>,
        buf,
        start: 0,
        end,
        remaining: 0,
        mask: None,
        offset: 0,
        closed: false,
        message_open: false,
        frame_fin: false,
        text: None,
        failed: None,
    };
    (reader, WsWriter { link })
}

/// The error of a read that failed the connection: a frame RFC 6455 says
/// to reject. [`close_code`] finds its code in an `io::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolViolation(pub Violation);

impl std::fmt::Display for ProtocolViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WebSocket failed with close code {}: {}",
            self.0.code, self.0.reason
        )
    }
}

impl std::error::Error for ProtocolViolation {}

/// The close code a read error failed the WebSocket with, if it is one of
/// ours (1002, 1007, 1009); `None` for I/O errors and clean ends.
pub fn close_code(e: &io::Error) -> Option<u16> {
    e.get_ref()?
        .downcast_ref::<ProtocolViolation>()
        .map(|v| v.0.code)
}

fn protocol_error(violation: Violation) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, ProtocolViolation(violation))
}

fn truncated(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("stream ended inside a WebSocket {what}"),
    )
}

impl<R: Read> WsReader<R> {
    /// Reads payload bytes of the current data frame into `out`.
    fn read_payload(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = self.remaining.min(out.len() as u64) as usize;
        let n = if self.start < self.end {
            let n = want.min(self.end - self.start);
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            n
        } else {
            // Large frames go straight from the stream into `out`: no copy.
            match self.inner.read(&mut out[..want])? {
                0 => return Err(truncated("frame")),
                n => n,
            }
        };
        if let Some(mask) = self.mask {
            websocket::apply_mask(&mut out[..n], mask, self.offset);
            self.offset = (self.offset + n) % 4;
        }
        self.remaining -= n as u64;
        // Text only: binary payloads pass untouched. A piece that breaks
        // UTF-8 is not handed out.
        if let Some(text) = &mut self.text {
            let mut checked = text.feed(&out[..n]);
            if checked.is_ok() && self.remaining == 0 && self.frame_fin {
                checked = text.finish();
            }
            if let Err(violation) = checked {
                return Err(self.fail(violation));
            }
        }
        if self.remaining == 0 && self.frame_fin {
            self.text = None;
        }
        Ok(n)
    }

    /// Fails the connection: owes the close frame with the violation's code
    /// and reason, and makes this and every later read fail.
    fn fail(&mut self, violation: Violation) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some(violation);
            self.control
                .fail(websocket::close_payload(violation.code, violation.reason));
        }
        protocol_error(violation)
    }

    /// Takes a data frame's header: checks it against the message in
    /// progress and starts reading its payload.
    fn start_data_frame(&mut self, header: &websocket::Header) -> Result<(), Violation> {
        match header.opcode {
            Opcode::Text => self.text = Some(Utf8Stream::default()),
            Opcode::Binary => self.text = None,
            _ => {}
        }
        self.message_open = !header.fin;
        self.frame_fin = header.fin;
        self.remaining = header.len;
        self.mask = header.mask;
        self.offset = 0;
        // An empty last frame ends its message here: no payload read will.
        if header.len == 0 && header.fin {
            if let Some(mut text) = self.text.take() {
                text.finish()?;
            }
        }
        Ok(())
    }

    /// Reads more bytes into the frame buffer; false at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = self.inner.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n > 0)
    }
}

impl<R: Read> Read for WsReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        // Each pass returns data, consumes a frame header or control frame,
        // or reads more bytes from the stream.
        loop {
            if let Some(violation) = self.failed {
                return Err(protocol_error(violation));
            }
            if self.closed {
                return Ok(0);
            }
            if self.remaining > 0 {
                return self.read_payload(out);
            }
            let parsed = match websocket::decode_header(&self.buf[self.start..self.end]) {
                Ok(parsed) => parsed,
                Err(violation) => return Err(self.fail(violation)),
            };
            let Some((header, header_len)) = parsed else {
                let partial = self.start < self.end;
                if !self.fill()? {
                    if partial {
                        return Err(truncated("frame header"));
                    }
                    // A TCP or TLS end without a close frame: still an end.
                    return Ok(0);
                }
                continue;
            };
            let masked = self.role == Role::Server;
            if let Err(violation) = websocket::check_header(&header, masked, self.message_open) {
                return Err(self.fail(violation));
            }
            if !header.opcode.is_control() {
                self.start += header_len;
                if let Err(violation) = self.start_data_frame(&header) {
                    return Err(self.fail(violation));
                }
                continue;
            }
            let len = header.len as usize;
            if self.end - self.start < header_len + len {
                if !self.fill()? {
                    return Err(truncated("control frame"));
                }
                continue;
            }
            let at = self.start + header_len;
            let mut payload = self.buf[at..at + len].to_vec();
            self.start = at + len;
            if let Some(mask) = header.mask {
                websocket::apply_mask(&mut payload, mask, 0);
            }
            match header.opcode {
                Opcode::Ping => self.control.owe_pong(payload),
                Opcode::Close => {
                    if let Err(violation) = websocket::check_close_payload(&payload) {
                        return Err(self.fail(violation));
                    }
                    self.closed = true;
                }
                _ => {}
            }
        }
    }
}

impl<R: TimedRead> TimedRead for WsReader<R> {
    /// Every socket read the frame parser makes goes through the read half
    /// underneath, which re-arms the deadline before each one.
    fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.inner.set_deadline(deadline)
    }
}

impl<W: Write + Send> Control for Link<W> {
    fn owe_pong(&self, payload: Vec<u8>) {
        lock(&self.owed).pong = Some(payload);
        self.flush_control();
    }

    fn fail(&self, payload: Vec<u8>) {
        lock(&self.owed).failure = Some(payload);
        self.failed.store(true, Ordering::Release);
        self.flush_control();
    }
}

impl<W: Write> Link<W> {
    /// Sends the owed pong unless a writer holds the write lock, in which case
    /// that writer sends it when it lets go (every write calls this after
    /// releasing the lock). The reader never waits for a writer that may be
    /// blocked on a peer that does not read.
    fn flush_control(&self) {
        // Each pass finds nothing owed, finds the lock taken, or sends the pong.
        loop {
            {
                let owed = lock(&self.owed);
                if owed.pong.is_none() && owed.failure.is_none() {
                    return;
                }
            }
            let mut out = match self.out.try_lock() {
                Ok(out) => out,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
            };
            let owed = std::mem::take(&mut *lock(&self.owed));
            // A failed pong shows up as a failed read or write soon after.
            if let Some(payload) = owed.pong {
                let _ = out.send(Opcode::Pong, &payload);
            }
            // The failing close frame is the last frame: later writes fail.
            if let Some(payload) = owed.failure {
                let _ = out.send(Opcode::Close, &payload);
                out.close_sent = true;
                let _ = out.inner.flush();
            }
        }
    }
}

impl<W: Write> Out<W> {
    /// Writes one final frame, unless our close frame went out already.
    fn send(&mut self, opcode: Opcode, payload: &[u8]) -> io::Result<()> {
        if self.close_sent {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the WebSocket close frame was already sent",
            ));
        }
        let mut header = [0u8; MAX_HEADER];
        let Out {
            inner,
            masks,
            staging,
            ..
        } = self;
        match masks {
            // Server frames: header and payload in one vectored write, so the
            // payload is not copied first (that copy was the largest
            // user-space cost of relaying over ws).
            None => {
                let used = websocket::encode_header(&mut header, opcode, payload.len(), None);
                write_all_vectored(inner, &header[..used], payload)
            }
            Some(masks) => {
                let mask = masks.next();
                let used = websocket::encode_header(&mut header, opcode, payload.len(), Some(mask));
                staging.clear();
                staging.extend_from_slice(payload);
                websocket::apply_mask(staging, mask, 0);
                write_all_vectored(inner, &header[..used], staging)
            }
        }
    }
}

impl<W: Write> WsWriter<W> {
    /// True once the read half failed the connection (a frame RFC 6455 says
    /// to reject): its close frame is sent or owed, and whoever ends the
    /// connection should let it go out rather than reset it.
    pub fn failed(&self) -> bool {
        self.link.failed.load(Ordering::Acquire)
    }

    /// Runs `f` on the write half underneath, between frames: for the
    /// upgrade's answer before any frame, or the socket's write timeout.
    pub fn with_inner<T>(&self, f: impl FnOnce(&mut W) -> T) -> T {
        f(&mut lock(&self.link.out).inner)
    }

    /// Sends the close frame (code 1000): the end of our direction. Frames
    /// from the other end are still read until its own close frame.
    pub fn shutdown(&mut self) -> io::Result<()> {
        if self.failed() {
            // The failing close frame, not a normal one, ends this stream.
            self.link.flush_control();
            return Ok(());
        }
        let mut out = lock(&self.link.out);
        if out.close_sent {
            return Ok(());
        }
        let code = 1000u16.to_be_bytes();
        out.send(Opcode::Close, &code)?;
        out.close_sent = true;
        out.inner.flush()
    }
}

impl<W: Write + Send> Write for WsWriter<W> {
    /// Sends all of `data` as one binary frame, blocking until it is written.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        lock(&self.link.out).send(Opcode::Binary, data)?;
        // A pong the reader owed while we held the write lock.
        self.link.flush_control();
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(&self.link.out).inner.flush()?;
        self.link.flush_control();
        Ok(())
    }
}

/// Writes `head` then `body` with vectored writes until both are out.
fn write_all_vectored(w: &mut impl Write, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
    while !head.is_empty() || !body.is_empty() {
        let slices = [IoSlice::new(head), IoSlice::new(body)];
        let written = match w.write_vectored(&slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let from_head = written.min(head.len());
        head = &head[from_head..];
        body = &body[written - from_head..];
    }
    Ok(())
}

/// Masking keys for a client's frames (RFC 6455 §5.3): xorshift64* seeded
/// from the system's random source (a version 4 UUID), so keys are not
/// predictable from the outside and cost no system call per frame.
struct Masks(u64);

impl Masks {
    fn new() -> Masks {
        let seed = uuid::Uuid::new_v4().as_u64_pair().0;
        Masks(seed | 1)
    }

    fn next(&mut self) -> [u8; 4] {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let word = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32;
        (word as u32).to_ne_bytes()
    }
}
