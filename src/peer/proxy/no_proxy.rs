//! `NO_PROXY`: the destinations that are reached directly even when a proxy is set.

use std::net::IpAddr;

/// A parsed `NO_PROXY` list (curl's rules, see [`NoProxy::parse`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    everything: bool,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A host name and every name under it.
    Domain { name: String, port: Option<u16> },
    /// One IP address, compared only with hosts written as addresses (no DNS).
    Ip { ip: IpAddr, port: Option<u16> },
    /// An address block in CIDR notation.
    Net { net: IpAddr, prefix: u8 },
}

impl NoProxy {
    /// Parses a comma-separated list. `*` alone matches every host. A name
    /// (`example.com`, `.example.com` or `*.example.com`: all the same) matches
    /// itself and every name under it, case-insensitively. An IP address
    /// (`10.1.2.3`, `::1`, `[::1]`) matches that address written as a literal;
    /// `10.0.0.0/8` and `fd00::/8` match a block. `NAME:PORT`, `IPV4:PORT` and
    /// `[IPV6]:PORT` match only that port. Entries that fit none of these are
    /// skipped, as curl does, so one typo does not disable the whole list.
    pub fn parse(list: &str) -> NoProxy {
        let mut parsed = NoProxy::default();
        for raw in list.split(',') {
            let entry = raw.trim().to_ascii_lowercase();
            if entry == "*" {
                parsed.everything = true;
            } else if let Some(entry) = parse_entry(&entry) {
                parsed.entries.push(entry);
            }
        }
        parsed
    }

    /// True when `host:port` is to be reached without a proxy. `host` may be a
    /// name, an IP address, or an IPv6 address in brackets.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.everything {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host);
        let ip = bare.parse::<IpAddr>().ok();
        self.entries.iter().any(|entry| match (entry, ip) {
            (Entry::Ip { ip: want, port: p }, Some(ip)) => *want == ip && port_ok(*p, port),
            (Entry::Net { net, prefix }, Some(ip)) => in_block(ip, *net, *prefix),
            (Entry::Domain { name, port: p }, None) => {
                port_ok(*p, port)
                    && (bare == name
                        || (bare.ends_with(name.as_str())
                            && bare[..bare.len() - name.len()].ends_with('.')))
            }
            _ => false,
        })
    }
}

fn port_ok(want: Option<u16>, port: u16) -> bool {
    want.is_none_or(|w| w == port)
}

fn parse_entry(entry: &str) -> Option<Entry> {
    if entry.is_empty() {
        return None;
    }
    if let Some((net, bits)) = entry.split_once('/') {
        let net = unbracket(net).parse::<IpAddr>().ok()?;
        let prefix = bits.parse::<u8>().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        return (prefix <= max).then_some(Entry::Net { net, prefix });
    }
    if let Some(inner) = entry.strip_prefix('[') {
        let (addr, after) = inner.split_once(']')?;
        let ip = addr.parse::<IpAddr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':')?)?),
        };
        return Some(Entry::Ip { ip, port });
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(Entry::Ip { ip, port: None });
    }
    let (name, port) = match entry.rsplit_once(':') {
        Some((name, port)) => (name, Some(parse_port(port)?)),
        None => (entry, None),
    };
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(Entry::Ip { ip, port });
    }
    let name = name
        .strip_prefix("*.")
        .or_else(|| name.strip_prefix('.'))
        .unwrap_or(name)
        .trim_end_matches('.');
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    valid.then(|| Entry::Domain {
        name: name.to_owned(),
        port,
    })
}

fn unbracket(text: &str) -> &str {
    text.strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text)
}

fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&p| p != 0)
}

/// True when `ip` lies in `net/prefix`; families never match each other.
fn in_block(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(list: &str, host: &str, port: u16, direct: bool) {
        assert_eq!(
            NoProxy::parse(list).matches(host, port),
            direct,
            "NO_PROXY={list:?} for {host}:{port}"
        );
    }

    #[test]
    fn no_proxy_matching_table() {
        // Empty and "*".
        check("", "relay.example", 443, false);
        check("*", "relay.example", 443, true);
        check(" * ", "10.0.0.1", 1, true);
        check("other.example, *", "relay.example", 443, true);
        // Domain suffixes, with or without a leading dot or "*.".
        check("example.com", "example.com", 443, true);
        check("example.com", "relay.example.com", 443, true);
        check(".example.com", "example.com", 443, true);
        check(".example.com", "a.b.example.com", 443, true);
        check("*.example.com", "relay.example.com", 443, true);
        check("example.com", "badexample.com", 443, false);
        check("example.com", "example.com.evil", 443, false);
        check("Example.COM", "RELAY.example.com.", 443, true);
        check("a.example, b.example ,c.example", "x.b.example", 443, true);
        check("a.example,,c.example", "b.example", 443, false);
        // Ports.
        check("example.com:8443", "relay.example.com", 8443, true);
        check("example.com:8443", "relay.example.com", 443, false);
        check("example.com:0", "example.com", 443, false);
        check("example.com:http", "example.com", 80, false);
        // IP addresses are compared as literals, not resolved.
        check("127.0.0.1", "127.0.0.1", 9000, true);
        check("127.0.0.1", "127.0.0.2", 9000, false);
        check("127.0.0.1", "localhost", 9000, false);
        check("127.0.0.1:9000", "127.0.0.1", 9000, true);
        check("127.0.0.1:9000", "127.0.0.1", 9001, false);
        check("::1", "::1", 443, true);
        check("::1", "[::1]", 443, true);
        check("[::1]", "::1", 443, true);
        check("[::1]:443", "::1", 443, true);
        check("[::1]:443", "::1", 80, false);
        check("2001:db8::1", "2001:DB8:0::1", 443, true);
        // A name never matches an address, nor an address a name.
        check("10.0.0.1", "10.0.0.1.example", 443, false);
        check("example", "10.0.0.1", 443, false);
        // CIDR blocks.
        check("10.0.0.0/8", "10.200.3.4", 443, true);
        check("10.0.0.0/8", "11.0.0.1", 443, false);
        check("192.168.1.0/24", "192.168.1.77", 443, true);
        check("192.168.1.0/24", "192.168.2.1", 443, false);
        check("0.0.0.0/0", "203.0.113.9", 443, true);
        check("0.0.0.0/0", "::1", 443, false);
        check("fd00::/8", "fd12:3456::1", 443, true);
        check("fd00::/8", "fe80::1", 443, false);
        check("[fd00::]/8", "fd00::9", 443, true);
        check("10.0.0.0/33", "10.0.0.1", 443, false);
        check("10.0.0.1/32", "10.0.0.1", 443, true);
        // Garbage entries are skipped, not fatal.
        check("exa mple.com, relay.example", "relay.example", 443, true);
        check("[::1, relay.example", "relay.example", 443, true);
        check(".", "relay.example", 443, false);
    }
}
