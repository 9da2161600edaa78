//! WebSocket candidates (`ws://`, `wss://`, draft 0.2 §2.2.5): the upgrade on
//! `/jet/<accept|connect|test>/<association>/<candidate>`, and a full-duplex
//! stream of WebSocket frames.
//!
//! tungstenite provides the accept key and the frame header codec; the
//! stream itself is our own. tungstenite's `WebSocket` cannot be read and
//! written from two threads at once, and sharing it behind one mutex means
//! either holding that mutex across a blocking read (the tiny_http #144
//! deadlock) or polling the socket with short read timeouts, which delays
//! every write by up to one timeout, burns CPU on idle pairs, and would make
//! the pump treat timeouts as "try again" on every transport. Keeping the
//! read state (a frame parser) and the write state (a frame writer) apart lets
//! the pump's two threads run at full speed with no shared lock; the only
//! thing the reader ever sends, a pong, is handed to the writer side without
//! waiting for it (see `WsDuplex::flush_control`).

use crate::relay::stream::{Duplex, Stream, Transport};
use std::io::{self, Cursor};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Bytes read from the stream at once while looking for frame headers: a
/// 64 KiB frame with its largest header (14 bytes) fits, so a message up to
/// the copy buffer's size crosses the relay as one frame, not two (a 16 KiB
/// buffer split every 16 KiB message into 16,376 + 8 bytes).
pub const WS_READ_BUFFER: usize = 64 * 1024 + 16;
/// The largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A WebSocket stream that one thread reads while another writes.
///
/// Binary and text frames carry data (fragments included); a ping is
/// answered with a pong and is not data; a close frame is the end of the
/// stream. The relay writes one binary frame per write, and `shutdown_write`
/// sends a close frame after the last one. The peer may go on sending after
/// our close frame, and we after its one: that is how far WebSocket lets a
/// half-close go.
pub struct WsDuplex {
    inner: Stream,
    kind: Transport,
    /// The frame parser. Only the reading side takes this lock (each stream
    /// has one reader, the writer never touches it), so holding it during
    /// the read from `inner` stalls no writer.
    read: Mutex<Incoming>,
    /// Orders frames on the wire; held by whoever writes one.
    write: Mutex<Outgoing>,
    /// The payload of the latest ping not yet answered.
    pong: Mutex<Option<Vec<u8>>>,
}

struct Incoming {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Payload bytes of the current data frame not yet read.
    remaining: u64,
    /// The current data frame's mask.
    mask: [u8; 4],
    /// Where in the mask the next payload byte is.
    offset: usize,
    /// A close frame arrived: the stream has ended.
    closed: bool,
}

struct Outgoing {
    /// Staging buffer: header and payload go out in one write.
    frame: Vec<u8>,
    /// Our close frame is sent: no more data frames.
    close_sent: bool,
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (buffers are only changed by whole operations).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn protocol_error(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl WsDuplex {
    /// Wraps a stream whose upgrade is (about to be) answered with a 101;
    /// `leftover` holds bytes already read after the request head.
    pub fn new(inner: Stream, leftover: Vec<u8>) -> WsDuplex {
        let end = leftover.len();
        let mut buf = leftover;
        buf.resize(end.max(WS_READ_BUFFER), 0);
        WsDuplex {
            kind: inner.kind().websocket(),
            inner,
            read: Mutex::new(Incoming {
                buf,
                start: 0,
                end,
                remaining: 0,
                mask: [0; 4],
                offset: 0,
                closed: false,
            }),
            write: Mutex::new(Outgoing {
                frame: Vec::new(),
                close_sent: false,
            }),
            pong: Mutex::new(None),
        }
    }

    /// Sends the owed pong unless a writer holds the write lock, in which case
    /// that writer sends it when it lets go (`write_all` calls this after
    /// releasing the lock). The reader never waits for a writer that may be
    /// blocked on a peer that does not read; it can only wait on its own pong
    /// (at most 131 bytes) when the peer's receive window is already full.
    fn flush_control(&self) {
        // Each pass finds nothing owed, finds the lock taken, or sends the pong.
        loop {
            if lock(&self.pong).is_none() {
                return;
            }
            let mut out = match self.write.try_lock() {
                Ok(out) => out,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
            };
            let Some(payload) = lock(&self.pong).take() else {
                return;
            };
            if out.close_sent {
                return;
            }
            out.frame.clear();
            encode_frame(&mut out.frame, OpCode::Control(Control::Pong), &payload);
            // A failed pong shows up as a failed read or write soon after.
            let _ = self.inner.write_all(&out.frame);
        }
    }

    /// Reads payload bytes of the current data frame into `out`.
    fn read_payload(&self, input: &mut Incoming, out: &mut [u8]) -> io::Result<usize> {
        let want = input.remaining.min(out.len() as u64) as usize;
        let n = if input.start < input.end {
            let n = want.min(input.end - input.start);
            out[..n].copy_from_slice(&input.buf[input.start..input.start + n]);
            input.start += n;
            n
        } else {
            // Large frames go straight from the stream into `out`: no copy.
            match self.inner.read(&mut out[..want])? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ended inside a WebSocket frame",
                    ))
                }
                n => n,
            }
        };
        unmask(&mut out[..n], input.mask, input.offset);
        input.offset = (input.offset + n) % 4;
        input.remaining -= n as u64;
        Ok(n)
    }

    /// Reads more bytes into the frame buffer; false at the end of the stream.
    fn fill(&self, input: &mut Incoming) -> io::Result<bool> {
        if input.start == input.end {
            input.start = 0;
            input.end = 0;
        } else if input.start > 0 {
            let (start, end) = (input.start, input.end);
            input.buf.copy_within(start..end, 0);
            input.start = 0;
            input.end = end - start;
        }
        let end = input.end;
        let n = self.inner.read(&mut input.buf[end..])?;
        input.end += n;
        Ok(n > 0)
    }
}

