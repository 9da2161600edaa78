//! The relay binary as a child process for the tests that need signals,
//! exit codes or a fresh process: a temporary config file, the `listening`
//! lines, signals, a bounded wait for exit.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_jet-relay");

pub fn config_file(text: &str) -> tempfile_path::TempPath {
    tempfile_path::write(text)
}

/// A minimal temporary file, removed on drop (no extra crate for one helper).
pub mod tempfile_path {
    use std::path::PathBuf;
    pub struct TempPath(pub PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    pub fn write(text: &str) -> TempPath {
        let path =
            std::env::temp_dir().join(format!("jet-relay-test-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).unwrap();
        TempPath(path)
    }
}

/// The relay binary running on a free port; killed on drop if still running.
pub struct RelayProcess {
    pub child: Child,
    /// The rest of the relay's standard output.
    pub stdout: BufReader<std::process::ChildStdout>,
    /// The first listener's URL.
    pub url: String,
    /// Every listener's URL, in configuration order.
    pub urls: Vec<String>,
}

impl RelayProcess {
    pub fn start(config: &str) -> (RelayProcess, tempfile_path::TempPath) {
        let file = config_file(config);
        let mut command = Command::new(BIN);
        command.arg("--config").arg(&file.0).stderr(Stdio::null());
        (RelayProcess::launch(command), file)
    }

    /// Starts the relay under `ulimit -n limit`, its stderr piped.
    pub fn start_with_fd_limit(
        config: &str,
        limit: u32,
    ) -> (RelayProcess, tempfile_path::TempPath) {
        let file = config_file(config);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" --config \"$1\""))
            .arg(BIN)
            .arg(&file.0)
            .stderr(Stdio::piped());
        (RelayProcess::launch(command), file)
    }

    /// Runs the relay command at log level warn and reads its `listening` line.
    pub fn launch(command: Command) -> RelayProcess {
        RelayProcess::launch_with_listeners(command, 1)
    }

    /// Runs the relay command at log level warn (unless the command sets
    /// JET_RELAY_LOG) and reads the `listening` lines of `listeners` listeners.
    pub fn launch_with_listeners(mut command: Command, listeners: usize) -> RelayProcess {
        if !command.get_envs().any(|(k, _)| k == "JET_RELAY_LOG") {
            command.env("JET_RELAY_LOG", "warn");
        }
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut urls = Vec::new();
        for _ in 0..listeners {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            let url = line
                .strip_prefix("listening ")
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .trim()
                .to_owned();
            urls.push(url);
        }
        RelayProcess {
            child,
            stdout,
            url: urls[0].clone(),
            urls,
        }
    }

    /// The next line the relay writes on its standard output.
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// The `HOST:PORT` of listener `index`.
    pub fn addr(&self, index: usize) -> String {
        let url = &self.urls[index];
        url.split_once("://")
            .map_or(url.as_str(), |(_, a)| a)
            .to_owned()
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit, bounded; returns the status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "the relay did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
