//! The option groups several subcommands share: the peer's stream and TLS
//! options, proxies, the REST API, signaling.

use super::*;

/// `--forward`, `--listen` and the TLS options, shared by the bridging commands.
#[derive(Default)]
pub(super) struct PeerParser {
    pub(super) forward: Option<String>,
    /// Repeatable only with `--jmux`, which takes the list first.
    pub(super) listen: Vec<String>,
    pub(super) tls: Tls,
    pub(super) proxy: ProxyChoice,
}

impl PeerParser {
    /// Takes one of the shared options, or stops: help, or an unknown option.
    pub(super) fn option(&mut self, option: &str, parser: &mut lexopt::Parser) -> Parsed<()> {
        match option {
            "--forward" => self.forward = Some(string(parser.value()?)?),
            "--listen" => self.listen.push(string(parser.value()?)?),
            other => {
                if !self.tls.option(other, parser)? && !self.proxy.option(other, parser)? {
                    return Err(help_or_unknown(other));
                }
            }
        }
        Ok(())
    }

    pub(super) fn finish(mut self) -> Parsed<PeerOptions> {
        if self.listen.len() > 1 {
            return bad("--listen may repeat only with --jmux");
        }
        let listen = self.listen.pop();
        if let Some(text) = listen.as_deref().filter(|t| t.contains('=')) {
            return bad(format!(
                "--listen {text:?}: ADDR=HOST:PORT is the JMUX form: add --jmux"
            ));
        }
        let local = match (self.forward, listen) {
            (Some(_), Some(_)) => return bad("--forward and --listen cannot be used together"),
            (Some(target), None) => LocalSide::Forward(target),
            (None, Some(addr)) => LocalSide::Listen(addr),
            (None, None) => LocalSide::Stdio,
        };
        Ok(PeerOptions {
            local,
            tls: self.tls,
            proxy: self.proxy,
        })
    }
}

impl ProxyChoice {
    /// Takes `--proxy URL` or `--no-proxy`; false for any other argument.
    pub(super) fn option(&mut self, option: &str, parser: &mut lexopt::Parser) -> Parsed<bool> {
        match option {
            "--proxy" => {
                let text = string(parser.value()?)?;
                if let Err(e) = jet_relay::peer::proxy::Proxy::parse(&text) {
                    return bad(format!("--proxy: {e}"));
                }
                self.url = Some(text);
            }
            "--no-proxy" => self.none = true,
            _ => return Ok(false),
        }
        if self.url.is_some() && self.none {
            return bad("--proxy and --no-proxy contradict each other");
        }
        Ok(true)
    }
}

impl Rest {
    /// Takes `--api URL` or `--api-key KEY`; false for any other argument.
    pub(super) fn option(&mut self, option: &str, parser: &mut lexopt::Parser) -> Parsed<bool> {
        match option {
            "--api" => {
                let text = string(parser.value()?)?;
                if !(text.starts_with("http://") || text.starts_with("https://")) {
                    return bad(format!(
                        "--api {text:?}: the REST base is http://HOST:PORT or https://..."
                    ));
                }
                self.api = Some(text);
            }
            "--api-key" => self.api_key = Some(Secret(string(parser.value()?)?)),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// A `HOST:PORT` option value (JMUX destinations).
pub(super) fn host_port(option: &str, value: OsString) -> Parsed<String> {
    host_port_text(option, &string(value)?)
}

pub(super) fn host_port_text(option: &str, text: &str) -> Parsed<String> {
    let text = text.strip_prefix("tcp://").unwrap_or(text);
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(text.to_owned())
        }
        _ => bad(format!("{option} {text:?}: expected HOST:PORT")),
    }
}

impl Tls {
    /// Takes `--ca FILE` or `--insecure`; false for any other argument.
    pub(super) fn option(&mut self, option: &str, parser: &mut lexopt::Parser) -> Parsed<bool> {
        match option {
            "--ca" => self.ca = Some(PathBuf::from(parser.value()?)),
            "--insecure" => self.insecure = true,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `--signal-in`, `--signal-out` and `--timeout`, shared by offer and answer.
pub(super) struct SignalParser {
    pub(super) input: Option<String>,
    pub(super) output: Option<String>,
    pub(super) timeout: Duration,
}

impl Default for SignalParser {
    fn default() -> SignalParser {
        SignalParser {
            input: None,
            output: None,
            timeout: negotiate::NEGOTIATION_TIMEOUT,
        }
    }
}

impl SignalParser {
    /// Takes one of its options; false for any other argument.
    pub(super) fn option(&mut self, option: &str, parser: &mut lexopt::Parser) -> Parsed<bool> {
        match option {
            "--signal-in" => self.input = Some(string(parser.value()?)?),
            "--signal-out" => self.output = Some(string(parser.value()?)?),
            "--timeout" => self.timeout = seconds(&string(parser.value()?)?)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(super) fn finish(&self) -> Parsed<Signals> {
        match (&self.input, &self.output) {
            (Some(input), Some(output)) => Ok(Signals {
                input: input.clone(),
                output: output.clone(),
            }),
            _ => bad("needs --signal-in PATH and --signal-out PATH (- for stdio)"),
        }
    }
}
