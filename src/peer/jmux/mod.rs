//! JMUX over any full-duplex byte stream: many bridged TCP connections in one.

mod accept;
mod bridge;
pub mod channel;
mod tunnel;

pub use tunnel::{Opener, Tunnel};

use crate::wire::jmux::DecodeError;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The byte stream a tunnel runs over, as two halves and a way to cut it.
pub struct Stream {
    /// Where messages come from.
    pub reader: Box<dyn Read + Send>,
    /// Where messages go.
    pub writer: Box<dyn Write + Send>,
    /// Ends the stream so that a blocked read or write returns (for a socket: shutdown).
    pub closer: Box<dyn Fn() + Send + Sync>,
}

impl Stream {
    /// The halves of a TCP connection; the closer shuts both directions.
    pub fn from_tcp(socket: TcpStream) -> io::Result<Stream> {
        let reader = socket.try_clone()?;
        let writer = socket.try_clone()?;
        Ok(Stream {
            reader: Box::new(reader),
            writer: Box::new(writer),
            closer: Box::new(move || {
                let _ = socket.shutdown(Shutdown::Both);
            }),
        })
    }
}

/// Why the policy refused an OPEN: sent back in OPEN_FAILURE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A `REASON_*` code from [`crate::wire::jmux`].
    pub reason: u32,
    /// Text for the other side's logs.
    pub description: String,
}

/// Decides which destination URLs an accepting tunnel connects to.
pub type Policy = Arc<dyn Fn(&str) -> Result<(), Refusal> + Send + Sync>;

/// How a tunnel behaves; [`TunnelConfig::default`] refuses every OPEN.
#[derive(Clone)]
pub struct TunnelConfig {
    /// Accept OPENs from the peer and decide with this; `None` refuses them all.
    pub policy: Option<Policy>,
    /// How long connecting to an accepted destination may take.
    pub connect_timeout: Duration,
    /// How long [`Opener::open_bridged`] waits for the peer's answer.
    pub open_timeout: Duration,
    /// The receive window granted to the peer on each channel.
    pub window: u32,
    /// The largest DATA payload we ask the peer to send.
    pub max_packet: u16,
}

/// How long an accepting tunnel tries to connect to a destination by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an open waits for its answer by default: longer than the peer's
/// own connect timeout, so its refusal arrives first.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for TunnelConfig {
    fn default() -> TunnelConfig {
        TunnelConfig {
            policy: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            window: crate::wire::jmux::DEFAULT_WINDOW,
            max_packet: crate::wire::jmux::DEFAULT_MAX_PACKET,
        }
    }
}

/// Why opening a channel failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The peer answered OPEN_FAILURE.
    Refused {
        /// Its reason code.
        reason: u32,
        /// Its text.
        description: String,
    },
    /// The destination URL does not fit in one OPEN message.
    DestinationTooLong,
    /// This tunnel already has the most channels it allows.
    TooManyChannels,
    /// The tunnel ended before the answer came.
    TunnelEnded,
    /// No answer came within [`TunnelConfig::open_timeout`].
    Timeout,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Refused {
                reason,
                description,
            } => write!(
                f,
                "channel refused: {} ({reason}): {description}",
                crate::wire::jmux::reason_name(*reason)
            ),
            OpenError::DestinationTooLong => write!(f, "destination URL too long for JMUX"),
            OpenError::TooManyChannels => write!(f, "too many JMUX channels"),
            OpenError::TunnelEnded => write!(f, "the JMUX tunnel ended"),
            OpenError::Timeout => write!(f, "no answer to the JMUX open in time"),
        }
    }
}

impl std::error::Error for OpenError {}

/// Why a tunnel ended; every channel was reset.
#[derive(Debug)]
pub enum EndReason {
    /// The stream ended cleanly between two messages.
    StreamClosed,
    /// The stream ended in the middle of a message.
    StreamTruncated,
    /// Reading the stream failed.
    ReadFailed(io::Error),
    /// Writing the stream failed.
    WriteFailed(io::Error),
    /// The peer sent a malformed message.
    Protocol(DecodeError),
    /// The peer kept sending OPENs while not reading our answers.
    Flooded,
    /// [`Tunnel::close`] was called (or the tunnel dropped).
    Closed,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::StreamClosed => write!(f, "the stream closed"),
            EndReason::StreamTruncated => write!(f, "the stream closed inside a message"),
            EndReason::ReadFailed(err) => write!(f, "reading the stream: {err}"),
            EndReason::WriteFailed(err) => write!(f, "writing the stream: {err}"),
            EndReason::Protocol(err) => write!(f, "protocol: {err}"),
            EndReason::Flooded => write!(f, "the peer opened channels without reading"),
            EndReason::Closed => write!(f, "closed locally"),
        }
    }
}

/// Cuts a local socket so its peer sees a reset, not a clean end, and any
/// thread blocked on it returns (see `transport::cut`).
pub(crate) fn reset_socket(socket: &TcpStream) {
    crate::transport::cut::cut(socket);
}
