//! Connection threads: one per connection (and one more per relaying pair), reused
//! when they finish so a new connection does not pay for a thread spawn.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Stack size of connection threads. Handlers keep their buffers on the heap;
/// this is address space, and only the pages a thread touches become memory.
pub const STACK_SIZE: usize = 256 * 1024;
/// How long a finished thread waits for new work before it exits.
pub const IDLE_KEEPALIVE: Duration = Duration::from_secs(5);
/// The most finished threads kept waiting for work.
pub const MAX_IDLE: usize = 64;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The most threads this system lets a process run safely. Past
/// `vm.max_map_count`, a new thread cannot map its stack and guard pages and
/// the process aborts (each thread takes about four mappings; five leaves room
/// for the heap and libraries); past `kernel.pid_max` or `threads-max`,
/// spawning fails. A relay must refuse connections well before either.
pub fn system_thread_limit() -> usize {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok())
    };
    let mut limit = usize::MAX;
    if let Some(maps) = read("/proc/sys/vm/max_map_count") {
        limit = limit.min(maps / 5);
    }
    if let Some(pids) = read("/proc/sys/kernel/pid_max") {
        limit = limit.min(pids.saturating_sub(1024));
    }
    if let Some(threads) = read("/proc/sys/kernel/threads-max") {
        limit = limit.min(threads / 2);
    }
    if limit == usize::MAX {
        // Not Linux, or /proc unreadable: a conservative fixed limit.
        limit = 10_000;
    }
    limit.max(MIN_THREADS)
}

/// The fewest threads a derived limit gives, whatever the system says.
pub const MIN_THREADS: usize = 64;

/// How busy the pool is at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLoad {
    /// Threads running a job (a handshake, an HTTP connection, a copy direction).
    pub busy: usize,
    /// Threads waiting for their next job.
    pub idle: usize,
    /// The most threads the pool starts.
    pub limit: usize,
}

/// A pool thread waiting for the job [`Reserved::run`] hands it.
pub struct Reserved {
    job: std::sync::mpsc::SyncSender<Job>,
}

impl Reserved {
    /// Runs `job` on the reserved thread. Fails only when the thread is gone
    /// (the pool closed meanwhile); the job is then dropped unrun.
    pub fn run(self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.job
            .send(Box::new(job))
            .map_err(|_| io::Error::other("the pool is closed"))
    }
}

/// A set of threads that each run one job at a time and wait briefly for the next.
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    idle: usize,
    threads: usize,
    /// The most threads alive at once; `spawn` fails beyond it.
    limit: usize,
    closed: bool,
    /// Callers blocked on `done`: notifying is a system call even when
    /// nobody listens, so workers skip it while this is zero.
    watchers: usize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::new()
    }
}

impl Pool {
    /// An empty pool with the limit the system allows ([`system_thread_limit`]).
    pub fn new() -> Pool {
        Pool::with_limit(system_thread_limit())
    }

    /// An empty pool of at most `limit` threads; threads start on demand.
    pub fn with_limit(limit: usize) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    limit,
                    ..State::default()
                }),
                work: Condvar::new(),
                done: Condvar::new(),
            }),
        }
    }

    /// Runs `job` on a waiting thread, or on a new one when none waits.
    /// Fails only when the system refuses a new thread; the job is then dropped
    /// (closing whatever sockets it owned).
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
        // A job started for a connection (a copy thread) logs as that connection.
        let conn = crate::log::current_conn();
        let job = move || {
            let _scope = conn.map(crate::log::conn_scope);
            job()
        };
        let mut state = self.shared.lock();
        if state.closed {
            return Err(io::Error::other("the pool is closed"));
        }
        if state.idle > state.queue.len() {
            state.queue.push_back(Box::new(job));
            drop(state);
            self.shared.work.notify_one();
            return Ok(());
        }
        if state.threads >= state.limit {
            return Err(io::Error::other(format!(
                "the thread limit ({}) is reached",
                state.limit
            )));
        }
        state.threads += 1;
        self.shared.notify_done(&state);
        drop(state);
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new()
            .name("jet-conn".into())
            .stack_size(STACK_SIZE)
            .spawn(move || worker(shared, Box::new(job)));
        if let Err(e) = spawned {
            let mut state = self.shared.lock();
            state.threads -= 1;
            self.shared.notify_done(&state);
            return Err(e);
        }
        Ok(())
    }

    /// A thread for a job that will come later: started (or woken) now and
    /// waiting for it, so a caller can refuse before promising what it could
    /// not start (a connect's 200 before its pair's second copy thread).
    /// Dropping the reservation unused lets the thread go back to the pool.
    pub fn reserve(&self) -> io::Result<Reserved> {
        let (job, next) = std::sync::mpsc::sync_channel::<Job>(1);
        self.spawn(move || {
            if let Ok(job) = next.recv() {
                job();
            }
        })?;
        Ok(Reserved { job })
    }

    /// Threads running a job, threads waiting for one, and the limit, read
    /// together (for the metrics endpoint).
    pub fn load(&self) -> PoolLoad {
        let state = self.shared.lock();
        PoolLoad {
            busy: state.threads - state.idle,
            idle: state.idle,
            limit: state.limit,
        }
    }

    /// Waits up to `limit` until at least `count` threads are running a job.
    pub fn wait_busy(&self, count: usize, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut state = self.shared.lock();
        while state.threads - state.idle < count {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            state.watchers += 1;
            state = self.shared.wait_done(state, left);
            state.watchers -= 1;
        }
        true
    }

    /// Waits up to `limit` until at least `count` threads wait for work.
    pub fn wait_idle(&self, count: usize, limit: Duration) -> bool {
        let mut state = self.shared.lock();
        state.watchers += 1;
        let (mut state, _) = self
            .shared
            .done
            .wait_timeout_while(state, limit, |s| s.idle < count)
            .unwrap_or_else(|e| e.into_inner());
        state.watchers -= 1;
        state.idle >= count
    }

    /// Tells waiting threads to exit and waits up to `limit` for every thread
    /// to finish its job. Returns the number still running.
    pub fn close(&self, limit: Duration) -> usize {
        let mut state = self.shared.lock();
        state.closed = true;
        state.watchers += 1;
        self.shared.work.notify_all();
        let deadline = std::time::Instant::now() + limit;
        while state.threads > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.shared.wait_done(state, left);
        }
        state.watchers -= 1;
        state.threads
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Jobs run outside the lock, so a panicking job cannot poison it
        // mid-update; recover rather than cascade.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the callers of `wait_idle` and `close`, if any. Called with the
    /// lock held, so a watcher counted here is already waiting.
    /// Waits up to `left` for a change on `done`; the caller counts itself
    /// in `watchers` around it.
    fn wait_done<'a>(
        &self,
        state: std::sync::MutexGuard<'a, State>,
        left: Duration,
    ) -> std::sync::MutexGuard<'a, State> {
        self.done
            .wait_timeout(state, left)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    fn notify_done(&self, state: &State) {
        if state.watchers > 0 {
            self.done.notify_all();
        }
    }
}

