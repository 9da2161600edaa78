//! Peer negotiation (draft 0.2 §2.2.3, §2.3): the offer, answer and complete
//! messages as JSON lines, candidate gathering, parallel tests and selection.

use crate::error::{is_timeout, Error, Result};
use crate::peer::client::{CandidateUrl, Connector, JetRequest, Relayed};
use crate::wire::message::{self, Command, Method, RequestError};
use crate::wire::packet;
use crate::wire::Transport;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a peer waits for the other peer's next signaling message.
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(60);
/// When a relay candidate works first, how long the client still waits for a
/// host candidate (a direct route is preferred when both work).
pub const HOST_PREFERENCE_WINDOW: Duration = Duration::from_millis(250);
/// The longest signaling line accepted.
pub const MAX_SIGNAL_LINE: usize = 64 * 1024;
/// The most connections the server peer's host listener handshakes at once.
pub const MAX_HOST_HANDSHAKES: usize = 32;
/// How long a connection to the host listener has to send its JET request.
pub const HOST_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest REST response read.
pub const MAX_REST_RESPONSE: usize = 1024 * 1024;
/// The protocol versions the messages may carry ("transports" came with 3).
pub const VERSIONS: std::ops::RangeInclusive<u8> = 2..=3;
/// The longest a candidate test can take: connect, TLS handshake and answer.
pub const CANDIDATE_TEST_LIMIT: Duration = Duration::from_secs(35);

/// Which side of the association a message comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The peer that tests candidates and selects one.
    Client,
    /// The peer that gathers candidates and accepts on them.
    Server,
}

/// One candidate: an id (unique within the association) and a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Candidate id.
    pub id: Uuid,
    /// Candidate URL (`tcp://HOST:PORT?ctype=relay`).
    pub url: String,
}

/// The client's offer (draft 0.2 §2.2.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Association id, chosen by the client.
    pub id: Uuid,
    /// Always `client`.
    pub role: Role,
    /// Protocol version: 2, or 3 when `transports` is given.
    pub version: u8,
    /// Comma-separated transports the client supports; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<String>,
}

/// The server's answer (draft 0.2 §2.2.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The offer's association id.
    pub id: Uuid,
    /// Always `server`.
    pub role: Role,
    /// Protocol version.
    pub version: u8,
    /// Host and relay candidates for the client to test.
    pub candidates: Vec<Candidate>,
}

/// The client's choice (draft 0.2 §2.2.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Complete {
    /// The selected candidate.
    pub candidate: CandidateRef,
}

/// A candidate named by id only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateRef {
    /// Candidate id.
    pub id: Uuid,
}

/// The answer of `POST /jet/gather/<id>` on a relay's REST API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gathered {
    /// Association id.
    pub id: Uuid,
    /// Relay candidates to accept on.
    pub candidates: Vec<Candidate>,
}

fn from_json<T: for<'de> Deserialize<'de>>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text.trim()).map_err(|e| Error::Protocol(format!("{what} message: {e}")))
}

fn check_role(what: &str, got: Role, want: Role) -> Result<()> {
    if got != want {
        return Err(Error::Protocol(format!(
            "{what} message: role is {got:?}, expected {want:?}"
        )));
    }
    Ok(())
}

fn check_version(what: &str, version: u8) -> Result<()> {
    if !VERSIONS.contains(&version) {
        return Err(Error::Protocol(format!(
            "{what} message: version {version} is not supported (2 or 3)"
        )));
    }
    Ok(())
}

impl Offer {
    /// Parses and checks an offer line (unknown fields are ignored).
    pub fn parse(text: &str) -> Result<Offer> {
        let offer: Offer = from_json("offer", text)?;
        check_role("offer", offer.role, Role::Client)?;
        check_version("offer", offer.version)?;
        Ok(offer)
    }

    /// The transports the offer allows; `None` when it does not filter.
    pub fn allowed(&self) -> Option<Vec<Transport>> {
        self.transports.as_deref().map(parse_transports)
    }
}

impl Answer {
    /// Parses and checks an answer line (unknown fields are ignored).
    pub fn parse(text: &str) -> Result<Answer> {
        let answer: Answer = from_json("answer", text)?;
        check_role("answer", answer.role, Role::Server)?;
        check_version("answer", answer.version)?;
        Ok(answer)
    }
}

impl Complete {
    /// Parses a complete line (unknown fields are ignored).
    pub fn parse(text: &str) -> Result<Complete> {
        from_json("complete", text)
    }
}

/// Parses a comma-separated transport list; unknown names are left out (a
/// later version may add transports this peer does not know).
pub fn parse_transports(list: &str) -> Vec<Transport> {
    list.split(',')
        .filter_map(|name| Transport::parse(name.trim()))
        .collect()
}

fn allows(allowed: Option<&[Transport]>, scheme: Transport) -> bool {
    allowed.is_none_or(|list| list.contains(&scheme))
}

