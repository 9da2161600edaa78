//! `accept --jmux` and `connect --jmux`: the tunnels that stay up, on `jet_relay::peer::tunnels`.

use crate::cli::args::{AcceptArgs, ConnectArgs, Ids, JmuxClient, JmuxServer, Rest};
use crate::cli::peer::api_key;
use jet_relay::peer::tunnels::{self, Allowed, Client, Notify, Rendezvous};
use jet_relay::peer::Connector;
use jet_relay::{Error, Result};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

/// Lines for the user (and the scripts that wait for them) go on stderr.
fn notify() -> Notify {
    Arc::new(|line: &str| eprintln!("jet-relay: {line}"))
}

fn rendezvous(
    connector: Arc<Connector>,
    url: &jet_relay::wire::CandidateUrl,
    ids: Ids,
    rest: &Rest,
) -> Result<Rendezvous> {
    Ok(Rendezvous {
        connector,
        url: url.clone(),
        association: ids.association,
        candidate: ids.candidate,
        api: rest.api.clone(),
        api_key: api_key(rest.api_key.as_ref())?,
    })
}

/// `accept --jmux`: serves channels for ever; returns only for an error no
/// wait will fix (wrong key, bad configuration).
pub fn accept(
    args: &AcceptArgs,
    jmux: &JmuxServer,
    ids: Ids,
    connector: Arc<Connector>,
) -> Result<()> {
    let rendezvous = rendezvous(connector, &args.url, ids, &args.rest)?;
    if jmux.allow_any {
        eprintln!(
            "jet-relay: WARNING: --allow-any: the other peer may open connections to ANY \
             address this machine reaches; it is an open proxy into this network."
        );
    }
    let notify = notify();
    let allowed = Allowed {
        destinations: jmux.allow.clone(),
        any: jmux.allow_any,
    };
    tunnels::serve(&rendezvous, allowed.policy(Arc::clone(&notify)), &notify)
}

/// `connect --jmux`: opens the tunnel, then binds every listener, prints
/// `listening tcp://ADDR` for each on stdout (the `--listen`s in order, then
/// the `--socks5`s) and serves them for ever.
pub fn connect(
    args: &ConnectArgs,
    jmux: &JmuxClient,
    ids: Ids,
    connector: Arc<Connector>,
) -> Result<()> {
    let rendezvous = rendezvous(connector, &args.url, ids, &args.rest)?;
    let client = Client::connect(rendezvous, notify())?;
    let mut listeners = Vec::new();
    for (addr, target) in &jmux.listen {
        listeners.push((bind(addr)?, Some(format!("tcp://{target}"))));
    }
    for addr in &jmux.socks5 {
        listeners.push((bind(addr)?, None));
    }
    let mut threads = Vec::new();
    for (listener, destination) in listeners {
        let client = Arc::clone(&client);
        let spawned = thread::Builder::new()
            .name("jmux-listener".into())
            .spawn(move || match destination {
                Some(destination) => tunnels::serve_forward(listener, destination, client),
                None => tunnels::serve_socks(listener, client),
            })
            .map_err(|e| Error::io("starting a listener thread", e))?;
        threads.push(spawned);
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// Binds a local listener and prints its `listening tcp://ADDR` line.
fn bind(addr: &str) -> Result<TcpListener> {
    jet_relay::peer::bridge::bind_announced(addr)
}
