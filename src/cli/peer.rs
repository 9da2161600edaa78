//! The peer subcommands: each turns its parsed arguments into calls on
//! `jet_relay::peer` and prints the lines scripts wait for on stderr.

use crate::cli::args::{
    AcceptArgs, AnswerArgs, ConnectArgs, ConnectTarget, Ids, LocalSide, OfferArgs, PeerOptions,
    ProxyChoice, Rest, Secret, Signals, TestArgs, Tls,
};
use crate::cli::tunnel;
use jet_relay::peer::bridge::{bridge, bridge_parked, listen_once, listen_once_reaching, Local};
use jet_relay::peer::negotiate::{self, ClientOptions, ServerOptions};
use jet_relay::peer::proxy::ProxySettings;
use jet_relay::peer::signaling::{SignalIn, SignalOut};
use jet_relay::peer::{Connector, JetRequest, TlsOptions};
use jet_relay::wire::message::{Method, V1_CANDIDATE};
use jet_relay::wire::secret::ApiKey;
use jet_relay::wire::CandidateUrl;
use jet_relay::Result;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The environment variable that holds the REST API key.
const API_KEY_ENV: &str = "JET_API_KEY";

/// `accept`: one candidate, then the bridge.
pub fn accept(args: AcceptArgs) -> Result<()> {
    if let (Some(jmux), Some(ids)) = (&args.jmux, args.ids) {
        let connector = connector(&args.peer.tls, &args.peer.proxy)?;
        return tunnel::accept(&args, jmux, ids, connector);
    }
    let request = match args.ids {
        Some(ids) => JetRequest::v2(Method::Accept, ids.association, ids.candidate),
        None => JetRequest {
            method: Method::Accept,
            version: 1,
            association: None,
            candidate: V1_CANDIDATE,
        },
    };
    let connector = connector(&args.peer.tls, &args.peer.proxy)?;
    if let Some(association) = request.association {
        create(&connector, &args.rest, association)?;
    }
    let local = local(&args.peer, Some((&connector, &args.url)))?;
    let (stream, response) = connector.open(&args.url, &request)?;
    // One line on stderr once the relay answered: the moment the other peer
    // may connect.
    match args.ids {
        Some(Ids {
            association,
            candidate,
        }) => eprintln!(
            "jet-relay: accept {association} {candidate}: {}",
            response.status
        ),
        None => eprintln!(
            "jet-relay: accept association={} instance={} timeout={}: 200",
            response.header("Jet-Association").unwrap_or("?"),
            response.header("Jet-Instance").unwrap_or("?"),
            response.header("Jet-Timeout").unwrap_or("?"),
        ),
    }
    // Parked until its connect comes: its end must wait for it.
    bridge_parked(stream, local)?;
    Ok(())
}

/// `connect`: one candidate, then the bridge.
pub fn connect(args: ConnectArgs) -> Result<()> {
    if let (Some(jmux), ConnectTarget::V2(ids)) = (&args.jmux, &args.target) {
        let connector = connector(&args.peer.tls, &args.peer.proxy)?;
        return tunnel::connect(&args, jmux, *ids, connector);
    }
    let request = match args.target {
        ConnectTarget::V2(ids) => JetRequest::v2(Method::Connect, ids.association, ids.candidate),
        ConnectTarget::V1 { association } => JetRequest {
            method: Method::Connect,
            version: 1,
            association: Some(association),
            candidate: V1_CANDIDATE,
        },
    };
    let connector = connector(&args.peer.tls, &args.peer.proxy)?;
    if let Some(association) = request.association {
        create(&connector, &args.rest, association)?;
    }
    let local = local(&args.peer, Some((&connector, &args.url)))?;
    let (stream, response) = connector.open(&args.url, &request)?;
    eprintln!(
        "jet-relay: connect {} {}: {}",
        request.association.unwrap_or_default(),
        request.candidate,
        response.status
    );
    bridge(stream, local)?;
    Ok(())
}

/// Why `test` found a candidate unusable; the command exits 1.
pub struct NotUsable;

/// `test`: `Ok(Ok(()))` when the candidate is usable, `Ok(Err(NotUsable))`
/// (the reason printed) when it is not; `Err` for a mistake to fix first (a
/// CA file that cannot be read).
pub fn test(args: TestArgs) -> Result<std::result::Result<(), NotUsable>> {
    let Ids {
        association,
        candidate,
    } = args.ids;
    let request = JetRequest::v2(Method::Test, association, candidate);
    match connector(&args.tls, &args.proxy)?.open(&args.url, &request) {
        Ok((stream, response)) => {
            // The relay closes a test right after its answer; so do we.
            let _ = stream.shutdown_write();
            eprintln!(
                "jet-relay: test {association} {candidate}: {} usable",
                response.status
            );
            Ok(Ok(()))
        }
        Err(e) if e.exit_code() == 2 => Err(e),
        Err(e) => {
            eprintln!("jet-relay: test {association} {candidate}: not usable: {e}");
            Ok(Err(NotUsable))
        }
    }
}