/// Where signaling lines go: a file or FIFO, or stdout for `-`.
pub struct SignalOut {
    out: Box<dyn Write + Send>,
}

impl SignalOut {
    /// Opens `path` for writing (`-`: stdout). Opening a FIFO waits for its
    /// reader, at most `timeout`.
    pub fn open(path: &str, timeout: Duration) -> Result<SignalOut> {
        if path == "-" {
            return Ok(SignalOut {
                out: Box::new(io::stdout()),
            });
        }
        let owned = path.to_owned();
        let file = wait_in_thread(timeout, format!("opening {path}"), move || {
            OpenOptions::new()
                .write(true)
                .open(&owned)
                .map_err(|e| Error::io(format!("opening {owned}"), e))
        })?;
        Ok(SignalOut {
            out: Box::new(file),
        })
    }

    /// Writes one message as one JSON line and flushes it.
    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<()> {
        let mut line = serde_json::to_string(message)
            .map_err(|e| Error::Protocol(format!("encoding a message: {e}")))?;
        line.push('\n');
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| Error::io("writing a signaling message", e))
    }
}

/// Runs a blocking call (opening a FIFO) on its own thread and waits for it at
/// most `timeout`; on timeout the thread is left blocked and the caller fails.
fn wait_in_thread<T: Send + 'static>(
    timeout: Duration,
    what: String,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("signal-open".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::io("starting a thread", e))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(Error::io(
            what,
            io::Error::new(io::ErrorKind::TimedOut, "the other peer did not open it"),
        )),
    }
}

/// Signaling lines read by a thread, so waits have a timeout. It reads only
/// the lines asked for, so with `-` the rest of stdin is left for the data.
pub struct SignalIn {
    lines: Receiver<Result<String>>,
}

impl SignalIn {
    /// Starts reading `count` non-empty lines from `path` (`-`: stdin).
    pub fn open(path: &str, count: usize) -> Result<SignalIn> {
        let (tx, rx) = mpsc::channel();
        let path = path.to_owned();
        thread::Builder::new()
            .name("signal-in".into())
            .spawn(move || {
                if path == "-" {
                    read_lines(io::stdin().lock(), count, &tx);
                } else {
                    match File::open(&path) {
                        Ok(file) => read_lines(BufReader::new(file), count, &tx),
                        Err(e) => {
                            let _ = tx.send(Err(Error::io(format!("opening {path}"), e)));
                        }
                    }
                }
            })
            .map_err(|e| Error::io("starting the signaling thread", e))?;
        Ok(SignalIn { lines: rx })
    }

    /// The next line, waiting at most `timeout`; `what` names it in errors.
    pub fn recv(&self, what: &str, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => Err(Error::io(
                format!("waiting for the {what} message"),
                io::Error::new(io::ErrorKind::TimedOut, format!("none within {timeout:?}")),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Protocol(format!(
                "signaling ended before the {what} message"
            ))),
        }
    }
}

fn read_lines(mut input: impl BufRead, count: usize, tx: &Sender<Result<String>>) {
    let mut sent = 0;
    while sent < count {
        let mut line = Vec::new();
        let limit = (MAX_SIGNAL_LINE + 1) as u64;
        let result = (&mut input).take(limit).read_until(b'\n', &mut line);
        let message = match result {
            Ok(0) => Err(Error::Protocol("signaling ended (EOF)".into())),
            Ok(_) if line.len() > MAX_SIGNAL_LINE => Err(Error::Protocol(format!(
                "a signaling line is longer than {MAX_SIGNAL_LINE} bytes"
            ))),
            Ok(_) => match String::from_utf8(line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => Ok(text.trim().to_owned()),
                Err(_) => Err(Error::Protocol("a signaling line is not UTF-8".into())),
            },
            Err(e) => Err(Error::io("reading signaling", e)),
        };
        let failed = message.is_err();
        if tx.send(message).is_err() || failed {
            return;
        }
        sent += 1;
    }
}

/// The candidate both peers ended with.
pub struct Selection {
    /// The selected candidate.
    pub candidate: Candidate,
    /// Its open stream: the peer-to-peer session.
    pub stream: Relayed,
}

/// True for a direct (host) candidate: `?ctype=host`.
pub fn is_host(url: &CandidateUrl) -> bool {
    url.ctype() == Some("host")
}

/// What the client peer (the `offer` command) does.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The association id to offer.
    pub association: Uuid,
    /// Transports to announce and test; `None`: all.
    pub transports: Option<Vec<Transport>>,
    /// How long to wait for the answer.
    pub timeout: Duration,
    /// How long a working relay candidate waits for a host candidate.
    pub host_window: Duration,
}

