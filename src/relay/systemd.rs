//! Life under systemd without libsystemd: readiness notification
//! (`sd_notify`), socket activation (`sd_listen_fds`) and the descriptor limit.
//!
//! Every function is a no-op success outside systemd: [`notify`] and its
//! helpers return `Ok(false)` when `NOTIFY_SOCKET` is not set, and
//! [`listen_fds`] returns no listener when `LISTEN_PID` is not ours. The
//! environment is read by thin wrappers only; the decisions are made by
//! functions that take the values as arguments ([`notify_to`],
//! [`passed_fds`]), so they can be tested without touching the process
//! environment.
//!
//! Call [`listen_fds`] early in `main`, before other threads start: taking the
//! descriptors unsets `LISTEN_PID` and `LISTEN_FDS` (as `sd_listen_fds(1)`
//! does), and changing the environment races with threads reading it.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use rustix::time::{clock_gettime, ClockId};
use std::ffi::OsStr;
use std::io;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// The name `sd_listen_fds_with_names` gives a descriptor when the manager
/// passed no `LISTEN_FDNAMES`.
pub const UNKNOWN_NAME: &str = "unknown";

/// Sends `state` (newline-separated `KEY=VALUE` assignments, see
/// sd_notify(3)) to the service manager when `NOTIFY_SOCKET` is set.
/// `Ok(true)` when sent, `Ok(false)` when not run by a manager that listens.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_to(&socket, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` as one datagram to the notification socket `socket`: an
/// absolute path, or an abstract name when it starts with `@`.
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    let addr = notify_address(socket)?;
    let sender = UnixDatagram::unbound()?;
    let sent = sender.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("NOTIFY_SOCKET: {sent} of {} bytes sent", state.len()),
        ));
    }
    Ok(())
}

/// The address `NOTIFY_SOCKET` names.
fn notify_address(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(Path::new(socket)),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "NOTIFY_SOCKET {socket:?} is neither an absolute path nor an abstract name (@...)"
            ),
        )),
    }
}

/// Start-up is complete (the listeners are bound): `READY=1`. After a reload,
/// it tells that the reload is complete.
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// A reload starts: [`reloading_state`], sent. Follow it with [`ready`] once
/// the new configuration is in force.
pub fn reloading() -> io::Result<bool> {
    notify(&reloading_state())
}

