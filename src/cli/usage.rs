//! The usage texts: one per subcommand, and the overview `jet-relay --help` prints.

/// What a usage text is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// `jet-relay --help`: the relay and a list of the subcommands.
    Overview,
    /// `jet-relay relay --help`: the relay alone.
    Relay,
    /// `accept`.
    Accept,
    /// `connect`.
    Connect,
    /// `test`.
    Test,
    /// `offer`.
    Offer,
    /// `answer`.
    Answer,
}

impl Topic {
    /// The topic of a subcommand name; `None` for anything else.
    pub fn from_subcommand(name: &str) -> Option<Topic> {
        Some(match name {
            "relay" => Topic::Relay,
            "accept" => Topic::Accept,
            "connect" => Topic::Connect,
            "test" => Topic::Test,
            "offer" => Topic::Offer,
            "answer" => Topic::Answer,
            _ => return None,
        })
    }

    /// The subcommand's name; `None` for the overview.
    pub fn subcommand(self) -> Option<&'static str> {
        Some(match self {
            Topic::Overview => return None,
            Topic::Relay => "relay",
            Topic::Accept => "accept",
            Topic::Connect => "connect",
            Topic::Test => "test",
            Topic::Offer => "offer",
            Topic::Answer => "answer",
        })
    }

    /// The one line printed under a usage error.
    pub fn hint(self) -> String {
        match self.subcommand() {
            Some(name) => format!("see 'jet-relay {name} --help'"),
            None => "see 'jet-relay --help'".to_owned(),
        }
    }

    /// The full usage text.
    pub fn text(self) -> String {
        match self {
            Topic::Overview => format!("{HEADER}\n{RELAY}\n{SUBCOMMANDS}\n{ENVIRONMENT}"),
            Topic::Relay => format!("{RELAY}\n{ENVIRONMENT}"),
            Topic::Accept => format!(
                "{ACCEPT}\n{ACCEPT_JMUX}\n{REST}\n{PEER_OPTIONS}{PROXY}\n{PEER_ENVIRONMENT}{API_KEY_ENVIRONMENT}"
            ),
            Topic::Connect => format!(
                "{CONNECT}\n{CONNECT_JMUX}\n{REST}\n{PEER_OPTIONS}{PROXY}\n{PEER_ENVIRONMENT}{API_KEY_ENVIRONMENT}"
            ),
            Topic::Test => format!("{TEST}{PROXY}\n{PEER_ENVIRONMENT}"),
            Topic::Offer => {
                format!("{OFFER}\n{SIGNALING}\n{PEER_OPTIONS}{PROXY}{TIMEOUT}\n{PEER_ENVIRONMENT}")
            }
            Topic::Answer => format!(
                "{ANSWER}\n{SIGNALING}\n{PEER_OPTIONS}{PROXY}{TIMEOUT}\n{PEER_ENVIRONMENT}{API_KEY_ENVIRONMENT}"
            ),
        }
    }
}

const HEADER: &str = "\
jet-relay: a relay for the JET rendezvous protocol, and its peers
";

const RELAY: &str = "\
Usage: jet-relay [--config PATH] [--listen URL]...
       jet-relay relay [--config PATH] [--listen URL]...

Run the relay. The configuration is PATH, else ./relay.toml when it exists,
else the built-in defaults.

Options:
  --config PATH   the configuration file (relay.toml)
  --listen URL    a listener URL, tcp://HOST:PORT or tls://HOST:PORT (port 0
                  for any); repeatable; replaces the configured listeners.
                  One line per listener, `listening tcp://ADDRESS`, is
                  printed on stdout once bound
  -h, --help      print this text
  -V, --version   print the version
";

const SUBCOMMANDS: &str = "\
Peer subcommands (`jet-relay SUBCOMMAND --help` or `jet-relay help SUBCOMMAND`
for each):
  accept    the server peer on one candidate: park, then bridge the stream
  connect   the client peer on one candidate: pair, then bridge the stream
  test      check whether a candidate is usable (exit 0) or not (exit 1)
  answer    the server peer of a negotiation (signaling messages in and out)
  offer     the client peer of a negotiation