/// The client peer: sends the offer, tests every candidate of the answer in
/// parallel, selects one, closes the others and sends the complete message.
pub fn run_client(
    connector: &Arc<Connector>,
    options: &ClientOptions,
    input: &SignalIn,
    output: &mut SignalOut,
) -> Result<Selection> {
    let offer = Offer {
        id: options.association,
        role: Role::Client,
        version: if options.transports.is_some() { 3 } else { 2 },
        transports: options.transports.as_ref().map(|list| {
            list.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }),
    };
    output.send(&offer)?;
    let answer = Answer::parse(&input.recv("answer", options.timeout)?)?;
    if answer.id != offer.id {
        return Err(Error::Protocol(format!(
            "answer message: association {} is not the offered {}",
            answer.id, offer.id
        )));
    }
    let mut tested = Vec::new();
    for candidate in answer.candidates {
        match CandidateUrl::parse(&candidate.url) {
            Ok(url) if allows(options.transports.as_deref(), url.scheme) => {
                tested.push((candidate, url));
            }
            Ok(url) => crate::info!(
                "candidate {} skipped: transport {} was not offered",
                candidate.id,
                url.scheme.as_str()
            ),
            Err(e) => crate::warn!("candidate {} skipped: {e}", candidate.id),
        }
    }
    if tested.is_empty() {
        return Err(Error::Protocol("the answer has no usable candidate".into()));
    }
    let (tx, rx) = mpsc::channel();
    for (index, (candidate, url)) in tested.iter().enumerate() {
        let (tx, connector, url) = (tx.clone(), Arc::clone(connector), url.clone());
        let request = JetRequest::v2(Method::Connect, answer.id, candidate.id);
        thread::Builder::new()
            .name(format!("test-{index}"))
            .spawn(move || {
                let _ = tx.send((index, connector.open(&url, &request).map(|(s, _)| s)));
            })
            .map_err(|e| Error::io("starting a candidate test", e))?;
    }
    drop(tx);
    let (index, stream) = select(&tested, rx, options.host_window)?;
    let candidate = tested[index].0.clone();
    output.send(&Complete {
        candidate: CandidateRef { id: candidate.id },
    })?;
    Ok(Selection { candidate, stream })
}

type TestResult = (usize, Result<Relayed>);

/// Waits for candidate tests: the first usable one wins, except that a relay
/// candidate waits `host_window` for a host candidate to work too. Every other
/// usable candidate is closed, now or (for tests still running) when it ends.
fn select(
    tested: &[(Candidate, CandidateUrl)],
    rx: Receiver<TestResult>,
    host_window: Duration,
) -> Result<(usize, Relayed)> {
    let hosts = |indexes: &HashSet<usize>| indexes.iter().any(|i| is_host(&tested[*i].1));
    let mut running: HashSet<usize> = (0..tested.len()).collect();
    let mut best: Option<(usize, Relayed)> = None;
    let mut failures = Vec::new();
    let limit = Instant::now() + CANDIDATE_TEST_LIMIT;
    let mut window_end = limit;
    loop {
        if running.is_empty() {
            break;
        }
        if let Some((i, _)) = &best {
            if is_host(&tested[*i].1) || !hosts(&running) {
                break;
            }
        }
        let left = window_end.saturating_duration_since(Instant::now());
        let (index, result) = match rx.recv_timeout(left) {
            Ok(message) => message,
            Err(_) => break,
        };
        running.remove(&index);
        let (candidate, url) = &tested[index];
        match result {
            Ok(stream) => {
                crate::info!("candidate {} {url} is usable", candidate.id);
                let better = match &best {
                    None => true,
                    Some((i, _)) => is_host(url) && !is_host(&tested[*i].1),
                };
                if better {
                    if let Some((i, loser)) = best.replace((index, stream)) {
                        close_loser(&tested[i].0, &loser);
                    }
                    if !is_host(url) {
                        window_end = Instant::now() + host_window;
                    }
                } else {
                    close_loser(candidate, &stream);
                }
            }
            Err(e) => {
                crate::info!("candidate {} {url} is not usable: {e}", candidate.id);
                failures.push(format!("{url}: {e}"));
            }
        }
    }
    let Some(best) = best else {
        return Err(Error::Protocol(format!(
            "no usable candidate ({})",
            failures.join("; ")
        )));
    };
    if !running.is_empty() {
        // Tests still running are closed as they finish, so a late success
        // never holds a relay pair open.
        let names: Vec<Candidate> = tested.iter().map(|(c, _)| c.clone()).collect();
        let _ = thread::Builder::new()
            .name("late-tests".into())
            .spawn(move || {
                for (index, result) in rx.iter().take(running.len()) {
                    if let Ok(stream) = result {
                        close_loser(&names[index], &stream);
                    }
                }
            });
    }
    Ok(best)
}

fn close_loser(candidate: &Candidate, stream: &Relayed) {
    crate::info!("candidate {} not selected: closing it", candidate.id);
    stream.kill();
}