fn worker(shared: Arc<Shared>, first: Job) {
    // If a job panics the thread unwinds through here: the guard keeps the
    // thread count right so shutdown does not wait for a thread that is gone.
    struct Exit(Arc<Shared>);
    impl Drop for Exit {
        fn drop(&mut self) {
            let mut state = self.0.lock();
            state.threads -= 1;
            self.0.notify_done(&state);
        }
    }
    let _exit = Exit(Arc::clone(&shared));
    first();
    loop {
        let job = {
            let mut state = shared.lock();
            if state.closed || state.idle >= MAX_IDLE {
                return;
            }
            state.idle += 1;
            shared.notify_done(&state);
            let (mut state, _) = shared
                .work
                .wait_timeout_while(state, IDLE_KEEPALIVE, |s| s.queue.is_empty() && !s.closed)
                .unwrap_or_else(|e| e.into_inner());
            state.idle -= 1;
            shared.notify_done(&state);
            match state.queue.pop_front() {
                // Closed while this job waited: drop it unrun (closing the
                // sockets it owns) rather than start work during shutdown.
                Some(_) if state.closed => return,
                Some(job) => job,
                None => return,
            }
        };
        job();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn finished_threads_run_the_next_job() {
        let pool = Pool::new();
        let (tx, rx) = mpsc::channel();
        for round in 0..20 {
            let tx = tx.clone();
            pool.spawn(move || tx.send((round, thread::current().id())).unwrap())
                .unwrap();
            let (got, _) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(got, round);
            assert!(pool.wait_idle(1, Duration::from_secs(5)));
        }
        // One job at a time, each started once the last thread waits: one thread.
        let load = pool.load();
        assert_eq!(load.busy + load.idle, 1);
        assert_eq!(pool.close(Duration::from_secs(5)), 0);
    }

    #[test]
    fn spawning_past_the_limit_fails_and_drops_the_job() {
        let pool = Pool::with_limit(2);
        let gate = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..2 {
            let gate = Arc::clone(&gate);
            pool.spawn(move || {
                gate.wait();
            })
            .unwrap();
        }
        let (tx, rx) = mpsc::channel::<()>();
        let err = pool.spawn(move || tx.send(()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("thread limit"), "{err}");
        // The refused job was dropped unrun: its sender is gone.
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_err());
        gate.wait();
        assert_eq!(pool.close(Duration::from_secs(5)), 0);
        assert!(system_thread_limit() >= MIN_THREADS);
    }

    #[test]
    fn a_reserved_thread_runs_the_job_handed_later_and_counts_against_the_limit() {
        let pool = Pool::with_limit(1);
        let reserved = pool.reserve().unwrap();
        assert!(pool.wait_busy(1, Duration::from_secs(5)));
        assert!(pool.reserve().is_err(), "the one thread is reserved");
        let (tx, rx) = mpsc::channel();
        reserved.run(move || tx.send(()).unwrap()).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // Dropped unused, a reservation gives its thread back.
        assert!(pool.wait_idle(1, Duration::from_secs(5)));
        drop(pool.reserve().unwrap());
        assert!(pool.wait_idle(1, Duration::from_secs(5)));
        assert_eq!(pool.close(Duration::from_secs(5)), 0);
    }

    #[test]
    fn concurrent_jobs_get_their_own_threads() {
        let pool = Pool::new();
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let (tx, rx) = mpsc::channel();
        for _ in 0..4 {
            let barrier = Arc::clone(&barrier);
            let tx = tx.clone();
            pool.spawn(move || {
                barrier.wait();
                tx.send(()).unwrap();
            })
            .unwrap();
        }
        for _ in 0..4 {
            rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        assert_eq!(pool.close(Duration::from_secs(5)), 0);
    }
}
