//! The relay process under test: its start, its listening line, and its CPU, memory, thread and descriptor counts from /proc.

use crate::options::Options;
use crate::peers::test_data;
use crate::targets::{Transport, TransportExt};
use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use uuid::Uuid;

/// The descriptor limit asked for (the relay inherits it): 10,000 pairs hold
/// 20,000 sockets here and as many in the relay, more with pipes.
const WANT_NOFILE: u64 = 262_144;

/// The relay under test, started from its binary with a config on port 0.
pub struct RelayProcess {
    child: Child,
    pub addr: SocketAddr,
    config: PathBuf,
}

impl RelayProcess {
    pub fn start(opts: &Options, transport: Transport) -> io::Result<RelayProcess> {
        RelayProcess::start_with(opts, transport, "")
    }

    /// A relay whose config also holds the top-level lines `extra`.
    pub fn start_with(
        opts: &Options,
        transport: Transport,
        extra: &str,
    ) -> io::Result<RelayProcess> {
        let config = std::env::temp_dir().join(format!("jet-bench-{}.toml", Uuid::new_v4()));
        let scheme = transport.listener_scheme();
        let tls = if transport.is_tls() {
            format!(
                "cert = {:?}\nkey = {:?}\n",
                test_data("server.pem"),
                test_data("server.key")
            )
        } else {
            String::new()
        };
        // zero_copy is written only to turn it off, so older relays (without
        // the key) can be measured too.
        let zero_copy = if opts.zero_copy {
            ""
        } else {
            "zero_copy = false\n"
        };
        std::fs::write(
            &config,
            format!(
                "instance = \"bench\"\nlog_level = \"warn\"\n{zero_copy}{extra}\n[[listeners]]\nurl = \"{scheme}://127.0.0.1:0\"\n{tls}"
            ),
        )?;
        let mut child = Command::new(&opts.relay)
            .arg("--config")
            .arg(&config)
            .env("JET_RELAY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::other(format!("starting {}: {e}", opts.relay.display())))?;
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix(&format!("listening {scheme}://"))
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::other(format!("unexpected relay output {line:?}")))?;
        Ok(RelayProcess {
            child,
            addr,
            config,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU seconds the relay has used.
    pub fn cpu_seconds(&self) -> io::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| io::Error::other("odd /proc/PID/stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| -> io::Result<f64> {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .ok_or_else(|| io::Error::other("odd /proc/PID/stat"))
        };
        // utime and stime are fields 14 and 15; `rest` starts at field 3.
        Ok((ticks(11)? + ticks(12)?) / clock_ticks())
    }

    /// Resident memory (bytes), threads and open descriptors.
    pub fn usage(&self) -> io::Result<Usage> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid()))?.count() as u64;
        Ok(Usage {
            rss: field("VmRSS:") * 1024,
            threads: field("Threads:"),
            fds,
        })
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

#[cfg(target_os = "linux")]
pub fn clock_ticks() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

#[cfg(not(target_os = "linux"))]
pub fn clock_ticks() -> f64 {
    100.0
}

#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub rss: u64,
    pub threads: u64,
    pub fds: u64,
}

/// Raises this process's descriptor limit (the relay inherits it): the soft
/// limit up to the hard one, and the hard one too when we may (root).
#[cfg(target_os = "linux")]
pub fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    let want = Rlimit {
        current: Some(WANT_NOFILE),
        maximum: Some(WANT_NOFILE.max(old.maximum.unwrap_or(u64::MAX))),
    };
    if setrlimit(Resource::Nofile, want).is_ok() {
        return WANT_NOFILE;
    }
    let soft = old.maximum.map_or(WANT_NOFILE, |h| h.min(WANT_NOFILE));
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(soft),
            maximum: old.maximum,
        },
    );
    getrlimit(Resource::Nofile).current.unwrap_or(WANT_NOFILE)
}

#[cfg(not(target_os = "linux"))]
pub fn raise_nofile() -> u64 {
    1024
}