/// What the server peer (the `answer` command) does.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Relay listener URLs to accept on, one generated candidate id each.
    pub relays: Vec<CandidateUrl>,
    /// Relays whose REST API gathers the candidates (`POST /jet/gather/<id>`).
    pub gather: Vec<String>,
    /// The key the gather calls present (`Authorization: Bearer`), if any.
    pub api_key: Option<ApiKey>,
    /// Where to listen for direct connections; `None`: no host candidates
    /// (the policy that keeps local addresses private).
    pub host_listen: Option<String>,
    /// How long to wait for the offer and the complete message.
    pub timeout: Duration,
}

/// The server peer: reads the offer, gathers relay candidates and accepts on
/// them, adds host candidates, sends the answer, and keeps the candidate the
/// complete message names, closing the others.
pub fn run_server(
    connector: &Arc<Connector>,
    options: &ServerOptions,
    input: &SignalIn,
    output: &mut SignalOut,
) -> Result<Selection> {
    let offer = Offer::parse(&input.recv("offer", options.timeout)?)?;
    let allowed = offer.allowed();
    let allowed = allowed.as_deref();
    let association = offer.id;

    let mut relay_candidates = Vec::new();
    for url in &options.relays {
        relay_candidates.push((Uuid::new_v4(), url.with_param("ctype", "relay")));
    }
    for base in &options.gather {
        match gather(connector, base, association, options.api_key.as_ref()) {
            Ok(found) => {
                for candidate in found {
                    match CandidateUrl::parse(&candidate.url) {
                        Ok(url) => {
                            relay_candidates.push((candidate.id, url.with_param("ctype", "relay")))
                        }
                        Err(e) => crate::warn!("gathered candidate {} skipped: {e}", candidate.id),
                    }
                }
            }
            Err(e) => crate::warn!("gathering on {base} failed: {e}"),
        }
    }
    relay_candidates.retain(|(id, url)| {
        let keep = allows(allowed, url.scheme);
        if !keep {
            crate::info!(
                "candidate {id} {url} left out: the offer does not list {}",
                url.scheme.as_str()
            );
        }
        keep
    });
    let relays = accept_all(connector, association, relay_candidates);

    let host = match &options.host_listen {
        Some(addr) if allows(allowed, Transport::Tcp) => {
            Some(HostServer::start(addr, association)?)
        }
        _ => None,
    };
    let mut candidates: Vec<Candidate> = Vec::new();
    if let Some(host) = &host {
        candidates.extend(host.candidates.iter().map(|(id, url)| Candidate {
            id: *id,
            url: url.to_string(),
        }));
    }
    candidates.extend(relays.iter().map(|(candidate, _)| candidate.clone()));
    if candidates.is_empty() {
        return Err(Error::Protocol(
            "no candidate to offer: every relay failed and host candidates are off".into(),
        ));
    }
    let answer = Answer {
        id: association,
        role: Role::Server,
        version: offer.version,
        candidates: candidates.clone(),
    };
    let outcome = output
        .send(&answer)
        .and_then(|()| input.recv("complete", options.timeout))
        .and_then(|line| Complete::parse(&line));
    let chosen = match outcome {
        Ok(complete) => complete.candidate.id,
        Err(e) => {
            for (_, stream) in &relays {
                stream.kill();
            }
            if let Some(host) = host {
                host.stop(None);
            }
            return Err(e);
        }
    };
    let mut selected = None;
    for (candidate, stream) in relays {
        if candidate.id == chosen {
            selected = Some((candidate, stream));
        } else {
            close_loser(&candidate, &stream);
        }
    }
    if let Some(host) = host {
        let is_ours = host.candidates.iter().any(|(id, _)| *id == chosen);
        let kept = host.stop(is_ours.then_some(chosen));
        if let Some(stream) = kept {
            let candidate = candidates
                .iter()
                .find(|c| c.id == chosen)
                .cloned()
                .expect("the chosen host candidate is in the answer");
            selected = Some((candidate, Relayed::Tcp(stream)));
        }
    }
    match selected {
        Some((candidate, stream)) => Ok(Selection { candidate, stream }),
        None if candidates.iter().any(|c| c.id == chosen) => Err(Error::Protocol(format!(
            "candidate {chosen} was selected but its connection is gone"
        ))),
        None => Err(Error::Protocol(format!(
            "complete message: candidate {chosen} is not in the answer"
        ))),
    }
}

