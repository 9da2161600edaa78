//! IP address prefixes (`10.0.0.0/8`, `2001:db8::/32`) and sets of them, for exemptions and trust lists.

use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The longest IPv4 prefix.
pub const MAX_V4_PREFIX: u8 = 32;
/// The longest IPv6 prefix.
pub const MAX_V6_PREFIX: u8 = 128;

/// An IPv4 or IPv6 prefix. Parsed from `addr/len` or a bare address (a host
/// prefix, /32 or /128). Host bits set below the prefix (`10.1.2.3/8`) are
/// accepted and cleared, so `10.1.2.3/8` is `10.0.0.0/8`: an operator who
/// writes a host inside the network they mean gets that network, and
/// [`Display`](fmt::Display) shows what is actually matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a string is not a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    BadAddress(String),
    /// The part after `/` is not a decimal number.
    BadPrefixLength(String),
    /// The prefix length is longer than the address (over 32 or 128).
    PrefixTooLong {
        /// The length given.
        prefix_len: u32,
        /// The longest for the family.
        max: u8,
    },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadAddress(a) => write!(f, "{a:?} is not an IPv4 or IPv6 address"),
            Self::BadPrefixLength(p) => write!(f, "prefix length {p:?} is not a number"),
            Self::PrefixTooLong { prefix_len, max } => {
                write!(f, "prefix length /{prefix_len} is longer than /{max}")
            }
        }
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The prefix of `prefix_len` bits of `addr`, host bits cleared.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Cidr, CidrError> {
        let max = max_prefix(addr);
        if prefix_len > max {
            return Err(CidrError::PrefixTooLong {
                prefix_len: u32::from(prefix_len),
                max,
            });
        }
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & v4_mask(prefix_len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & v6_mask(prefix_len))),
        };
        Ok(Cidr {
            network,
            prefix_len,
        })
    }

    /// The first address of the prefix.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The number of leading bits that must match.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True when `ip` is in the prefix, comparing like with like only: use
    /// [`CidrSet::contains`] to also match IPv4-mapped IPv6 addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                u32::from(a) & v4_mask(self.prefix_len) == u32::from(n)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                u128::from(a) & v6_mask(self.prefix_len) == u128::from(n)
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => MAX_V4_PREFIX,
        IpAddr::V6(_) => MAX_V6_PREFIX,
    }
}

/// `checked_shl` because shifting a u32 by 32 (a /0 prefix) overflows.
fn v4_mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(u32::from(MAX_V4_PREFIX.saturating_sub(prefix_len)))
        .unwrap_or(0)
}

fn v6_mask(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(u32::from(MAX_V6_PREFIX.saturating_sub(prefix_len)))
        .unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError::BadAddress(addr.to_string()))?;
        let Some(len) = len else {
            return Cidr::new(addr, max_prefix(addr));
        };
        // Digits only: `u32::from_str` would take "+8".
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CidrError::BadPrefixLength(len.to_string()));
        }
        let max = max_prefix(addr);
        let too_long = |prefix_len| CidrError::PrefixTooLong { prefix_len, max };
        // All digits, so a parse failure can only be an overflow.
        let prefix_len: u32 = len.parse().map_err(|_| too_long(u32::MAX))?;
        let short = u8::try_from(prefix_len).map_err(|_| too_long(prefix_len))?;
        Cidr::new(addr, short)
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    fn try_from(s: String) -> Result<Cidr, CidrError> {
        s.parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// A list of prefixes; an address is in the set when any prefix holds it.
/// Lookups are linear: exemption and trust lists are a handful of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "Vec<Cidr>")]
pub struct CidrSet {
    cidrs: Vec<Cidr>,
}

impl CidrSet {
    /// A set of these prefixes.
    pub fn new(cidrs: Vec<Cidr>) -> CidrSet {
        CidrSet { cidrs }
    }

    /// True when the set has no prefix (contains nothing).
    pub fn is_empty(&self) -> bool {
        self.cidrs.is_empty()
    }

    /// The prefixes, in the order given.
    pub fn cidrs(&self) -> &[Cidr] {
        &self.cidrs
    }

    /// True when a prefix holds `ip`. An IPv4-mapped IPv6 address
    /// (`::ffff:10.1.2.3`, what a dual-stack socket reports for an IPv4 peer)
    /// also matches IPv4 prefixes, and an IPv4 address matches IPv6 prefixes
    /// of its mapped form, so one entry covers a client whichever socket
    /// family it arrived on.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let other = match ip {
            IpAddr::V4(a) => Some(IpAddr::V6(a.to_ipv6_mapped())),
            IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4),
        };
        self.cidrs
            .iter()
            .any(|c| c.contains(ip) || other.is_some_and(|o| c.contains(o)))
    }
}

impl From<Vec<Cidr>> for CidrSet {
    fn from(cidrs: Vec<Cidr>) -> CidrSet {
        CidrSet::new(cidrs)
    }
}