/// `offer`: the client peer of a negotiation.
pub fn offer(args: OfferArgs) -> Result<()> {
    let options = ClientOptions {
        association: args.association.unwrap_or_else(Uuid::new_v4),
        transports: args.transports,
        timeout: args.timeout,
        host_window: negotiate::HOST_PREFERENCE_WINDOW,
    };
    let connector = connector(&args.peer.tls, &args.peer.proxy)?;
    let local = local(&args.peer, None)?;
    let (input, mut output) = signals(&args.signals, 1, args.timeout)?;
    let selection = negotiate::run_client(&connector, &options, &input, &mut output)?;
    announce(&selection);
    bridge(selection.stream, local)?;
    Ok(())
}

/// `answer`: the server peer of a negotiation.
pub fn answer(args: AnswerArgs) -> Result<()> {
    let api_key = api_key(args.api_key.as_ref())?;
    let options = ServerOptions {
        relays: args.relays,
        gather: args.gather,
        api_key,
        host_listen: args.host_listen,
        timeout: args.timeout,
    };
    let connector = connector(&args.peer.tls, &args.peer.proxy)?;
    let local = local(&args.peer, None)?;
    let (input, mut output) = signals(&args.signals, 2, args.timeout)?;
    let selection = negotiate::run_server(&connector, &options, &input, &mut output)?;
    announce(&selection);
    bridge(selection.stream, local)?;
    Ok(())
}

/// The API key: the option wins over the environment (where empty means
/// unset); neither is ever printed.
pub fn api_key(option: Option<&Secret>) -> Result<Option<ApiKey>> {
    let from_env = || std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty());
    match option.map(|secret| secret.0.clone()).or_else(from_env) {
        Some(key) => Ok(Some(ApiKey::new(&key)?)),
        None => Ok(None),
    }
}

/// With `--api URL`: creates the association (409, "exists", is fine).
fn create(connector: &Connector, rest: &Rest, association: Uuid) -> Result<()> {
    match &rest.api {
        Some(api) => {
            let key = api_key(rest.api_key.as_ref())?;
            jet_relay::peer::create_association(connector, api, association, key.as_ref())
        }
        None => Ok(()),
    }
}

/// The connector for `tls` and `proxy` (`--proxy`, `--no-proxy`, then
/// `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`...: see `ProxySettings`).
pub fn connector(tls: &Tls, proxy: &ProxyChoice) -> Result<Arc<Connector>> {
    let proxies =
        ProxySettings::from_options(proxy.url.as_deref(), proxy.none, |k| std::env::var(k).ok())
            .map_err(|e| jet_relay::Error::Config(e.to_string()))?;
    if tls.insecure {
        eprintln!(
            "jet-relay: WARNING: --insecure: the relay's TLS certificate is NOT verified; \
             anyone on the path can read and change this connection. Use it for tests only."
        );
    }
    Ok(Arc::new(
        Connector::new(TlsOptions {
            ca_file: tls.ca.clone(),
            insecure: tls.insecure,
        })
        .with_proxies(proxies),
    ))
}

/// Where the stream goes; `--listen` takes its local connection now, before
/// the request is sent, after checking that the `relay` (when there is one
/// already: a negotiation learns its relays later) can be reached.
fn local(peer: &PeerOptions, relay: Option<(&Connector, &CandidateUrl)>) -> Result<Local> {
    Ok(match &peer.local {
        LocalSide::Stdio => Local::Stdio,
        LocalSide::Forward(target) => Local::Forward(target.clone()),
        LocalSide::Listen(addr) => Local::Accepted(match relay {
            Some((connector, url)) => listen_once_reaching(connector, url, addr)?,
            None => listen_once(addr)?,
        }),
    })
}

fn signals(signals: &Signals, lines: usize, timeout: Duration) -> Result<(SignalIn, SignalOut)> {
    let input = SignalIn::open(&signals.input, lines)?;
    let output = SignalOut::open(&signals.output, timeout)?;
    Ok((input, output))
}

/// Printed once the losing candidates are closed.
fn announce(selection: &negotiate::Selection) {
    eprintln!(
        "jet-relay: selected candidate {} {}",
        selection.candidate.id, selection.candidate.url
    );
}