/// Accepts on every relay candidate in parallel; the ones that fail are left
/// out of the answer. A `Jet-Instance` in the response names the relay
/// instance the client must reach (behind a load balancer).
fn accept_all(
    connector: &Arc<Connector>,
    association: Uuid,
    candidates: Vec<(Uuid, CandidateUrl)>,
) -> Vec<(Candidate, Relayed)> {
    let mut handles = Vec::new();
    for (id, url) in candidates {
        let connector = Arc::clone(connector);
        let request = JetRequest::v2(Method::Accept, association, id);
        let shown = url.to_string();
        let spawned = thread::Builder::new().name("accept".into()).spawn(move || {
            let (stream, response) = connector.open(&url, &request)?;
            let url = match response.header("Jet-Instance") {
                Some(instance) => url.with_instance(instance)?,
                None => url,
            };
            let url = url.to_string();
            Ok((Candidate { id, url }, stream))
        });
        match spawned {
            Ok(handle) => handles.push((id, shown, handle)),
            Err(e) => crate::warn!("candidate {id} {shown} left out: cannot start a thread: {e}"),
        }
    }
    let mut accepted = Vec::new();
    for (id, url, handle) in handles {
        match handle.join() {
            Ok(Ok(pair)) => accepted.push(pair),
            Ok(Err::<_, Error>(e)) => {
                crate::warn!("candidate {id} {url} left out: accept failed: {e}")
            }
            Err(_) => crate::warn!("candidate {id} {url} left out: its thread panicked"),
        }
    }
    accepted
}

/// The key a relay's REST API asks for. Its `Debug` hides it, and no error
/// or log line ever shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Checks a key: not empty, no control character (it travels in an HTTP
    /// header line), no space at either end (the relay trims them). The error
    /// does not repeat the key.
    pub fn new(key: &str) -> Result<ApiKey> {
        if key.is_empty() {
            return Err(Error::Config("the API key is empty".into()));
        }
        if key.chars().any(char::is_control) || key.trim() != key {
            return Err(Error::Config(
                "the API key has a control character or a space at one end".into(),
            ));
        }
        Ok(ApiKey(key.to_owned()))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Asks a relay's REST API for candidates: `POST /jet/gather/<id>`, with
/// `Authorization: Bearer KEY` when a key is given. `base` is
/// `http://HOST[:PORT]`, `https://...`, or a relay listener URL (`tcp://` and
/// `ws://` speak plain HTTP, `tls://` and `wss://` HTTPS).
pub fn gather(
    connector: &Connector,
    base: &str,
    association: Uuid,
    api_key: Option<&ApiKey>,
) -> Result<Vec<Candidate>> {
    let url = if let Some(rest) = base.strip_prefix("http://") {
        CandidateUrl::parse(&format!("ws://{rest}"))?
    } else if let Some(rest) = base.strip_prefix("https://") {
        CandidateUrl::parse(&format!("wss://{rest}"))?
    } else {
        CandidateUrl::parse(base)?
    };
    let stream = connector.dial(&url)?;
    let sock = stream.socket();
    sock.set_read_timeout(Some(crate::peer::client::NETWORK_TIMEOUT))
        .and_then(|()| sock.set_write_timeout(Some(crate::peer::client::NETWORK_TIMEOUT)))
        .map_err(|e| Error::io("setting timeouts", e))?;
    let authorization = match api_key {
        Some(ApiKey(key)) => format!("Authorization: Bearer {key}\r\n"),
        None => String::new(),
    };
    let request = format!(
        "POST /jet/gather/{association} HTTP/1.1\r\nHost: {}\r\n{authorization}Accept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        url.authority()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| Error::io("sending the gather request", e))?;
    let (status, body) = read_http_response(&stream)?;
    stream.kill();
    if status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        let hint = match (status, api_key) {
            (401, None) => " (this relay wants an API key: set JET_API_KEY or pass --api-key)",
            (401, Some(_)) => " (the relay refused the API key given)",
            _ => "",
        };
        return Err(Error::Protocol(format!(
            "gather answered {status}: {}{hint}",
            text.trim()
        )));
    }
    let gathered: Gathered = serde_json::from_slice(&body)
        .map_err(|e| Error::Protocol(format!("gather response: {e}")))?;
    if gathered.id != association {
        return Err(Error::Protocol(format!(
            "gather response: association {} is not {association}",
            gathered.id
        )));
    }
    Ok(gathered.candidates)
}

/// Reads an HTTP/1.1 response: the head, then `Content-Length` bytes or
/// everything up to EOF.
fn read_http_response(stream: &Relayed) -> Result<(u16, Vec<u8>)> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut eof = false;
    let (status, head_len, length) = loop {
        let mut headers = [httparse::EMPTY_HEADER; message::MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&data) {
            Ok(httparse::Status::Complete(len)) => {
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                };
                if header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                    return Err(Error::Protocol(
                        "the REST API answered chunked; expected Content-Length".into(),
                    ));
                }
                let length = match header("Content-Length") {
                    Some(v) => Some(
                        v.parse::<usize>()
                            .map_err(|_| Error::Protocol(format!("bad Content-Length {v:?}")))?,
                    ),
                    None => None,
                };
                break (response.code.unwrap_or_default(), len, length);
            }
            Ok(httparse::Status::Partial) if eof => {
                return Err(Error::Protocol(
                    "the REST response ended inside its head".into(),
                ))
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(Error::Protocol(format!("not an HTTP response: {e}"))),
        }
        eof = read_more(stream, &mut data, &mut chunk)?;
    };
    let want = length.map(|l| head_len + l);
    if want.is_some_and(|w| w > MAX_REST_RESPONSE) {
        return Err(Error::Protocol("the REST response is too large".into()));
    }
    while !eof && want.is_none_or(|w| data.len() < w) {
        eof = read_more(stream, &mut data, &mut chunk)?;
    }
    let end = want.unwrap_or(data.len());
    if data.len() < end {
        return Err(Error::Protocol("the REST response ended early".into()));
    }
    Ok((status, data[head_len..end].to_vec()))
}

