//! The crate's one error type, and the test that keeps resets out of the error logs.

use std::fmt;
use std::io;

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the relay or its peers.
#[derive(Debug)]
pub enum Error {
    /// An I/O error, with what we were doing when it happened.
    Io {
        /// What the relay was doing ("binding tcp://127.0.0.1:8080").
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The configuration file or a command-line value is wrong; the text names the key.
    Config(String),
    /// A peer sent something that is not the JET protocol; the text says what.
    Protocol(String),
    /// The other side answered a request with a status other than 200.
    Status(u16),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Config(text) => write!(f, "configuration: {text}"),
            Error::Protocol(text) => write!(f, "protocol: {text}"),
            Error::Status(code) => write!(f, "the relay answered status {code}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(source: io::Error) -> Error {
        Error::Io {
            context: "i/o".into(),
            source,
        }
    }
}

/// True for the errors a peer causes by going away: resets, aborts, broken pipes,
/// and EOF in the middle of a message. These are ordinary events in a relay and
/// are logged as closes, not as failures.
pub fn is_disconnect(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected
    )
}

/// True for the errors a read or write timeout produces.
pub fn is_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