impl Duplex for WsDuplex {
    fn read(&self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut input = lock(&self.read);
        // Each pass returns data, consumes a frame header or control frame,
        // or reads more bytes from the stream.
        loop {
            if input.closed {
                return Ok(0);
            }
            if input.remaining > 0 {
                return self.read_payload(&mut input, out);
            }
            let mut cursor = Cursor::new(&input.buf[input.start..input.end]);
            let parsed =
                FrameHeader::parse(&mut cursor).map_err(|e| protocol_error(e.to_string()))?;
            let header_len = cursor.position() as usize;
            let Some((header, len)) = parsed else {
                let partial = input.start < input.end;
                if !self.fill(&mut input)? {
                    if partial {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "stream ended inside a WebSocket frame header",
                        ));
                    }
                    // A TCP or TLS end without a close frame: still an end.
                    return Ok(0);
                }
                continue;
            };
            let Some(mask) = header.mask else {
                return Err(protocol_error("unmasked frame from a WebSocket client"));
            };
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(protocol_error("reserved bits set without an extension"));
            }
            let control = match header.opcode {
                OpCode::Data(_) => {
                    input.start += header_len;
                    input.remaining = len;
                    input.mask = mask;
                    input.offset = 0;
                    continue;
                }
                OpCode::Control(control) => control,
            };
            if len > MAX_CONTROL_PAYLOAD || !header.is_final {
                return Err(protocol_error("oversized or fragmented control frame"));
            }
            let len = len as usize;
            if input.end - input.start < header_len + len {
                if !self.fill(&mut input)? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ended inside a WebSocket control frame",
                    ));
                }
                continue;
            }
            let at = input.start + header_len;
            let mut payload = input.buf[at..at + len].to_vec();
            input.start = at + len;
            unmask(&mut payload, mask, 0);
            match control {
                Control::Ping => {
                    *lock(&self.pong) = Some(payload);
                    self.flush_control();
                }
                Control::Pong => {}
                Control::Close => input.closed = true,
                Control::Reserved(code) => {
                    return Err(protocol_error(format!("reserved opcode {code:#x}")))
                }
            }
        }
    }

    fn write_all(&self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        {
            let mut out = lock(&self.write);
            if out.close_sent {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the WebSocket close frame was already sent",
                ));
            }
            out.frame.clear();
            encode_header(&mut out.frame, OpCode::Data(Data::Binary), data.len());
            match self.inner.raw_tcp() {
                // Plain TCP: header and payload in one vectored write, so the
                // payload is not copied into the staging buffer first (that
                // copy was the largest user-space cost of relaying over ws).
                Some(sock) => write_all_vectored(sock, &out.frame, data)?,
                // TLS copies into its records anyway: stage the whole frame.
                None => {
                    out.frame.extend_from_slice(data);
                    self.inner.write_all(&out.frame)?;
                }
            }
        }
        // A pong the reader owed while we held the write lock.
        self.flush_control();
        Ok(())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        let mut out = lock(&self.write);
        if out.close_sent {
            return Ok(());
        }
        out.close_sent = true;
        out.frame.clear();
        let code: u16 = CloseCode::Normal.into();
        encode_frame(
            &mut out.frame,
            OpCode::Control(Control::Close),
            &code.to_be_bytes(),
        );
        self.inner.write_all(&out.frame)
    }

    fn socket(&self) -> &TcpStream {
        self.inner.socket()
    }

    fn set_read_deadline(&self, left: Duration) -> io::Result<()> {
        // The transport underneath knows whether a timeout is set.
        self.inner.set_read_deadline(left)
    }
    fn clear_read_deadline(&self) -> io::Result<()> {
        self.inner.clear_read_deadline()
    }
    fn kind(&self) -> Transport {
        self.kind
    }

    fn kill(&self) {
        self.inner.kill();
    }
}

/// Appends an unmasked, final frame (server frames are never masked).
fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    encode_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends the header of an unmasked, final frame of `len` payload bytes.
fn encode_header(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    out.reserve(header.len(len as u64) + len);
    header
        .format(len as u64, out)
        .expect("writing a frame header into a Vec cannot fail");
}

/// Writes `head` then `body` with vectored writes until both are out.
fn write_all_vectored(sock: &TcpStream, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut writer = sock;
    while !head.is_empty() || !body.is_empty() {
        let slices = [io::IoSlice::new(head), io::IoSlice::new(body)];
        let written = match writer.write_vectored(&slices) {
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

/// XORs `buf` with the mask, starting `offset` bytes into it. Works four bytes
/// at a time: this runs over every byte a WebSocket client sends.
fn unmask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let key: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) % 4]);
    let word = u32::from_ne_bytes(key);
    let mut chunks = buf.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmask_matches_the_bytewise_definition_at_every_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..37u8).collect();
        for offset in 0..4 {
            for len in [0, 1, 3, 4, 5, 36, 37] {
                let mut fast = data[..len].to_vec();
                unmask(&mut fast, mask, offset);
                let slow: Vec<u8> = data[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(offset + i) % 4])
                    .collect();
                assert_eq!(fast, slow, "offset {offset} len {len}");
            }
        }
    }
}
