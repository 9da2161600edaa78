//! The command line as data: one [`Command`], with one struct per subcommand
//! holding exactly what that subcommand takes ([`crate::cli::parse`] makes them).

use crate::cli::usage::Topic;
use jet_relay::relay::config::ListenUrl;
use jet_relay::wire::{CandidateUrl, Transport};
use jet_relay::Error;
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// What the user asked for.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// Run the relay (no subcommand, or `relay`).
    Relay(RelayArgs),
    /// The server peer on one candidate.
    Accept(AcceptArgs),
    /// The client peer on one candidate.
    Connect(ConnectArgs),
    /// Whether a candidate is usable.
    Test(TestArgs),
    /// The client peer of a negotiation.
    Offer(OfferArgs),
    /// The server peer of a negotiation.
    Answer(AnswerArgs),
    /// Print the usage of a topic (`--help`, `help SUBCOMMAND`, `SUBCOMMAND --help`).
    Help(Topic),
    /// Print the version (`--version`, `-V`).
    Version,
}

/// `jet-relay [--config PATH] [--listen URL]...`
#[derive(Debug, Default, PartialEq)]
pub struct RelayArgs {
    /// `--config PATH`; `None`: ./relay.toml when it exists, else the defaults.
    pub config: Option<PathBuf>,
    /// `--listen URL`, repeatable: replaces the configured listeners.
    pub listen: Vec<ListenUrl>,
}

/// `jet-relay accept URL ASSOCIATION CANDIDATE` or `accept --v1 URL`.
#[derive(Debug, PartialEq)]
pub struct AcceptArgs {
    /// The candidate to open.
    pub url: CandidateUrl,
    /// `None` for `--v1`: the relay names the association.
    pub ids: Option<Ids>,
    /// Where the stream goes and how TLS is checked.
    pub peer: PeerOptions,
    /// `--jmux`: a tunnel that stays up, and the destinations it serves.
    pub jmux: Option<JmuxServer>,
    /// `--api URL` and `--api-key KEY`: create the association first.
    pub rest: Rest,
}

/// `accept --jmux [--forward HOST:PORT] [--allow HOST:PORT]... [--allow-any]`.
#[derive(Debug, Default, PartialEq)]
pub struct JmuxServer {
    /// The destinations channels may open (`--forward` and every `--allow`).
    pub allow: Vec<String>,
    /// `--allow-any`: every destination (an open proxy: named as dangerous).
    pub allow_any: bool,
}

/// `connect --jmux --listen ADDR=HOST:PORT... [--socks5 ADDR]...`.
#[derive(Debug, Default, PartialEq)]
pub struct JmuxClient {
    /// `--listen ADDR=HOST:PORT`: local address, destination `HOST:PORT`.
    pub listen: Vec<(String, String)>,
    /// `--socks5 ADDR`: SOCKS5 listeners, one channel per CONNECT.
    pub socks5: Vec<String>,
}

/// `--api URL` and `--api-key KEY` of accept and connect.
#[derive(Debug, Default, PartialEq)]
pub struct Rest {
    /// The relay's REST base (`http://HOST:PORT`, `https://...`).
    pub api: Option<String>,
    /// `None`: `JET_API_KEY`, read when the command runs.
    pub api_key: Option<Secret>,
}

/// `jet-relay connect URL ASSOCIATION CANDIDATE` or
/// `connect --v1 --association ID URL`.
#[derive(Debug, PartialEq)]
pub struct ConnectArgs {
    /// The candidate to open.
    pub url: CandidateUrl,
    /// Version 2 ids, or the version 1 association.
    pub target: ConnectTarget,
    /// Where the stream goes and how TLS is checked.
    pub peer: PeerOptions,
    /// `--jmux`: a tunnel that stays up, and its local listeners.
    pub jmux: Option<JmuxClient>,
    /// `--api URL` and `--api-key KEY`: create the association first.
    pub rest: Rest,
}

/// What a connect names.
#[derive(Debug, PartialEq)]
pub enum ConnectTarget {
    /// Version 2: an association and a candidate.
    V2(Ids),
    /// Version 1: only an association (`--v1 --association ID`).
    V1 {
        /// The association the accept peer was given.
        association: Uuid,
    },
}