/// Appends one read to `data`; true at EOF (a reset after the response or a
/// TLS close without close_notify count as EOF: the length check decides).
fn read_more(stream: &Relayed, data: &mut Vec<u8>, chunk: &mut [u8]) -> Result<bool> {
    if data.len() > MAX_REST_RESPONSE {
        return Err(Error::Protocol("the REST response is too large".into()));
    }
    loop {
        match stream.read(chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                data.extend_from_slice(&chunk[..n]);
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if crate::error::is_disconnect(&e) => return Ok(true),
            Err(e) => return Err(Error::io("reading the REST response", e)),
        }
    }
}

/// The server peer's own listener for host candidates: answers a client's
/// JET connect on a host candidate with 200 and hands the stream over.
pub struct HostServer {
    /// The host candidates: one per local address, all on this listener.
    pub candidates: Vec<(Uuid, CandidateUrl)>,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    served: Receiver<(Uuid, TcpStream)>,
}

impl HostServer {
    /// Binds `addr` and starts answering connects for `association`. On a
    /// wildcard address the candidates are the machine's own addresses.
    pub fn start(addr: &str, association: Uuid) -> Result<HostServer> {
        let listener =
            TcpListener::bind(addr).map_err(|e| Error::io(format!("binding {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("reading the host listener address", e))?;
        let ips = if local.ip().is_unspecified() {
            local_addresses(local.ip())
        } else {
            vec![local.ip()]
        };
        let candidates: Vec<(Uuid, CandidateUrl)> = ips
            .into_iter()
            .map(|ip| {
                let url = CandidateUrl {
                    scheme: Transport::Tcp,
                    host: ip.to_string(),
                    port: local.port(),
                    explicit_port: true,
                    query: Some("ctype=host".into()),
                };
                (Uuid::new_v4(), url)
            })
            .collect();
        let ids: Arc<Vec<Uuid>> = Arc::new(candidates.iter().map(|(id, _)| *id).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, served) = mpsc::channel();
        let thread = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("host-listener".into())
                .spawn(move || host_accept_loop(listener, association, ids, stop, tx))
                .map_err(|e| Error::io("starting the host listener", e))?
        };
        Ok(HostServer {
            candidates,
            local,
            stop,
            thread: Some(thread),
            served,
        })
    }

    /// Stops listening and closes every connection it served, except the one
    /// on `keep`, which is returned (waiting a little for it if its handshake
    /// is finishing).
    pub fn stop(mut self, keep: Option<Uuid>) -> Option<TcpStream> {
        let mut kept = None;
        if let Some(keep) = keep {
            let deadline = Instant::now() + HOST_HANDSHAKE_TIMEOUT;
            while kept.is_none() {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.served.recv_timeout(left) {
                    Ok((id, sock)) if id == keep => kept = Some(sock),
                    Ok((id, sock)) => close_host(id, &sock),
                    Err(_) => break,
                }
            }
        }
        self.stop.store(true, Ordering::Release);
        let mut wake = self.local;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        // The accept loop checks the flag after each connection: wake it.
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        while let Ok((id, sock)) = self.served.try_recv() {
            close_host(id, &sock);
        }
        kept
    }
}

fn close_host(id: Uuid, sock: &TcpStream) {
    crate::info!("candidate {id} not selected: closing it");
    let _ = sock.shutdown(Shutdown::Both);
}

fn host_accept_loop(
    listener: TcpListener,
    association: Uuid,
    ids: Arc<Vec<Uuid>>,
    stop: Arc<AtomicBool>,
    tx: Sender<(Uuid, TcpStream)>,
) {
    let taken = Arc::new(Mutex::new(HashSet::new()));
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Ok((sock, peer)) = accepted else {
            continue;
        };
        if busy.load(Ordering::Acquire) >= MAX_HOST_HANDSHAKES {
            crate::warn!("host listener: {peer} refused: too many handshakes");
            continue;
        }
        busy.fetch_add(1, Ordering::AcqRel);
        let (ids, taken, busy, tx, stop) = (
            Arc::clone(&ids),
            Arc::clone(&taken),
            Arc::clone(&busy),
            tx.clone(),
            Arc::clone(&stop),
        );
        let spawned = thread::Builder::new()
            .name("host-handshake".into())
            .spawn(move || {
                serve_host(sock, association, &ids, &taken, &stop, &tx);
                busy.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            crate::warn!("host listener: cannot start a thread for {peer}");
        }
    }
}

/// Answers one connection on the host listener like a relay would: 200 to a
/// connect (or test) on one of our host candidates, an error status otherwise.
fn serve_host(
    sock: TcpStream,
    association: Uuid,
    ids: &[Uuid],
    taken: &Mutex<HashSet<Uuid>>,
    stop: &AtomicBool,
    tx: &Sender<(Uuid, TcpStream)>,
) {
    let _ = sock.set_nodelay(true);
    let deadline = Instant::now() + HOST_HANDSHAKE_TIMEOUT;
    if sock.set_read_timeout(Some(HOST_HANDSHAKE_TIMEOUT)).is_err()
        || sock
            .set_write_timeout(Some(HOST_HANDSHAKE_TIMEOUT))
            .is_err()
    {
        return;
    }
    let packet = match packet::read_packet(DeadlineReader {
        sock: &sock,
        deadline,
    }) {
        Ok(packet) => packet,
        Err(e) => {
            crate::info!("host listener: connection closed before a request: {e}");
            return;
        }
    };
    let (status, version, handed) = match message::parse_request(&packet.payload) {
        Err(RequestError::Malformed(why)) => {
            crate::info!("host listener: malformed request: {why}");
            return;
        }
        Err(RequestError::BadRequest(_)) => (400, 2, None),
        Ok(request) => {
            let ours = request
                .command
                .ids()
                .filter(|(a, c)| *a == association && ids.contains(c));
            match (request.command, ours) {
                (_, None) => (404, request.version, None),
                (Command::AcceptNew | Command::Accept { .. }, _) => (400, request.version, None),
                (Command::Test { .. }, _) => (200, request.version, None),
                (Command::Connect { candidate, .. }, Some(_)) => {
                    let fresh = taken
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(candidate);
                    if fresh && !stop.load(Ordering::Acquire) {
                        (200, request.version, Some(candidate))
                    } else {
                        (409, request.version, None)
                    }
                }
            }
        }
    };
    // Fixed short heads: always fit a packet.
    let Ok(response) = message::response_packet(status, version, &[]) else {
        return;
    };
    if (&sock).write_all(&response).is_err() {
        return;
    }
    match handed {
        Some(candidate) => {
            let _ = sock.set_read_timeout(None);
            let _ = sock.set_write_timeout(None);
            crate::info!("host candidate {candidate}: the client connected");
            // If the negotiation is over, the receiver is gone and the socket
            // closes here.
            let _ = tx.send((candidate, sock));
        }
        None => {
            let _ = sock.shutdown(Shutdown::Write);
        }
    }
}

/// Reads with an overall deadline, however slowly the bytes arrive.
struct DeadlineReader<'a> {
    sock: &'a TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        crate::relay::stream::tcp::set_read_deadline(self.sock, left)?;
        match self.sock.read(buf) {
            Err(e) if is_timeout(&e) => Err(io::ErrorKind::TimedOut.into()),
            other => other,
        }
    }
}

