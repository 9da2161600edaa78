//! The relay subcommand (the default): configuration, log level, signals
//! (SIGTERM/SIGINT drain, a second one cuts, SIGHUP reloads), systemd
//! readiness, and the `listening` lines scripts read.

use crate::cli::args::RelayArgs;
use jet_relay::log::{self, Level};
use jet_relay::relay::config::ListenerConfig;
use jet_relay::relay::EndReason;
use jet_relay::{Config, Error, Result, Server};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the relay waits at exit for its queued log lines to be written.
const LOG_FLUSH_LIMIT: Duration = Duration::from_millis(200);

/// The file read when `--config` is not given, if it exists.
const DEFAULT_CONFIG: &str = "relay.toml";

/// How often a drain checks for its end and for a second signal.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Where the configuration comes from, so SIGHUP can read it again.
struct Source {
    path: Option<PathBuf>,
    listen: Vec<ListenerConfig>,
}

impl Source {
    fn load(&self) -> Result<Config> {
        let mut config = match &self.path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            config.listeners.clone_from(&self.listen);
        }
        Ok(config)
    }
}

/// The log level: `JET_RELAY_LOG` over the file's `log_level`.
fn level(config: &Config) -> Result<Level> {
    match std::env::var("JET_RELAY_LOG") {
        Ok(text) => Level::parse(&text)
            .ok_or_else(|| Error::Config(format!("JET_RELAY_LOG: {text:?} is not a log level"))),
        Err(_) => Ok(config.log_level),
    }
}

/// Runs the relay until SIGINT or SIGTERM has drained it (or a second one cut it).
pub fn run(args: RelayArgs) -> Result<()> {
    let default_path = Path::new(DEFAULT_CONFIG);
    let source = Source {
        path: args
            .config
            .clone()
            .or_else(|| default_path.exists().then(|| default_path.to_path_buf())),
        listen: args.listen.into_iter().map(ListenerConfig::new).collect(),
    };
    let config = source.load()?;
    log::init(level(&config)?);
    log::set_format(config.log_format);
    raise_descriptor_limit();
    // Installed before any thread starts, so every thread inherits the mask
    // signal-hook needs and no signal is lost between start and the loop.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| Error::io("installing the signal handlers", e))?;
    let server = Server::start_with_listeners(config, inherited_listeners()?)?;
    {
        let mut stdout = std::io::stdout().lock();
        for url in server.local_urls() {
            let _ = writeln!(stdout, "listening {url}");
        }
        if let Some(addr) = server.metrics_addr() {
            let _ = writeln!(stdout, "metrics http://{addr}/metrics");
        }
        let _ = stdout.flush();
    }
    jet_relay::info!("jet-relay {} started", env!("CARGO_PKG_VERSION"));
    notify(Notice::Ready);
    let mut server = server;
    for signal in signals.forever() {
        if signal == SIGHUP {
            reload(&server, &source);
            continue;
        }
        break;
    }
    drain(&mut server, &mut signals);
    log::flush(LOG_FLUSH_LIMIT);
    Ok(())
}

/// Reads the configuration again and applies what can change while running;
/// a configuration that does not load or validate is refused whole.
fn reload(server: &Server, source: &Source) {
    notify(Notice::Reloading);
    match source.load().and_then(|config| server.reload(config)) {
        Ok(report) => {
            let config = server.config();
            if let Ok(level) = level(config.as_ref()) {
                log::set_level(level);
            }
            log::set_format(config.log_format);
            jet_relay::info!("reloaded the configuration{report}");
        }
        Err(e) => jet_relay::error!("reload refused, the running configuration stays: {e}"),
    }
    notify(Notice::Ready);
}

/// Drains: listeners close and waiting connections are closed at once,
/// relaying pairs go on until they end or `drain_timeout` passes; a second
/// SIGTERM or SIGINT cuts at once.
fn drain(server: &mut Server, signals: &mut Signals) {
    let timeout = server.config().drain_timeout;
    server.begin_drain();
    // After the listeners have stopped: whoever waits for STOPPING=1 (a
    // supervisor, a test) finds new connections refused.
    notify(Notice::Stopping);
    jet_relay::info!(
        "draining: {} connection(s) open, cut in {:?} at the latest (a second signal cuts now)",
        server.open_connections(),
        timeout
    );
    let deadline = Instant::now() + timeout;
    loop {
        if signals.pending().any(|s| s == SIGTERM || s == SIGINT) {
            jet_relay::info!("second signal: cutting every connection now");
            server.shutdown_because(EndReason::Shutdown);
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            jet_relay::info!(
                "drain timeout: cutting {} connection(s)",
                server.open_connections()
            );
            break;
        }
        if server.wait_open_connections_at_most(0, left.min(DRAIN_POLL)) {
            jet_relay::info!("drained: every pair ended");
            break;
        }
    }
    server.shutdown();
}

/// What the relay tells systemd (when it runs under it).
enum Notice {
    Ready,
    Reloading,
    Stopping,
}

#[cfg(target_os = "linux")]
fn notify(notice: Notice) {
    use jet_relay::relay::systemd;
    let sent = match notice {
        Notice::Ready => systemd::ready(),
        Notice::Reloading => systemd::reloading(),
        Notice::Stopping => systemd::stopping(),
    };
    if let Err(e) = sent {
        jet_relay::warn!("cannot notify systemd: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
fn notify(_notice: Notice) {}

/// Listening sockets systemd passed (socket activation), if any.
#[cfg(target_os = "linux")]
fn inherited_listeners() -> Result<Vec<std::net::TcpListener>> {
    jet_relay::relay::systemd::listen_fds()
        .map_err(|e| Error::io("taking the sockets systemd passed (LISTEN_FDS)", e))
}

#[cfg(not(target_os = "linux"))]
fn inherited_listeners() -> Result<Vec<std::net::TcpListener>> {
    Ok(Vec::new())
}

/// Raises the soft descriptor limit to the hard one, as nginx and Go do, and
/// says how many pairs that leaves room for.
#[cfg(target_os = "linux")]
fn raise_descriptor_limit() {
    match jet_relay::relay::systemd::raise_nofile_limit() {
        // A relaying pair holds two sockets, and two pipes more on the
        // zero-copy path: count the worst case.
        Ok((soft, hard)) => jet_relay::info!(
            "descriptors: soft limit {soft} (hard {hard}), room for about {} relaying pairs",
            soft / 6
        ),
        Err(e) => jet_relay::warn!("cannot raise the descriptor limit: {e}"),
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_descriptor_limit() {}