/// A version 2 association and candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ids {
    /// The association id.
    pub association: Uuid,
    /// The candidate id.
    pub candidate: Uuid,
}

/// `jet-relay test URL ASSOCIATION CANDIDATE [--ca FILE] [--insecure]`
#[derive(Debug, PartialEq)]
pub struct TestArgs {
    /// The candidate to test.
    pub url: CandidateUrl,
    /// Its association and id.
    pub ids: Ids,
    /// How TLS is checked.
    pub tls: Tls,
    /// Which proxy reaches the relay.
    pub proxy: ProxyChoice,
}

/// `jet-relay offer --signal-in PATH --signal-out PATH ...`
#[derive(Debug, PartialEq)]
pub struct OfferArgs {
    /// Where the signaling messages come from and go.
    pub signals: Signals,
    /// `--association ID`; `None`: a fresh one.
    pub association: Option<Uuid>,
    /// `--transports LIST`; `None`: every transport.
    pub transports: Option<Vec<Transport>>,
    /// Where the stream goes and how TLS is checked.
    pub peer: PeerOptions,
    /// How long to wait for each signaling message.
    pub timeout: Duration,
}

/// `jet-relay answer --signal-in PATH --signal-out PATH ...`
#[derive(Debug, PartialEq)]
pub struct AnswerArgs {
    /// Where the signaling messages come from and go.
    pub signals: Signals,
    /// `--relay URL`, repeatable: accept there on a made-up candidate id.
    pub relays: Vec<CandidateUrl>,
    /// `--gather URL`, repeatable: REST APIs that gather candidates.
    pub gather: Vec<String>,
    /// `--api-key KEY`; `None`: `JET_API_KEY`, read when the command runs.
    pub api_key: Option<Secret>,
    /// `--host-listen ADDR` (default 0.0.0.0:0); `None` with `--no-host-candidates`.
    pub host_listen: Option<String>,
    /// Where the stream goes and how TLS is checked.
    pub peer: PeerOptions,
    /// How long to wait for each signaling message.
    pub timeout: Duration,
}

/// `--signal-in PATH --signal-out PATH` (`-` for stdin/stdout).
#[derive(Debug, PartialEq)]
pub struct Signals {
    /// Where the other peer's messages are read.
    pub input: String,
    /// Where ours are written.
    pub output: String,
}

/// The options every bridging peer command takes.
#[derive(Debug, Default, PartialEq)]
pub struct PeerOptions {
    /// Where the relayed stream goes.
    pub local: LocalSide,
    /// How TLS is checked.
    pub tls: Tls,
    /// Which proxy reaches the relay.
    pub proxy: ProxyChoice,
}

/// `--proxy URL` and `--no-proxy`; neither: the environment decides.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProxyChoice {
    /// `--proxy http://[USER:PASS@]HOST:PORT` or `socks5://...`.
    pub url: Option<String>,
    /// `--no-proxy`: connect directly, whatever the environment says.
    pub none: bool,
}
#[derive(Debug, Default, PartialEq)]
pub enum LocalSide {
    /// stdin and stdout.
    #[default]
    Stdio,
    /// `--forward HOST:PORT`: a new connection to a local service.
    Forward(String),
    /// `--listen ADDR`: one connection accepted on a local address first.
    Listen(String),
}

/// `--ca FILE` and `--insecure`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tls {
    /// Trust only the certificates in this PEM file.
    pub ca: Option<PathBuf>,
    /// Do not verify the relay's certificate.
    pub insecure: bool,
}

/// A secret from the command line, never shown by `Debug`.
#[derive(PartialEq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A command line that cannot be run: what is wrong, and whose usage says how.
#[derive(Debug, PartialEq)]
pub struct UsageError {
    /// The subcommand whose `--help` explains the mistake.
    pub topic: Topic,
    /// What is wrong, as [`Error::Usage`].
    pub message: String,
}

impl UsageError {
    /// The crate error this mistake is.
    pub fn into_error(self) -> Error {
        Error::Usage(self.message)
    }
}
