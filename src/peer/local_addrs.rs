//! The machine's own addresses, for host candidates on a wildcard listener (Linux: /proc).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
