//! Signaling transport: JSON lines over files, FIFOs or stdio, with timeouts.

use crate::error::{Error, Result};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

/// The longest signaling line accepted.
pub(crate) const MAX_SIGNAL_LINE: usize = 64 * 1024;

/// Where signaling lines go: a file or FIFO, or stdout for `-`.
pub struct SignalOut {
    out: Box<dyn Write + Send>,
}

impl SignalOut {
    /// Opens `path` for writing (`-`: stdout). Opening a FIFO waits for its
    /// reader, at most `timeout`.
    pub fn open(path: &str, timeout: Duration) -> Result<SignalOut> {
        if path == "-" {
            return Ok(SignalOut {
                out: Box::new(io::stdout()),
            });
        }
        let owned = path.to_owned();
        let file = wait_in_thread(timeout, format!("opening {path}"), move || {
            OpenOptions::new()
                .write(true)
                .open(&owned)
                .map_err(|e| Error::io(format!("opening {owned}"), e))
        })?;
        Ok(SignalOut {
            out: Box::new(file),
        })
    }

    /// Writes one message as one JSON line and flushes it.
    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<()> {
        let mut line = serde_json::to_string(message)
            .map_err(|e| Error::Protocol(format!("encoding a message: {e}")))?;
        line.push('\n');
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(|e| Error::io("writing a signaling message", e))
    }
}

/// Runs a blocking call (opening a FIFO) on its own thread and waits for it at
/// most `timeout`; on timeout the thread is left blocked and the caller fails.
fn wait_in_thread<T: Send + 'static>(
    timeout: Duration,
    what: String,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name("signal-open".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::io("starting a thread", e))?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(Error::io(
            what,
            io::Error::new(io::ErrorKind::TimedOut, "the other peer did not open it"),
        )),
    }
}

/// Signaling lines read by a thread, so waits have a timeout. It reads only
/// the lines asked for, so with `-` the rest of stdin is left for the data.
pub struct SignalIn {
    lines: Receiver<Result<String>>,
}

impl SignalIn {
    /// Starts reading `count` non-empty lines from `path` (`-`: stdin).
    pub fn open(path: &str, count: usize) -> Result<SignalIn> {
        let (tx, rx) = mpsc::channel();
        let path = path.to_owned();
        thread::Builder::new()
            .name("signal-in".into())
            .spawn(move || {
                if path == "-" {
                    read_lines(io::stdin().lock(), count, &tx);
                } else {
                    match File::open(&path) {
                        Ok(file) => read_lines(BufReader::new(file), count, &tx),
                        Err(e) => {
                            let _ = tx.send(Err(Error::io(format!("opening {path}"), e)));
                        }
                    }
                }
            })
            .map_err(|e| Error::io("starting the signaling thread", e))?;
        Ok(SignalIn { lines: rx })
    }

    /// The next line, waiting at most `timeout`; `what` names it in errors.
    pub fn recv(&self, what: &str, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => Err(Error::io(
                format!("waiting for the {what} message"),
                io::Error::new(io::ErrorKind::TimedOut, format!("none within {timeout:?}")),
            )),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Protocol(format!(
                "signaling ended before the {what} message"
            ))),
        }
    }
}

fn read_lines(mut input: impl BufRead, count: usize, tx: &Sender<Result<String>>) {
    let mut sent = 0;
    while sent < count {
        let mut line = Vec::new();
        let limit = (MAX_SIGNAL_LINE + 1) as u64;
        let result = (&mut input).take(limit).read_until(b'\n', &mut line);
        let message = match result {
            Ok(0) => Err(Error::Protocol("signaling ended (EOF)".into())),
            Ok(_) if line.len() > MAX_SIGNAL_LINE => Err(Error::Protocol(format!(
                "a signaling line is longer than {MAX_SIGNAL_LINE} bytes"
            ))),
            Ok(_) => match String::from_utf8(line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => Ok(text.trim().to_owned()),
                Err(_) => Err(Error::Protocol("a signaling line is not UTF-8".into())),
            },
            Err(e) => Err(Error::io("reading signaling", e)),
        };
        let failed = message.is_err();
        if tx.send(message).is_err() || failed {
            return;
        }
        sent += 1;
    }
}
