//! Tests of the per-client limits, with a fake clock for the rate.

use super::*;
use LimitKind::{Connection, Handshake, ParkedAccept};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Limits of `n` for every kind, rate off, nothing exempt.
fn limits(n: u32) -> ClientLimits {
    ClientLimits::new(LimitsConfig {
        max_connections: n,
        max_handshakes: n,
        max_parked_accepts: n,
        rest_rate: 0,
        exempt: CidrSet::default(),
        ..LimitsConfig::default()
    })
}

/// A REST rate of `rate`/s with `burst`, capped at `max_tracked` clients.
fn rate(rate: u32, burst: u32, max_tracked: usize) -> ClientLimits {
    ClientLimits::new(LimitsConfig {
        rest_rate: rate,
        rest_burst: burst,
        max_tracked_clients: max_tracked,
        exempt: CidrSet::default(),
        ..LimitsConfig::default()
    })
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn client_keys_are_ipv4_addresses_and_ipv6_64s() {
    let key = |s| ClientKey::from(ip(s));
    assert_eq!(key("192.0.2.1"), ClientKey::V4(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
    assert_eq!(
        key("2001:db8:1:2::1"),
        key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    );
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    assert_ne!(
        key("::192.0.2.1"),
        key("192.0.2.1"),
        "IPv4-compatible is not mapped"
    );
    assert_eq!(key("2001:db8:1:2:3:4:5:6").to_string(), "2001:db8:1:2::/64");
    assert_eq!(key("::ffff:10.0.0.1").to_string(), "10.0.0.1");
}

#[test]
fn a_permit_is_released_on_drop() {
    let l = limits(4);
    let client = ip("192.0.2.1");
    let permit = l.try_acquire(Connection, client).expect("under the limit");
    assert_eq!(l.held(Connection, client), 1);
    assert_eq!(l.tracked(), (1, 0));
    drop(permit);
    assert_eq!(l.held(Connection, client), 0);
    assert_eq!(l.tracked(), (0, 0), "an idle client's entry is removed");
}

#[test]
fn the_limit_refuses_then_recovers_when_a_permit_drops() {
    let l = limits(2);
    let client = ip("192.0.2.1");
    let first = l.try_acquire(Handshake, client).expect("first");
    let _second = l.try_acquire(Handshake, client).expect("second");
    let refused = LimitExceeded {
        kind: Handshake,
        limit: 2,
    };
    assert_eq!(l.try_acquire(Handshake, client).err(), Some(refused));
    assert_eq!(
        refused.to_string(),
        "client is at its limit of 2 handshakes"
    );
    assert!(
        l.try_acquire(Handshake, ip("192.0.2.2")).is_ok(),
        "others unaffected"
    );
    drop(first);
    assert!(l.try_acquire(Handshake, client).is_ok());
}

#[test]
fn kinds_are_counted_and_refused_separately() {
    let l = limits(1);
    let client = ip("198.51.100.7");
    let _c = l.try_acquire(Connection, client).expect("connection");
    let _h = l.try_acquire(Handshake, client).expect("handshake");
    let p = l.try_acquire(ParkedAccept, client).expect("parked accept");
    for kind in LimitKind::ALL {
        assert!(l.try_acquire(kind, client).is_err(), "{kind:?}");
    }
    assert!(l.try_acquire(ParkedAccept, client).is_err());
    assert_eq!(l.stats().refused, [1, 1, 2]);
    assert_eq!(l.stats().refused_of(ParkedAccept), 2);
    drop(p);
    assert_eq!(l.tracked(), (1, 0), "entry stays while any kind is held");
    assert!(l.try_acquire(ParkedAccept, client).is_ok());
}

#[test]
fn ipv6_addresses_in_one_64_share_a_limit() {
    let l = limits(2);
    let _a = l.try_acquire(Connection, ip("2001:db8:1:2::1")).expect("a");
    let _b = l.try_acquire(Connection, ip("2001:db8:1:2::2")).expect("b");
    assert!(l
        .try_acquire(Connection, ip("2001:db8:1:2:ffff::9"))
        .is_err());
    assert!(l.try_acquire(Connection, ip("2001:db8:1:3::1")).is_ok());
}

#[test]
fn ipv4_mapped_addresses_share_the_ipv4_limit() {
    let l = limits(1);
    let _a = l.try_acquire(Connection, ip("192.0.2.1")).expect("a");
    assert!(l.try_acquire(Connection, ip("::ffff:192.0.2.1")).is_err());
}

#[test]
fn exempt_clients_always_pass_and_are_not_tracked() {
    let l = ClientLimits::new(LimitsConfig {
        max_connections: 1,
        rest_rate: 1,
        rest_burst: 1,
        exempt: ["10.0.0.0/8".parse().expect("prefix")]
            .into_iter()
            .collect(),
        ..LimitsConfig::default()
    });
    let now = Instant::now();
    let permits: Vec<Permit> = ["10.1.1.1", "::ffff:10.1.1.1", "10.1.1.1"]
        .into_iter()
        .map(|a| l.try_acquire(Connection, ip(a)).expect("exempt"))
        .collect();
    for _ in 0..10 {
        assert_eq!(l.check_rate(ip("10.1.1.1"), now), Ok(()));
    }
    assert_eq!(l.tracked(), (0, 0));
    assert_eq!(l.stats(), LimitStats::default());
    let _other = l.try_acquire(Connection, ip("11.0.0.1")).expect("first");
    assert!(
        l.try_acquire(Connection, ip("11.0.0.1")).is_err(),
        "others limited"
    );
    drop(permits);
}

#[test]
fn loopback_is_exempt_by_default() {
    let l = ClientLimits::new(LimitsConfig {
        max_connections: 1,
        ..LimitsConfig::default()
    });
    let _a = l.try_acquire(Connection, ip("127.0.0.1")).expect("a");
    let _b = l.try_acquire(Connection, ip("127.3.2.1")).expect("b");
    let _c = l.try_acquire(Connection, ip("::1")).expect("c");
    assert_eq!(l.tracked(), (0, 0));
}

#[test]
fn zero_turns_a_limit_off() {
    let l = limits(0);
    let permits: Vec<Permit> = (0..100)
        .map(|_| {
            l.try_acquire(Connection, ip("192.0.2.1"))
                .expect("no limit")
        })
        .collect();
    assert_eq!(l.tracked(), (0, 0));
    assert_eq!(l.check_rate(ip("192.0.2.1"), Instant::now()), Ok(()));
    drop(permits);
}

#[test]
fn the_token_bucket_allows_a_burst_then_refills_at_the_rate() {
    let l = rate(10, 3, 100);
    let client = ip("192.0.2.1");
    let t0 = Instant::now();
    for _ in 0..3 {
        assert_eq!(l.check_rate(client, t0), Ok(()));
    }
    assert_eq!(l.check_rate(client, t0), Err(RetryAfter(100 * MS)));
    assert_eq!(l.check_rate(client, t0 + 40 * MS), Err(RetryAfter(60 * MS)));
    assert_eq!(
        l.check_rate(client, t0 + 100 * MS),
        Ok(()),
        "one token back"
    );
    assert!(l.check_rate(client, t0 + 100 * MS).is_err());
    // Idle long enough: the bucket is full again, but holds no more than the burst.
    let later = t0 + Duration::from_secs(60);
    for _ in 0..3 {
        assert_eq!(l.check_rate(client, later), Ok(()));
    }
    assert!(l.check_rate(client, later).is_err());
    assert!(
        l.check_rate(ip("192.0.2.2"), t0).is_ok(),
        "others unaffected"
    );
    assert_eq!(l.stats().refused_rest, 4);
}

#[test]
fn a_burst_of_zero_counts_as_one() {
    let l = rate(2, 0, 100);
    let t0 = Instant::now();
    assert_eq!(l.check_rate(ip("192.0.2.1"), t0), Ok(()));
    assert_eq!(l.check_rate(ip("192.0.2.1"), t0), Err(RetryAfter(500 * MS)));
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    assert_eq!(RetryAfter(100 * MS).as_secs_ceil(), 1);
    assert_eq!(RetryAfter(Duration::from_secs(2)).as_secs_ceil(), 2);
    assert_eq!(RetryAfter(2001 * MS).as_secs_ceil(), 3);
    assert_eq!(RetryAfter(Duration::ZERO).as_secs_ceil(), 1);
}

#[test]
fn sweep_forgets_buckets_once_they_are_full() {
    let l = rate(10, 2, 100);
    let t0 = Instant::now();
    for a in ["192.0.2.1", "192.0.2.2", "2001:db8::1"] {
        assert_eq!(l.check_rate(ip(a), t0), Ok(()));
    }
    assert_eq!(l.check_rate(ip("192.0.2.1"), t0), Ok(()));
    assert_eq!(l.tracked(), (0, 3));
    assert_eq!(
        l.sweep(t0 + 99 * MS),
        0,
        "every bucket still short of a token"
    );
    assert_eq!(
        l.sweep(t0 + 100 * MS),
        2,
        "one request: full after one interval"
    );
    assert_eq!(l.tracked(), (0, 1));
    assert_eq!(l.sweep(t0 + 200 * MS), 1);
    assert_eq!(l.tracked(), (0, 0));
}

#[test]
fn tracked_clients_are_capped_and_newcomers_pass_untracked() {
    let l = ClientLimits::new(LimitsConfig {
        max_connections: 1,
        max_tracked_clients: 2,
        exempt: CidrSet::default(),
        ..LimitsConfig::default()
    });
    let a = l.try_acquire(Connection, ip("192.0.2.1")).expect("a");
    let _b = l.try_acquire(Connection, ip("192.0.2.2")).expect("b");
    let _c1 = l
        .try_acquire(Connection, ip("192.0.2.3"))
        .expect("c passes");
    let _c2 = l
        .try_acquire(Connection, ip("192.0.2.3"))
        .expect("c untracked");
    assert_eq!(l.tracked(), (2, 0));
    assert_eq!(l.stats().untracked, 2);
    assert!(
        l.try_acquire(Connection, ip("192.0.2.1")).is_err(),
        "a still limited"
    );
    drop(a);
    let _d = l
        .try_acquire(Connection, ip("192.0.2.4"))
        .expect("d tracked");
    assert!(
        l.try_acquire(Connection, ip("192.0.2.4")).is_err(),
        "room again"
    );

    let r = rate(1, 1, 2);
    let t0 = Instant::now();
    for a in ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.3"] {
        assert_eq!(r.check_rate(ip(a), t0), Ok(()));
    }
    assert_eq!(r.tracked(), (0, 2));
    assert_eq!(r.stats().untracked, 2);
}

#[test]
fn permits_from_many_threads_all_come_back() {
    let l = limits(1000);
    let clients = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "::ffff:192.0.2.1"];
    std::thread::scope(|s| {
        for c in clients {
            let l = l.clone();
            s.spawn(move || {
                for _ in 0..500 {
                    let a = l.try_acquire(Connection, ip(c)).expect("under 1000");
                    let b = l.try_acquire(Handshake, ip(c)).expect("under 1000");
                    drop(a);
                    drop(b);
                }
            });
        }
    });
    assert_eq!(l.tracked(), (0, 0));
    assert_eq!(l.stats(), LimitStats::default());
}

#[test]
fn permits_can_move_to_other_threads() {
    fn send<T: Send + 'static>(_: &T) {}
    let l = limits(1);
    let p = l.try_acquire(Connection, ip("192.0.2.1")).expect("p");
    send(&p);
    send(&l);
}

#[test]
fn the_config_table_deserializes_with_defaults() {
    let c: LimitsConfig =
        toml::from_str("max_handshakes = 8\nexempt = [\"10.0.0.0/8\"]").expect("valid table");
    assert_eq!(c.max_handshakes, 8);
    assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.rest_rate, DEFAULT_REST_RATE);
    assert!(c.exempt.contains(ip("10.2.3.4")));
    assert!(
        !c.exempt.contains(ip("127.0.0.1")),
        "a list replaces the default"
    );
    assert_eq!(
        toml::from_str::<LimitsConfig>("").ok(),
        Some(LimitsConfig::default())
    );
    assert!(toml::from_str::<LimitsConfig>("max_conections = 1").is_err());
}

#[test]
fn new_maxima_apply_to_the_permits_already_held() {
    let l = limits(1);
    let client = ip("192.0.2.1");
    let first = l
        .try_acquire(ParkedAccept, client)
        .expect("under the limit");
    assert!(l.try_acquire(ParkedAccept, client).is_err());
    l.set_config(LimitsConfig {
        max_parked_accepts: 2,
        ..l.config()
    });
    let second = l
        .try_acquire(ParkedAccept, client)
        .expect("the raised limit");
    assert_eq!(l.held(ParkedAccept, client), 2, "the first still counts");
    assert!(l.try_acquire(ParkedAccept, client).is_err());
    // Lowered below what is held: nothing more until under it again.
    l.set_config(LimitsConfig {
        max_parked_accepts: 1,
        ..l.config()
    });
    drop(first);
    assert!(l.try_acquire(ParkedAccept, client).is_err());
    drop(second);
    let _again = l.try_acquire(ParkedAccept, client).expect("under again");
}
