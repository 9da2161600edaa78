//! Tunnels that stay up: the JMUX server peer that re-parks, the client peer that reconnects, and its local listeners.
//!
//! Both peers use the *same* association and candidate ids for every relayed
//! stream, so they never have to agree on anything new: the relay lets a
//! candidate whose pair ended be accepted again (its slot is closed, and it
//! stays the association's selected candidate), and re-creates an
//! association that expired or was deleted on the next accept, or, with an
//! `api_key`, when a peer POSTs it again (409, "exists", is fine).

mod local;

pub use local::{serve_forward, serve_socks};

use crate::error::{Error, Result};
use crate::peer::connector::{Connector, JetRequest};
use crate::peer::gather::create_association;
use crate::peer::jmux::{self, Opener, Policy, Refusal, Tunnel};
use crate::peer::stream::Relayed;
use crate::wire::candidate::CandidateUrl;
use crate::wire::jmux::REASON_NOT_ALLOWED;
use crate::wire::message::Method;
use crate::wire::secret::ApiKey;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The first wait before re-parking or reconnecting.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A stream that lived this long was healthy: the next wait starts over.
pub const STABLE_STREAM: Duration = Duration::from_secs(30);
/// How long a client that lost its stream keeps trying to get a new one for
/// a waiting local connection (the server peer re-parks within its backoff).
pub const RECONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// Where a line for the user goes (the CLI prints it on stderr).
pub type Notify = Arc<dyn Fn(&str) + Send + Sync>;

/// Doubling waits with jitter, bounded by [`BACKOFF_MAX`].
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }
}

impl Backoff {
    /// The next wait: between half and all of the current step (so many
    /// peers that lost one relay do not all come back at the same instant),
    /// then the step doubles.
    pub fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        // The clock's nanoseconds are jitter enough; no random crate for this.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let fraction = 0.5 + f64::from(nanos % 1000) / 2000.0;
        step.mul_f64(fraction)
    }

    /// Starts over at [`BACKOFF_FIRST`].
    pub fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }
}

/// Where a tunnel's streams are opened: the candidate, its ids, and the REST
/// API that creates the association when the relay wants it created first.
pub struct Rendezvous {
    /// Opens the candidate (TLS trust, proxies).
    pub connector: Arc<Connector>,
    /// The candidate.
    pub url: CandidateUrl,
    /// The association, the same for every stream.
    pub association: Uuid,
    /// The candidate id, the same for every stream.
    pub candidate: Uuid,
    /// `--api URL`: the relay's REST base; `None` creates nothing.
    pub api: Option<String>,
    /// The API key sent to the REST API.
    pub api_key: Option<ApiKey>,
}

impl Rendezvous {
    /// Creates the association when an API is named, then opens the candidate.
    pub fn open(&self, method: Method) -> Result<Relayed> {
        if let Some(api) = &self.api {
            create_association(
                &self.connector,
                api,
                self.association,
                self.api_key.as_ref(),
            )?;
        }
        let request = JetRequest::v2(method, self.association, self.candidate);
        let (stream, _) = self.connector.open(&self.url, &request)?;
        Ok(stream)
    }
}

/// True for errors no wait will fix: a wrong command line or configuration,
/// or credentials the relay refuses.
fn is_fatal(err: &Error) -> bool {
    err.exit_code() == 2
        || matches!(
            err,
            Error::Refused {
                status: 401 | 403,
                ..
            }
        )
}

/// A relayed stream as the two halves and the closer a tunnel runs over.
/// `ended` is set (and `on_end` called, once) as soon as a read finds the
/// stream's end, before the tunnel learns of it, or when the tunnel ends for
/// another reason (its closer runs then): a client checking `ended` never
/// hands a new connection to a tunnel that is about to end.
pub fn relayed_stream(
    relayed: Relayed,
    ended: Arc<AtomicBool>,
    on_end: Option<Notify>,
) -> jmux::Stream {
    let relayed = Arc::new(relayed);
    let signal = Arc::new(EndSignal { ended, on_end });
    let closer = Arc::clone(&relayed);
    let closed = Arc::clone(&signal);
    jmux::Stream {
        reader: Box::new(RelayedReader {
            relayed: Arc::clone(&relayed),
            signal,
        }),
        writer: Box::new(RelayedWriter(relayed)),
        closer: Box::new(move || {
            closer.kill();
            closed.fire("the relayed stream ended");
        }),
    }
}

