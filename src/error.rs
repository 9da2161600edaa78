//! The crate's one error type, and the test that keeps resets out of the error logs.

use std::fmt;
use std::io;

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the relay or its peers.
///
/// [`Error::exit_code`] says how a command ends on each: 2 for a mistake the
/// user must fix before trying again (the command line, the configuration), 1
/// for a failure at run time.
#[derive(Debug)]
pub enum Error {
    /// The command line is wrong (an unknown option, a missing or malformed
    /// argument); the text says what. Fix the command and run it again; the
    /// binary prints a pointer to the subcommand's `--help` and exits 2.
    Usage(String),
    /// The configuration (relay.toml, a certificate or key file it names, a
    /// value such as a CA file or an API key) is wrong; the text names the
    /// key or the file. Nothing was started: fix it and start again (exit 2).
    Config(String),
    /// An I/O error, with what we were doing when it happened. Resets and
    /// the like ([`is_disconnect`]) are the other side going away, not a
    /// fault; others may be worth a retry.
    Io {
        /// What the relay was doing ("binding tcp://127.0.0.1:8080").
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The other side sent something that is not the JET protocol (or not a
    /// valid signaling message); the text says what. Retrying will not help
    /// unless the other side changes.
    Protocol(String),
    /// The relay answered a request with a status other than 200 (101 for
    /// WebSocket): 404 for an unknown association, 401 without the API key,
    /// 409 when the candidate is taken... The request was understood and
    /// refused; change it rather than retry it as is.
    Refused {
        /// What was refused, as `accept ASSOCIATION CANDIDATE` or `gather
        /// ASSOCIATION`.
        request: String,
        /// The status the relay answered.
        status: u16,
        /// The reason the relay gave (its `Jet-Error` header or JSON
        /// `error`), made safe to print; `None` from relays that give none.
        reason: Option<String>,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The process exit code for a command that ends with this error: 2 when
    /// the user must fix the command line or the configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::Config(_) => 2,
            Error::Io { .. } | Error::Protocol(_) | Error::Refused { .. } => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::Usage(text) => f.write_str(text),
            Error::Config(text) => write!(f, "configuration: {text}"),
            Error::Protocol(text) => write!(f, "protocol: {text}"),
            // Without a reason (an older relay), the status's name.
            Error::Refused {
                request,
                status,
                reason,
            } => write!(
                f,
                "the relay refused {request}: {status} {}",
                reason
                    .as_deref()
                    .unwrap_or_else(|| crate::wire::http::reason(*status))
            ),
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
