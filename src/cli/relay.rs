//! The relay subcommand (the default): configuration, log level, signals, and
//! the `listening` lines scripts read.

use crate::cli::args::RelayArgs;
use jet_relay::log::{self, Level};
use jet_relay::relay::config::ListenerConfig;
use jet_relay::{Config, Error, Result, Server};
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// How long the relay waits at exit for its queued log lines to be written.
const LOG_FLUSH_LIMIT: Duration = Duration::from_millis(200);

/// The file read when `--config` is not given, if it exists.
const DEFAULT_CONFIG: &str = "relay.toml";

/// Runs the relay until SIGINT or SIGTERM.
pub fn run(args: RelayArgs) -> Result<()> {
    let default_path = Path::new(DEFAULT_CONFIG);
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None if default_path.exists() => Config::load(default_path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        config.listeners = args.listen.into_iter().map(ListenerConfig::new).collect();
    }
    let level = match std::env::var("JET_RELAY_LOG") {
        Ok(text) => Level::parse(&text)
            .ok_or_else(|| Error::Config(format!("JET_RELAY_LOG: {text:?} is not a log level")))?,
        Err(_) => config.log_level,
    };
    log::init(level);

    let (stop_tx, stop_rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .map_err(|e| Error::io("installing the signal handler", std::io::Error::other(e)))?;

    let mut server = Server::start(config)?;
    {
        let mut stdout = std::io::stdout().lock();
        for url in server.local_urls() {
            let _ = writeln!(stdout, "listening {url}");
        }
        let _ = stdout.flush();
    }
    jet_relay::info!("jet-relay {} started", env!("CARGO_PKG_VERSION"));
    let _ = stop_rx.recv();
    jet_relay::info!("stopping on signal");
    server.shutdown();
    log::flush(LOG_FLUSH_LIMIT);
    Ok(())
}