impl FromIterator<Cidr> for CidrSet {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> CidrSet {
        CidrSet::new(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn set(cidrs: &[&str]) -> CidrSet {
        cidrs
            .iter()
            .map(|c| c.parse().expect("test prefix"))
            .collect()
    }

    #[track_caller]
    fn check(input: &str, expected: Result<&str, CidrError>) {
        let got = input.parse::<Cidr>().map(|c| c.to_string());
        assert_eq!(got, expected.map(str::to_string), "input {input:?}");
    }

    #[test]
    fn parses_prefixes_and_bare_addresses() {
        check("10.0.0.0/8", Ok("10.0.0.0/8"));
        check("0.0.0.0/0", Ok("0.0.0.0/0"));
        check("192.0.2.7/32", Ok("192.0.2.7/32"));
        check("192.0.2.7", Ok("192.0.2.7/32"));
        check("::1/128", Ok("::1/128"));
        check("::1", Ok("::1/128"));
        check("::/0", Ok("::/0"));
        check("2001:db8::/32", Ok("2001:db8::/32"));
        check("::ffff:10.0.0.0/104", Ok("::ffff:10.0.0.0/104"));
    }

    #[test]
    fn host_bits_are_cleared() {
        check("10.1.2.3/8", Ok("10.0.0.0/8"));
        check("192.0.2.255/25", Ok("192.0.2.128/25"));
        check("2001:db8:1:2:3:4:5:6/64", Ok("2001:db8:1:2::/64"));
        check("2001:db8::1/0", Ok("::/0"));
    }

    #[test]
    fn refuses_bad_addresses_and_lengths() {
        let bad_addr = |a: &str| Err(CidrError::BadAddress(a.to_string()));
        let bad_len = |l: &str| Err(CidrError::BadPrefixLength(l.to_string()));
        check("", bad_addr(""));
        check("/8", bad_addr(""));
        check("10.0.0/8", bad_addr("10.0.0"));
        check("example.com", bad_addr("example.com"));
        check(" 10.0.0.0/8", bad_addr(" 10.0.0.0"));
        check("fe80::1%eth0/64", bad_addr("fe80::1%eth0"));
        check("10.0.0.0/", bad_len(""));
        check("10.0.0.0/+8", bad_len("+8"));
        check("10.0.0.0/-1", bad_len("-1"));
        check("10.0.0.0/8 ", bad_len("8 "));
        check("10.0.0.0/8/8", bad_len("8/8"));
        let too_long = |prefix_len, max| Err(CidrError::PrefixTooLong { prefix_len, max });
        check("10.0.0.0/33", too_long(33, 32));
        check("::/129", too_long(129, 128));
        check("::/256", too_long(256, 128));
        check("::/99999999999", too_long(u32::MAX, 128));
        assert_eq!(
            Cidr::new(ip("::"), 200),
            Err(CidrError::PrefixTooLong {
                prefix_len: 200,
                max: 128
            })
        );
    }

    #[test]
    fn a_prefix_contains_its_addresses_only() {
        let net: Cidr = "192.0.2.128/25".parse().expect("prefix");
        assert!(net.contains(ip("192.0.2.128")));
        assert!(net.contains(ip("192.0.2.255")));
        assert!(!net.contains(ip("192.0.2.127")));
        assert!(
            !net.contains(ip("::ffff:192.0.2.200")),
            "Cidr alone is family-strict"
        );
        let all: Cidr = "::/0".parse().expect("prefix");
        assert!(all.contains(ip("2001:db8::1")));
        assert!(!all.contains(ip("10.0.0.1")));
        let v6: Cidr = "2001:db8:1::/48".parse().expect("prefix");
        assert!(v6.contains(ip("2001:db8:1:ffff::1")));
        assert!(!v6.contains(ip("2001:db8:2::1")));
    }

    #[test]
    fn a_set_matches_ipv4_mapped_addresses_both_ways() {
        let s = set(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(s.contains(ip("10.9.8.7")));
        assert!(s.contains(ip("::ffff:10.9.8.7")));
        assert!(!s.contains(ip("::ffff:11.0.0.1")));
        assert!(s.contains(ip("2001:db8::5")));
        assert!(!s.contains(ip("2001:db9::5")));
        // IPv4-compatible (deprecated) addresses are not mapped ones: ::10.9.8.7
        // must not be taken for 10.9.8.7.
        assert!(!s.contains(ip("::10.9.8.7")));
        let mapped = set(&["::ffff:192.0.2.0/120"]);
        assert!(mapped.contains(ip("192.0.2.9")));
        assert!(!mapped.contains(ip("192.0.3.9")));
        assert!(!CidrSet::default().contains(ip("127.0.0.1")));
        assert!(CidrSet::default().is_empty());
    }

    #[test]
    fn deserializes_from_config_strings() {
        #[derive(Deserialize)]
        struct File {
            exempt: CidrSet,
            one: Cidr,
        }
        let file: File =
            toml::from_str("exempt = [\"10.0.0.0/8\", \"::1\"]\none = \"192.0.2.1/24\"")
                .expect("valid file");
        assert_eq!(file.exempt, set(&["10.0.0.0/8", "::1/128"]));
        assert_eq!(file.one.to_string(), "192.0.2.0/24");
        let err = toml::from_str::<File>("exempt = [\"10.0.0.0/40\"]\none = \"::1\"")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/40 is longer than /32"), "{err}");
    }
}
