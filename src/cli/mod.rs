//! The command line: [`parse`] turns argv into an [`args::Command`], [`relay`]
//! and [`peer`] run it on the library, [`usage`] holds the help texts.
//!
//! Exit status: 0 on success, 1 when the work failed at run time (see
//! [`jet_relay::Error::exit_code`]), 2 for a wrong command line or configuration.

pub mod args;
pub mod parse;
pub mod peer;
pub mod relay;
pub mod tunnel;
pub mod usage;

use args::Command;
use jet_relay::log::{self, Level};
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

/// How long a peer waits at exit for its queued log lines to be written.
const PEER_LOG_FLUSH_LIMIT: Duration = Duration::from_millis(500);

/// Parses `args` (without the program name), runs the command, and says how
/// the process exits.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let command = match parse::parse(args) {
        Ok(command) => command,
        Err(mistake) => {
            let hint = mistake.topic.hint();
            eprintln!("jet-relay: {}\n{hint}", mistake.into_error());
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help(topic) => {
            print!("{}", topic.text());
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("jet-relay {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        // The relay's errors are about the relay as a whole: no subcommand name.
        Command::Relay(args) => report(None, relay::run(args)),
        Command::Accept(args) => report(Some("accept"), as_peer(|| peer::accept(args))),
        Command::Connect(args) => report(Some("connect"), as_peer(|| peer::connect(args))),
        Command::Offer(args) => report(Some("offer"), as_peer(|| peer::offer(args))),
        Command::Answer(args) => report(Some("answer"), as_peer(|| peer::answer(args))),
        Command::Test(args) => match as_peer(|| peer::test(args)) {
            // The reason is printed already.
            Ok(Err(peer::NotUsable)) => ExitCode::from(1),
            other => report(Some("test"), other.map(|_| ())),
        },
    }
}

/// Prints a failure as `jet-relay: [SUBCOMMAND: ]WHAT` and picks the exit code.
fn report(name: Option<&str>, result: jet_relay::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match name {
                // A refusal names the request itself: `jet-relay: the relay
                // refused accept A C: 404 unknown association (...)`.
                Some(_) if matches!(e, jet_relay::Error::Refused { .. }) => {
                    eprintln!("jet-relay: {e}")
                }
                Some(name) => eprintln!("jet-relay: {name}: {e}"),
                None => eprintln!("jet-relay: {e}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs a peer command with the peers' log level, and lets its queued log
/// lines out before the process exits (why a gather failed is often why the
/// command fails).
fn as_peer<T>(run: impl FnOnce() -> T) -> T {
    peer_logging();
    let result = run();
    log::flush(PEER_LOG_FLUSH_LIMIT);
    result
}

/// Peers log at warn unless `JET_RELAY_LOG` says otherwise (an unknown
/// value is ignored: a peer is not worth refusing over its log level).
fn peer_logging() {
    let level = std::env::var("JET_RELAY_LOG")
        .ok()
        .and_then(|text| Level::parse(&text))
        .unwrap_or(Level::Warn);
    log::init(level);
}