Exit status: 0 on success, 1 when the work failed (the relay refused, a
connection failed), 2 for a wrong command line or configuration.
";

const ENVIRONMENT: &str = "\
Environment:
  JET_RELAY_LOG   log level (off, error, warn, info, debug); overrides the
                  file's log_level. Peers default to warn.
";

const PEER_ENVIRONMENT: &str = "\
Environment:
  JET_RELAY_LOG   log level (off, error, warn, info, debug; default warn)
  HTTPS_PROXY, ALL_PROXY, http_proxy, NO_PROXY
                  the proxy for tls/wss, for tcp, for ws; hosts to reach
                  directly (as curl reads them); --proxy, --no-proxy win
";

const API_KEY_ENVIRONMENT: &str = "\
  JET_API_KEY     the key sent to the REST API (--gather, --api)
                  (Authorization: Bearer); --api-key overrides it. Prefer the
                  variable: command lines are visible to every local user.
";

const ACCEPT: &str = "\
Usage: jet-relay accept URL ASSOCIATION CANDIDATE [PEER OPTIONS]
       jet-relay accept --v1 URL [PEER OPTIONS]

The server peer on one candidate of a relay. URL is tcp://HOST:PORT,
tls://HOST:PORT, ws://HOST[:PORT] or wss://HOST[:PORT] (no scheme: tcp);
ASSOCIATION and CANDIDATE are UUIDs. Once the relay answers 200 (101 for
WebSocket), `jet-relay: accept ASSOCIATION CANDIDATE: 200` is printed on
stderr: from then on the other peer may connect, and the relayed stream is
bridged to stdin/stdout (or to --forward, --listen).

  --v1   version 1: the relay names the association; stderr gets
         `jet-relay: accept association=ID instance=NAME timeout=SECONDS: 200`
         (tcp:// and tls:// only)
";

const CONNECT: &str = "\
Usage: jet-relay connect URL ASSOCIATION CANDIDATE [PEER OPTIONS]
       jet-relay connect --v1 --association ID URL [PEER OPTIONS]

The client peer on one candidate of a relay (URL as for accept). Once the
relay paired it with the accept peer, `jet-relay: connect ASSOCIATION
CANDIDATE: 200` is printed on stderr and the relayed stream is bridged to
stdin/stdout (or to --forward, --listen).

  --v1               version 1 (tcp:// and tls:// only)
  --association ID   with --v1: the association the accept peer was given
";

const ACCEPT_JMUX: &str = "\
A tunnel that stays up (JMUX over the relayed stream):
  --jmux                serve channels: each one the other peer opens is
                        connected to its HOST:PORT if allowed; when the stream
                        ends, park again (0.2 s doubling to 30 s, with jitter)
  --forward HOST:PORT   with --jmux: allow this destination
  --allow HOST:PORT     allow this destination too; repeatable. Anything else
                        is refused (reason 2, not allowed) and printed
  --allow-any           DANGEROUS: allow every destination this machine can
                        reach; the other peer gets an open proxy into it
";

const CONNECT_JMUX: &str = "\
A tunnel that stays up (JMUX over the relayed stream):
  --jmux                    one stream, any number of local connections; after
                            the stream is lost, the next local connection
                            reconnects (same association and candidate)
  --listen ADDR=HOST:PORT   with --jmux: each connection accepted on ADDR opens
                            a channel to HOST:PORT; repeatable; each bound
                            address is printed as `listening tcp://ADDRESS`
  --socks5 ADDR             a SOCKS5 listener: one channel per CONNECT;
                            repeatable
";

const REST: &str = "\
Associations created through the REST API (a relay with an api_key):
  --api URL       http://HOST:PORT or https://...: create the association
                  (POST /jet/association/ID; 409, exists, is fine) before
                  each stream
  --api-key KEY   the key sent to the REST API (prefer JET_API_KEY, below)
";

const PROXY: &str = "\
  --proxy URL           reach the relay through http://[USER:PASS@]HOST:PORT
                        (CONNECT) or socks5://[USER:PASS@]HOST:PORT
  --no-proxy            connect directly, whatever the environment says
";

const TEST: &str = "\
Usage: jet-relay test URL ASSOCIATION CANDIDATE [--ca FILE] [--insecure]
                      [--proxy URL | --no-proxy]

Test a candidate (URL as for accept): exit 0 when it is usable, 1 (with the
reason on stderr) when it is not, 2 for a wrong command line.

  --ca FILE    trust only the certificates in FILE (PEM) for tls:// and wss://
               (default: the system roots)
  --insecure   do not verify the relay's certificate (tests only)
";

const OFFER: &str = "\
Usage: jet-relay offer --signal-in PATH --signal-out PATH [--association ID]
                       [--transports LIST] [PEER OPTIONS] [--timeout SECONDS]

The client peer of a negotiation: writes the offer (a fresh association id
unless --association ID is given), tests every candidate of the answer in
parallel, selects the first usable one (a host candidate beats a relay one
that worked less than 250 ms before it), closes the others and writes the
complete message. Then prints `jet-relay: selected candidate ID URL` on
stderr and bridges the selected stream.

  --transports LIST   offer only these candidate types: tcp,tls,ws,wss
";

const ANSWER: &str = "\
Usage: jet-relay answer --signal-in PATH --signal-out PATH [--relay URL]...
                        [--gather URL]... [--api-key KEY] [--host-listen ADDR]
                        [--no-host-candidates] [PEER OPTIONS]
                        [--timeout SECONDS]

The server peer of a negotiation (draft 0.2 section 2.2.3): reads the offer,
accepts on one candidate per --relay URL and on the candidates the relays'
REST APIs gather, listens for direct connections, writes the answer, then
keeps the candidate the complete message selects and closes the others.
Then prints `jet-relay: selected candidate ID URL` on stderr and bridges the
selected stream.

  --relay URL            accept on this relay listener (a candidate URL as
                         for accept), with a made-up candidate id; repeatable
  --gather URL           http://HOST:PORT or https://HOST:PORT: gather the
                         candidates of that relay (POST /jet/gather/ID);
                         repeatable
  --api-key KEY          the key a relay with an api_key wants for gathering
                         (prefer JET_API_KEY, below)
  --host-listen ADDR     the local address direct connections are accepted
                         on (host candidates; default 0.0.0.0:0)
  --no-host-candidates   offer no host candidate: they disclose local
                         addresses
";

const SIGNALING: &str = "\
Signaling:
  --signal-in PATH    where the other peer's messages are read
  --signal-out PATH   where ours are written
  Messages are JSON lines; PATH may be a file, a FIFO, or - for stdin/stdout.
";

const PEER_OPTIONS: &str = "\
Peer options:
  --forward HOST:PORT   bridge the stream to a new connection to HOST:PORT
  --listen ADDR         a LOCAL address (HOST:PORT, not a relay URL): accept
                        one connection there first (its bound address is
                        printed on stdout as `listening tcp://ADDRESS`), then
                        contact the relay and bridge the stream to it
  --ca FILE             trust only the certificates in FILE (PEM) for tls://
                        and wss:// (default: the system roots)
  --insecure            do not verify the relay's certificate (tests only)
  -h, --help            print this text
";

const TIMEOUT: &str = "\
  --timeout SECONDS     how long to wait for each signaling message
                        (default 60)
";

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Topic; 7] = [
        Topic::Overview,
        Topic::Relay,
        Topic::Accept,
        Topic::Connect,
        Topic::Test,
        Topic::Offer,
        Topic::Answer,
    ];

    #[test]
    fn every_subcommand_names_itself_and_its_usage() {
        for topic in ALL {
            let text = topic.text();
            match topic.subcommand() {
                Some(name) => {
                    assert_eq!(Topic::from_subcommand(name), Some(topic));
                    assert!(text.contains(&format!("jet-relay {name} ")), "{text}");
                    assert_eq!(topic.hint(), format!("see 'jet-relay {name} --help'"));
                }
                None => assert!(text.contains("Peer subcommands")),
            }
            // Every line fits an 80-column terminal.
            for line in text.lines() {
                assert!(line.chars().count() <= 80, "{line:?}");
            }
        }
    }
}