/// `RELOADING=1` with the `MONOTONIC_USEC=` systemd 253 and later want with
/// it (a `Type=notify-reload` service that omits it has its reload fail).
pub fn reloading_state() -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec())
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares reloads with.
pub fn monotonic_usec() -> u64 {
    let now = clock_gettime(ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let micros = u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
    secs.saturating_mul(1_000_000).saturating_add(micros)
}

/// Shutdown has begun: `STOPPING=1`.
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// A one-line status for `systemctl status`: [`status_state`], sent.
pub fn status(text: &str) -> io::Result<bool> {
    notify(&status_state(text))
}

/// `STATUS=text`, line breaks turned into spaces (a line break would start
/// another assignment).
pub fn status_state(text: &str) -> String {
    format!("STATUS={}", text.replace(['\n', '\r'], " "))
}

/// The listening TCP sockets the service manager passed (socket activation,
/// `LISTEN_FDS` descriptors from 3), in the order of the socket unit's
/// `ListenStream=` lines. Empty when none were passed to this process.
pub fn listen_fds() -> io::Result<Vec<TcpListener>> {
    Ok(listen_fds_named()?.into_iter().map(|(_, l)| l).collect())
}

/// [`listen_fds`] with each descriptor's name (`FileDescriptorName=` of the
/// socket unit, by default the unit's name; [`UNKNOWN_NAME`] when the manager
/// passed no names). A passed descriptor that is not a TCP listening socket
/// is an error.
pub fn listen_fds_named() -> io::Result<Vec<(String, TcpListener)>> {
    let var = |name| std::env::var(name).ok();
    let names = passed_fds(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    // listenfd checks LISTEN_PID (ours, as just seen) and LISTEN_FDS again,
    // unsets both, and turns each descriptor into a listener after checking
    // it is a stream socket of the right family.
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() != names.len() {
        return Err(invalid(format!(
            "LISTEN_FDS: {} descriptors announced, {} found",
            names.len(),
            fds.len()
        )));
    }
    names
        .into_iter()
        .enumerate()
        .map(|(index, name)| match fds.take_tcp_listener(index)? {
            Some(listener) => Ok((name, listener)),
            None => Err(invalid(format!(
                "LISTEN_FDS: descriptor {} is gone",
                index + 3
            ))),
        })
        .collect()
}

/// What sd_listen_fds(3) decides from the environment: the names of the
/// descriptors passed to the process `our_pid`, one per descriptor (so the
/// count is the length). None when `LISTEN_PID` is unset or another
/// process's (the variables were inherited, not meant for us) or
/// `LISTEN_FDS` is unset; an error when a value does not parse or the names
/// do not match the count.
pub fn passed_fds(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    our_pid: u32,
) -> io::Result<Vec<String>> {
    let (Some(pid), Some(count)) = (listen_pid, listen_fds) else {
        return Ok(Vec::new());
    };
    let pid: u32 = pid
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_PID {pid:?} is not a process id")))?;
    if pid != our_pid {
        return Ok(Vec::new());
    }
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| invalid(format!("LISTEN_FDS {count:?} is not a count")))?;
    match listen_fdnames {
        None => Ok(vec![UNKNOWN_NAME.to_string(); count]),
        Some(_) if count == 0 => Ok(Vec::new()),
        Some(names) => {
            let names: Vec<String> = names.split(':').map(str::to_string).collect();
            if names.len() != count {
                return Err(invalid(format!(
                    "LISTEN_FDNAMES has {} names for {count} descriptors",
                    names.len()
                )));
            }
            Ok(names)
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Raises the soft limit on open descriptors to the hard limit: each relaying
/// pair holds two sockets (and two pipes on the zero-copy path), and the soft
/// limit a process starts with is often 1024. Returns the limits in force
/// after the call, (soft, hard); `u64::MAX` stands for unlimited.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    let now = getrlimit(Resource::Nofile);
    let value = |v: Option<u64>| v.unwrap_or(u64::MAX);
    Ok((value(now.current), value(now.maximum)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A name no other test (nor another run at the same time) uses.
    fn unique(what: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!(
            "jet-relay-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A notification socket bound in a fresh temporary folder.
    struct Manager {
        dir: PathBuf,
        path: PathBuf,
        socket: UnixDatagram,
    }

    impl Manager {
        fn new() -> Manager {
            let dir = std::env::temp_dir().join(unique("notify"));
            std::fs::create_dir(&dir).unwrap();
            let path = dir.join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            Manager { dir, path, socket }
        }

        fn receive(&self) -> String {
            let mut buf = [0; 4096];
            let n = self.socket.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        }
    }

    impl Drop for Manager {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn notify_sends_one_datagram_to_a_path() {
        let manager = Manager::new();
        notify_to(manager.path.as_os_str(), "READY=1").unwrap();
        assert_eq!(manager.receive(), "READY=1");
        notify_to(manager.path.as_os_str(), &status_state("2 pairs\nrelaying")).unwrap();
        assert_eq!(manager.receive(), "STATUS=2 pairs relaying");
    }

    #[test]
    fn notify_sends_to_an_abstract_name() {
        let name = unique("abstract");
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let manager = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let mut buf = [0; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn notify_refuses_a_relative_path_and_a_missing_socket() {
        let err = notify_to(OsStr::new("notify"), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        let dir = std::env::temp_dir().join(unique("absent"));
        assert!(notify_to(dir.join("notify").as_os_str(), "READY=1").is_err());
    }

    #[test]
    fn reloading_carries_the_monotonic_time() {
        let before = monotonic_usec();
        let state = reloading_state();
        let after = monotonic_usec();
        let usec: u64 = state
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(before <= usec && usec <= after, "{before} {usec} {after}");
    }

    #[test]
    fn listen_fds_ignores_another_process() {
        let ours = std::process::id();
        let names = passed_fds(Some(&(ours + 1).to_string()), Some("2"), None, ours).unwrap();
        assert!(names.is_empty());
        assert!(passed_fds(None, Some("2"), None, ours).unwrap().is_empty());
        assert!(passed_fds(Some(&ours.to_string()), None, None, ours)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn listen_fds_counts_and_names_ours() {
        let ours = std::process::id();
        let pid = ours.to_string();
        assert_eq!(
            passed_fds(Some(&pid), Some("2"), None, ours).unwrap(),
            ["unknown", "unknown"]
        );
        assert_eq!(
            passed_fds(Some(&pid), Some("2"), Some("jet-relay.socket:admin"), ours).unwrap(),
            ["jet-relay.socket", "admin"]
        );
        assert!(passed_fds(Some(&pid), Some("0"), Some(""), ours)
            .unwrap()
            .is_empty());
        assert!(passed_fds(Some(&pid), Some("2"), Some("one"), ours).is_err());
        assert!(passed_fds(Some(&pid), Some("two"), None, ours).is_err());
        assert!(passed_fds(Some("me"), Some("2"), None, ours).is_err());
    }

    #[test]
    fn raise_nofile_limit_leaves_soft_equal_to_hard() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, now.maximum);
    }
}
