//! Peer negotiation (draft 0.2 §2.3): the client's parallel candidate tests and
//! selection, and the server's gathering, accepts and host candidates.

use crate::error::{Error, Result};
use crate::peer::connector::{Connector, JetRequest};
use crate::peer::gather::gather;
use crate::peer::host::HostServer;
use crate::peer::signaling::{SignalIn, SignalOut};
use crate::peer::stream::Relayed;
use crate::wire::candidate::CandidateUrl;
use crate::wire::message::Method;
use crate::wire::secret::ApiKey;
use crate::wire::signal::{allows, Answer, Candidate, CandidateRef, Complete, Offer, Role};
use crate::wire::Transport;
use std::collections::HashSet;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a peer waits for the other peer's next signaling message.
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(60);
/// When a relay candidate works first, how long the client still waits for a
/// host candidate (a direct route is preferred when both work).
pub const HOST_PREFERENCE_WINDOW: Duration = Duration::from_millis(250);
/// The longest a candidate test can take: connect, TLS handshake and answer.
pub(crate) const CANDIDATE_TEST_LIMIT: Duration = Duration::from_secs(35);

/// The candidate both peers ended with.
pub struct Selection {
    /// The selected candidate.
    pub candidate: Candidate,
    /// Its open stream: the peer-to-peer session.
    pub stream: Relayed,
}

/// True for a direct (host) candidate: `?ctype=host`.
pub(crate) fn is_host(url: &CandidateUrl) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_options_never_show_the_api_key() {
        let key = ApiKey::new("s3cret-key-0123456789").unwrap();
        let options = ServerOptions {
            relays: Vec::new(),
            gather: Vec::new(),
            api_key: Some(key),
            host_listen: None,
            timeout: NEGOTIATION_TIMEOUT,
        };
        assert!(!format!("{options:?}").contains("s3cret"));
    }
}