/// The machine's addresses of the same family as `wildcard`, loopback last
/// (and only when there is nothing else). Linux: from /proc.
pub fn local_addresses(wildcard: IpAddr) -> Vec<IpAddr> {
    let found: Vec<IpAddr> = match wildcard {
        IpAddr::V4(_) => std::fs::read_to_string("/proc/net/fib_trie")
            .map(|text| parse_fib_trie(&text).into_iter().map(IpAddr::V4).collect())
            .unwrap_or_default(),
        IpAddr::V6(_) => std::fs::read_to_string("/proc/net/if_inet6")
            .map(|text| parse_if_inet6(&text).into_iter().map(IpAddr::V6).collect())
            .unwrap_or_default(),
    };
    let (mut outside, loopback): (Vec<IpAddr>, Vec<IpAddr>) =
        found.into_iter().partition(|ip| !ip.is_loopback());
    if outside.is_empty() {
        outside = loopback;
    }
    if outside.is_empty() {
        outside.push(match wildcard {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    outside
}

/// The local IPv4 addresses in /proc/net/fib_trie: each `/32 host LOCAL` leaf.
fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut last = None;
    for line in text.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-', '`']);
        if let Ok(ip) = line.trim().parse::<Ipv4Addr>() {
            last = Some(ip);
        } else if line.contains("/32 host LOCAL") {
            if let Some(ip) = last {
                if !found.contains(&ip) {
                    found.push(ip);
                }
            }
        }
    }
    found
}

/// The global IPv6 addresses in /proc/net/if_inet6 (link-local ones need a
/// scope a URL cannot carry).
fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let hex = line.split_whitespace().next()?;
            let value = u128::from_str_radix(hex, 16).ok()?;
            let ip = Ipv6Addr::from(value);
            let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
            (!link_local).then_some(ip)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "4daeb814-cdb6-4779-a16b-6479064e8107";

    #[test]
    fn the_drafts_examples_parse() {
        let offer = Offer::parse(&format!(
            r#"{{"id": "{A}", "role": "client", "transports": "tcp,wss", "version": 2}}"#
        ))
        .unwrap();
        assert_eq!(offer.allowed(), Some(vec![Transport::Tcp, Transport::Wss]));
        let answer = Answer::parse(&format!(
            r#"{{"id": "{A}", "role": "server", "version": 2, "candidates": [
                {{"id": "174a46de-7c56-30e0-e083-b6b03a2df15f", "url": "tcp://10.1.21.34:4489?ctype=host"}},
                {{"id": "b1b4db92-9cc0-49d6-a940-1846fc07cf05", "url": "wss://jet.wayk.net:7171?ctype=relay"}}]}}"#
        ))
        .unwrap();
        assert_eq!(answer.candidates.len(), 2);
        let complete =
            Complete::parse(r#"{"candidate":{"id":"4fab2441-b8a5-4bd5-9831-fe7aa8cccb36"}}"#)
                .unwrap();
        assert_eq!(
            complete.candidate.id.to_string(),
            "4fab2441-b8a5-4bd5-9831-fe7aa8cccb36"
        );
    }

    #[test]
    fn field_names_are_the_drafts() {
        let id = Uuid::parse_str(A).unwrap();
        let offer = Offer {
            id,
            role: Role::Client,
            version: 3,
            transports: Some("tcp".into()),
        };
        assert_eq!(
            serde_json::to_string(&offer).unwrap(),
            format!(r#"{{"id":"{A}","role":"client","version":3,"transports":"tcp"}}"#)
        );
        let bare = Offer {
            transports: None,
            version: 2,
            ..offer
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            format!(r#"{{"id":"{A}","role":"client","version":2}}"#)
        );
        let complete = Complete {
            candidate: CandidateRef { id },
        };
        assert_eq!(
            serde_json::to_string(&complete).unwrap(),
            format!(r#"{{"candidate":{{"id":"{A}"}}}}"#)
        );
    }

    #[test]
    fn unknown_fields_are_tolerated_and_missing_ones_named() {
        let offer = Offer::parse(&format!(
            r#"{{"id":"{A}","role":"client","version":2,"sdp":"x","extra":{{"a":1}}}}"#
        ))
        .unwrap();
        assert_eq!(offer.transports, None);
        let err = Offer::parse(r#"{"role":"client","version":2}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("offer message: missing field `id`"),
            "{err}"
        );
        let err =
            Answer::parse(&format!(r#"{{"id":"{A}","role":"server","version":2}}"#)).unwrap_err();
        assert!(
            err.to_string().contains("missing field `candidates`"),
            "{err}"
        );
        let err = Complete::parse(r#"{"candidate":{}}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `id`"), "{err}");
        let err =
            Offer::parse(&format!(r#"{{"id":"{A}","role":"server","version":2}}"#)).unwrap_err();
        assert!(err.to_string().contains("role"), "{err}");
        let err =
            Offer::parse(&format!(r#"{{"id":"{A}","role":"client","version":7}}"#)).unwrap_err();
        assert!(err.to_string().contains("version 7"), "{err}");
        let err = Offer::parse("not json").unwrap_err();
        assert!(
            err.to_string().starts_with("protocol: offer message:"),
            "{err}"
        );
    }

    #[test]
    fn api_keys_are_checked_and_never_shown() {
        let key = ApiKey::new("s3cret-key-0123456789").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        let options = ServerOptions {
            relays: Vec::new(),
            gather: Vec::new(),
            api_key: Some(key),
            host_listen: None,
            timeout: NEGOTIATION_TIMEOUT,
        };
        assert!(!format!("{options:?}").contains("s3cret"));
        for bad in ["", "two\nlines", " padded", "tab\there"] {
            let err = ApiKey::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("configuration: the API key"), "{err}");
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
    }

    #[test]
    fn transport_lists() {
        assert_eq!(
            parse_transports("tcp, WSS,udp,"),
            vec![Transport::Tcp, Transport::Wss]
        );
        assert!(allows(None, Transport::Tls));
        assert!(!allows(Some(&[Transport::Wss]), Transport::Tcp));
    }

    #[test]
    fn local_addresses_from_proc() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n     |-- 10.0.0.5\n        /32 host LOCAL\n     |-- 10.0.0.255\n        /32 link BROADCAST\nLocal:\n     |-- 10.0.0.5\n        /32 host LOCAL\n";
        assert_eq!(
            parse_fib_trie(trie),
            vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 0, 5)]
        );
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000000000000000001 02 40 20 80     eth0\n20010db8000000000000000000000005 02 40 00 80     eth0\n";
        assert_eq!(
            parse_if_inet6(inet6),
            vec![
                Ipv6Addr::LOCALHOST,
                "2001:db8::5".parse::<Ipv6Addr>().unwrap()
            ]
        );
    }
}