/// Marks a stream's end, and says so once.
struct EndSignal {
    ended: Arc<AtomicBool>,
    on_end: Option<Notify>,
}

impl EndSignal {
    fn fire(&self, why: &str) {
        if !self.ended.swap(true, Ordering::AcqRel) {
            if let Some(on_end) = &self.on_end {
                on_end(why);
            }
        }
    }
}

/// The read half of a shared relayed stream (which takes `&self` for both).
struct RelayedReader {
    relayed: Arc<Relayed>,
    signal: Arc<EndSignal>,
}

impl Read for RelayedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.relayed.read(buf);
        match &read {
            Ok(0) => self.signal.fire("the relayed stream ended"),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.signal.fire(&format!("the relayed stream failed: {e}")),
        }
        read
    }
}

/// The write half of a shared relayed stream.
struct RelayedWriter(Arc<Relayed>);

impl Write for RelayedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which destinations a server peer connects channels to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    /// `HOST:PORT` as the other peer writes it (compared without case, no
    /// name resolution: `localhost:22` does not allow `127.0.0.1:22`).
    pub destinations: Vec<String>,
    /// `--allow-any`: every destination (an open proxy into this network).
    pub any: bool,
}

impl Allowed {
    /// The tunnel policy; each refusal is also reported through `notify`.
    pub fn policy(self, notify: Notify) -> Policy {
        Arc::new(move |destination: &str| {
            let target = destination.strip_prefix("tcp://").unwrap_or(destination);
            let listed = self
                .destinations
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(target));
            if self.any || listed {
                return Ok(());
            }
            let refusal = Refusal {
                reason: REASON_NOT_ALLOWED,
                description: format!("{destination} is not allowed by this peer (--allow)"),
            };
            notify(&format!("refused channel: {}", refusal.description));
            Err(refusal)
        })
    }
}

/// The server peer: parks on the candidate, runs a JMUX server tunnel over
/// each relayed stream, and parks again when it ends (after a backoff reset
/// by a stream that lived [`STABLE_STREAM`]). Returns only for an error no
/// wait will fix; every other failure is reported and waited out.
pub fn serve(rendezvous: &Rendezvous, policy: Policy, notify: &Notify) -> Result<()> {
    let mut backoff = Backoff::default();
    loop {
        match rendezvous.open(Method::Accept) {
            Ok(stream) => {
                notify(&format!(
                    "accept {} {}: 200",
                    rendezvous.association, rendezvous.candidate
                ));
                let started = Instant::now();
                let ended = Arc::new(AtomicBool::new(false));
                let tunnel = Tunnel::server(relayed_stream(stream, ended, None), policy.clone())
                    .map_err(|e| Error::io("starting the tunnel", e))?;
                let reason = tunnel.wait();
                if started.elapsed() >= STABLE_STREAM {
                    backoff.reset();
                }
                let wait = backoff.delay();
                notify(&format!(
                    "the tunnel ended ({reason}); parking again in {} ms",
                    wait.as_millis()
                ));
                std::thread::sleep(wait);
            }
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                let wait = backoff.delay();
                notify(&format!("{e}; trying again in {} ms", wait.as_millis()));
                std::thread::sleep(wait);
            }
        }
    }
}

/// The client peer's tunnel: opened at once, and opened again for the next
/// local connection after the stream ended.
pub struct Client {
    rendezvous: Rendezvous,
    current: Mutex<Option<Live>>,
    notify: Notify,
}

