//! The table's rules, one test per rule.

use super::*;
use crate::relay::registry::Registry;
use std::net::{TcpListener, TcpStream};

/// A real loopback socket wrapped as a stream (the table only stores it).
fn stream() -> (Stream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    let registry = Arc::new(Registry::default());
    let theirs = Arc::new(theirs);
    let registration = registry.register(&theirs);
    (Stream::tcp(theirs, registration), ours)
}

#[test]
fn a_stale_reservation_cannot_publish_into_a_newer_one() {
    let table = Table::new(10);
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let first = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
    // The association is deleted while the first accept writes its 200,
    // then re-created by a second accept on the same ids.
    assert!(table.remove(a).is_some());
    let second = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
    let (s1, _k1) = stream();
    assert!(
        table.publish(first, s1, Permit::untracked()).is_err(),
        "the stale accept is refused"
    );
    let (s2, _k2) = stream();
    assert!(table.publish(second, s2, Permit::untracked()).is_ok());
    table.unreserve(first);
    let (connect, _k3) = stream();
    assert!(
        table.pair(a, c, &connect, Duration::ZERO).is_ok(),
        "the second accept is parked"
    );
}

#[test]
fn a_connect_waits_for_a_reserved_accept_to_publish() {
    let table = Arc::new(Table::new(10));
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let reservation = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
    let (connect, _k) = stream();
    // Nothing pairs with a reserved slot.
    assert_eq!(
        table.pair(a, c, &connect, Duration::ZERO).err(),
        Some(Reject::NotFound("no parked accept on this candidate"))
    );
    let waiter = {
        let table = Arc::clone(&table);
        std::thread::spawn(move || table.pair(a, c, &connect, Duration::from_secs(10)).is_ok())
    };
    let (accept, _k2) = stream();
    assert!(table
        .publish(reservation, accept, Permit::untracked())
        .is_ok());
    assert!(
        waiter.join().unwrap(),
        "the waiting connect paired once published"
    );
}

#[test]
fn a_closed_table_admits_nothing() {
    let table = Table::new(10);
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let reservation = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
    assert!(table.drain(EndReason::Shutdown).is_empty());
    let (s, _k) = stream();
    assert!(table.publish(reservation, s, Permit::untracked()).is_err());
    assert_eq!(table.create(a).err().map(Reject::status), Some(503));
    assert_eq!(
        table
            .reserve_accept(a, c, Transport::Tcp, true)
            .err()
            .map(Reject::status),
        Some(503)
    );
    assert!(table.is_empty());
}

#[test]
fn the_parked_cap_counts_reserved_and_parked_accepts_and_frees_them_on_every_exit() {
    let table = Table::new(10);
    table.set_parked_limit(1);
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    let full = |table: &Table| {
        table
            .reserve_accept(Uuid::new_v4(), Uuid::new_v4(), Transport::Tcp, true)
            .err()
    };
    let first = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
    assert_eq!(full(&table), Some(Reject::Unavailable(PARKED_FULL)));
    assert_eq!(
        table.reserve_v1(Transport::Tcp).err(),
        Some(Reject::Unavailable(PARKED_FULL))
    );
    // A refused accept created nothing.
    assert_eq!(table.len(), 1);
    table.unreserve(first);
    let again = table.reserve_accept(a, c, Transport::Tcp, true).unwrap();
    let (accept, _peer) = stream();
    assert!(table.publish(again, accept, Permit::untracked()).is_ok());
    assert_eq!(full(&table), Some(Reject::Unavailable(PARKED_FULL)));
    let (connect, _k) = stream();
    let (_accept, _stats) = table.pair(a, c, &connect, Duration::ZERO).unwrap();
    // Paired: the seat is free for the next accept.
    let (b, d) = (Uuid::new_v4(), Uuid::new_v4());
    let parked = table.reserve_accept(b, d, Transport::Tcp, true).unwrap();
    let (accept, _peer2) = stream();
    assert!(table.publish(parked, accept, Permit::untracked()).is_ok());
    assert!(table.remove(b).is_some());
    assert!(
        full(&table).is_none(),
        "removing the association freed its seat"
    );
}
