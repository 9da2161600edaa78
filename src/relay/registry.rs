//! Every open connection, so shutdown can close them all, whatever state they are in.

use crate::relay::limits::Permit;
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// Every open connection, so shutdown can close them all, whatever state they are in.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Weak<TcpStream>>>,
    closed: Condvar,
    /// Threads in `wait_at_most`, counted under the lock.
    waiters: AtomicUsize,
}

/// A connection's entry in the [`Registry`]; dropping it removes the entry
/// and gives back the client's connection permit, if it holds one.
pub struct Registration {
    id: u64,
    registry: Arc<Registry>,
    /// `[client_limits]` `max_connections`: held for the connection's life,
    /// which ends when the last half of its stream drops this entry. Behind
    /// a lock because a PROXY header names the client after the entry exists.
    permit: Mutex<Option<Permit>>,
}

impl Registration {
    /// Holds the client's connection permit until the entry drops.
    pub fn hold(&self, permit: Permit) {
        *self.permit.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
    }

    /// The connection's number, used in log lines.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Registry {
    /// Registers a connection's socket. The registry keeps only a weak
    /// reference: the descriptor closes when its owners drop it.
    pub fn register(self: &Arc<Self>, sock: &Arc<TcpStream>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(id, Arc::downgrade(sock));
        Registration {
            id,
            registry: Arc::clone(self),
            permit: Mutex::new(None),
        }
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Waits up to `limit` until at most `count` connections are open.
    pub fn wait_at_most(&self, count: usize, limit: Duration) -> bool {
        let live = self.lock();
        self.waiters.fetch_add(1, Ordering::Relaxed);
        let (live, _) = self
            .closed
            .wait_timeout_while(live, limit, |l| l.len() > count)
            .unwrap_or_else(|e| e.into_inner());
        self.waiters.fetch_sub(1, Ordering::Relaxed);
        live.len() <= count
    }

    /// Shuts down every open connection with a reset (see `socket::cut`):
    /// a peer cut by shutdown must not take it for a normal end.
    pub fn kill_all(&self) {
        let socks: Vec<_> = self.lock().values().filter_map(Weak::upgrade).collect();
        for sock in socks {
            crate::relay::socket::cut(&sock);
        }
    }

    /// Cuts every open connection whose descriptor is not in `keep` (a drain
    /// keeps the relaying pairs and closes connections still in their
    /// handshake or REST requests).
    pub fn kill_except(&self, keep: &std::collections::HashSet<std::os::fd::RawFd>) {
        use std::os::fd::AsRawFd;
        let socks: Vec<_> = self.lock().values().filter_map(Weak::upgrade).collect();
        for sock in socks {
            if !keep.contains(&sock.as_raw_fd()) {
                crate::relay::socket::cut(&sock);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<TcpStream>>> {
        // A panic elsewhere cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still usable.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The permit goes first: whoever sees the connection gone from the
        // registry finds its client's count lowered too.
        drop(self.permit.lock().unwrap_or_else(|e| e.into_inner()).take());
        let mut live = self.registry.lock();
        live.remove(&self.id);
        // Notifying is a system call even with nobody waiting; waiters are
        // counted under the same lock, so none is missed.
        let wake = self.registry.waiters.load(Ordering::Relaxed) > 0;
        drop(live);
        if wake {
            self.registry.closed.notify_all();
        }
    }
}