/// A tunnel and whether its stream was seen to end.
struct Live {
    tunnel: Tunnel,
    ended: Arc<AtomicBool>,
}

impl Live {
    fn is_up(&self) -> bool {
        !self.ended.load(Ordering::Acquire) && !self.tunnel.is_ended()
    }
}

impl Client {
    /// Opens the first stream: an error here (wrong ids, no server peer
    /// parked yet) is the command's error, so mistakes show at once.
    pub fn connect(rendezvous: Rendezvous, notify: Notify) -> Result<Arc<Client>> {
        let tunnel = Client::open_tunnel(&rendezvous, &notify)?;
        Ok(Arc::new(Client {
            rendezvous,
            current: Mutex::new(Some(tunnel)),
            notify,
        }))
    }

    fn open_tunnel(rendezvous: &Rendezvous, notify: &Notify) -> Result<Live> {
        let stream = rendezvous.open(Method::Connect)?;
        notify(&format!(
            "connect {} {}: 200",
            rendezvous.association, rendezvous.candidate
        ));
        let ended = Arc::new(AtomicBool::new(false));
        let stream = relayed_stream(stream, Arc::clone(&ended), Some(Arc::clone(notify)));
        let tunnel = Tunnel::client(stream).map_err(|e| Error::io("starting the tunnel", e))?;
        Ok(Live { tunnel, ended })
    }

    fn current(&self) -> MutexGuard<'_, Option<Live>> {
        // The slot holds a whole tunnel or none, even after a panic.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An opener on a live tunnel: the current one, or a new stream when it
    /// ended (waiting with backoff up to [`RECONNECT_PATIENCE`] for the
    /// server peer to park again). One caller reconnects at a time; the
    /// others wait for its tunnel.
    pub fn opener(&self) -> Result<Opener> {
        let mut current = self.current();
        if let Some(live) = current.as_ref().filter(|live| live.is_up()) {
            return Ok(live.tunnel.opener());
        }
        if let Some(ended) = current.take() {
            // Its reader saw the end: the threads are finishing already.
            let reason = ended.tunnel.wait();
            (self.notify)(&format!("the tunnel ended ({reason}); reconnecting"));
        }
        let started = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            match Client::open_tunnel(&self.rendezvous, &self.notify) {
                Ok(live) => {
                    let opener = live.tunnel.opener();
                    *current = Some(live);
                    return Ok(opener);
                }
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) => {
                    let wait = backoff.delay();
                    if started.elapsed() + wait > RECONNECT_PATIENCE {
                        return Err(e);
                    }
                    (self.notify)(&format!("{e}; trying again in {} ms", wait.as_millis()));
                    std::thread::sleep(wait);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_bound_and_starts_over() {
        let mut backoff = Backoff::default();
        let mut step = BACKOFF_FIRST;
        for _ in 0..12 {
            let wait = backoff.delay();
            assert!(
                wait >= step / 2 && wait <= step,
                "{wait:?} for step {step:?}"
            );
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert_eq!(step, BACKOFF_MAX);
        backoff.reset();
        assert!(backoff.delay() <= BACKOFF_FIRST);
    }

    #[test]
    fn only_listed_destinations_pass_unless_any_is_allowed() {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = Arc::clone(&seen);
        let notify: Notify = Arc::new(move |line| log.lock().unwrap().push(line.to_owned()));
        let allowed = Allowed {
            destinations: vec!["Localhost:22".into()],
            any: false,
        };
        let policy = allowed.policy(Arc::clone(&notify));
        assert_eq!(policy("tcp://localhost:22"), Ok(()));
        let refused = policy("tcp://127.0.0.1:22").expect_err("not listed");
        assert_eq!(refused.reason, REASON_NOT_ALLOWED);
        assert!(seen.lock().unwrap()[0].contains("tcp://127.0.0.1:22"));
        let any = Allowed {
            destinations: vec![],
            any: true,
        }
        .policy(notify);
        assert_eq!(any("tcp://10.0.0.1:3389"), Ok(()));
    }
}
