//! Finding the Go toolchain and running it: niced, bounded in time, logged to a file, and with
//! failures turned into one line that says what to do.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The oldest Go that builds the pinned Kubernetes release (its go.mod says `go 1.26.0`).
const MIN_GO_MINOR: u32 = 26;

/// Go builds run at this niceness: the machine has 2 cores and Rust builds share them.
const NICENESS: libc::c_int = 15;

pub struct Go {
    pub binary: PathBuf,
    pub version: String,
}

impl Go {
    /// `$FJORD_GO` if set, else `go` on PATH, else Go's standard install location.
    pub fn find() -> Result<Go> {
        let candidates: Vec<PathBuf> = match std::env::var_os("FJORD_GO") {
            Some(explicit) => vec![PathBuf::from(explicit)],
            None => std::env::var_os("PATH")
                .map(|path| {
                    std::env::split_paths(&path)
                        .map(|dir| dir.join("go"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
                .into_iter()
                .chain([PathBuf::from("/usr/local/go/bin/go")])
                .collect(),
        };
        let Some(binary) = candidates.into_iter().find(|c| c.is_file()) else {
            bail!(
                "the Go toolchain was not found (looked for `go` on PATH, in /usr/local/go/bin and \
                 $FJORD_GO): install Go 1.{MIN_GO_MINOR} or newer, put `go` on PATH, and re-run `cargo xtask tools`"
            );
        };
        let output = run_captured(
            Command::new(&binary).args(["env", "GOVERSION"]),
            Duration::from_secs(60),
        )
        .with_context(|| format!("running {} env GOVERSION", binary.display()))?;
        let version = output.trim().to_string();
        let minor = version
            .strip_prefix("go1.")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|m| m.parse::<u32>().ok());
        match minor {
            Some(minor) if minor >= MIN_GO_MINOR => Ok(Go { binary, version }),
            _ => bail!(
                "{} is {version:?}, but Kubernetes needs Go 1.{MIN_GO_MINOR} or newer: install a newer Go, \
                 put it first on PATH (or set FJORD_GO), and re-run `cargo xtask tools`",
                binary.display()
            ),
        }
    }

    /// A `go` command with the environment every tools build uses.
    pub fn command(&self, dir: &Path, goflags: &str) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .current_dir(dir)
            // Never fetch another toolchain behind our back: that would be a download outside the
            // module proxy, and a hang on machines that cannot reach it.
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0")
            .env("GOFLAGS", goflags);
        command
    }

    pub fn goproxy(&self) -> String {
        run_captured(
            Command::new(&self.binary).args(["env", "GOPROXY"]),
            Duration::from_secs(60),
        )
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
    }
}

/// Runs a quick command and returns its stdout; fails on a non-zero exit or after `timeout`.
pub fn run_captured(command: &mut Command, timeout: Duration) -> Result<String> {
    let log = tempfile_path("fjord-go-output");
    let result = run_logged(
        command,
        &log,
        Limits {
            total: timeout,
            stall: timeout,
        },
        None,
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    match result {
        Ok(()) => Ok(text),
        Err(failure) => bail!("{failure}: {}", last_line(&text)),
    }
}

fn tempfile_path(stem: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "{stem}-{}-{:?}",
        std::process::id(),
        Instant::now()
    ))
}

/// Why a logged command failed.
#[derive(Debug)]
pub enum Failure {
    NotStarted(String),
    Exited(std::process::ExitStatus),
    TimedOut(Duration),
    /// The log did not grow for this long: go is waiting on something (usually the network).
    Stalled(Duration),
}

/// How long a go step may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub total: Duration,
    /// Longest time without new log output. Needed because `go` waits forever on a proxy that
    /// accepts connections but never answers; steps run with `-x`/`-v` so progress shows up.
    pub stall: Duration,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotStarted(error) => write!(f, "could not be started: {error}"),
            Failure::Exited(status) => write!(f, "failed ({status})"),
            Failure::TimedOut(limit) => write!(f, "was stopped after running for {limit:?}"),
            Failure::Stalled(limit) => write!(f, "made no progress for {limit:?} and was stopped"),
        }
    }
}

/// Runs `command` niced, with stdout and stderr to `log`, killing its whole process group when it
/// exceeds `limits`. With a `heartbeat` label it prints a progress line every minute, so a long cold
/// build is visibly alive rather than silent.
pub fn run_logged(
    command: &mut Command,
    log: &Path,
    limits: Limits,
    heartbeat: Option<&str>,
) -> std::result::Result<(), Failure> {
    let mut spawn = || -> std::io::Result<std::process::Child> {
        let file = File::create(log)?;
        // SAFETY: setpriority and prctl are async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, NICENESS);
                // If xtask is killed (Ctrl-C, CI timeout), go must not build on unattended.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            // Own process group, so a timeout can stop go and every compiler it started.
            .process_group(0)
            .spawn()
    };
    let mut child = match spawn() {
        Ok(child) => child,
        Err(error) => {
            return Err(Failure::NotStarted(format!(
                "{:?}: {error}",
                command.get_program()
            )))
        }
    };
    let started = Instant::now();
    let mut next_heartbeat = Duration::from_secs(60);
    let mut last_log_len = 0;
    let mut last_progress = started;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(Failure::Exited(status)),
            Ok(None) => {}
            Err(error) => return Err(Failure::NotStarted(error.to_string())),
        }
        let elapsed = started.elapsed();
        let log_len = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        if log_len != last_log_len {
            last_log_len = log_len;
            last_progress = Instant::now();
        }
        let failure = if elapsed >= limits.total {
            Some(Failure::TimedOut(limits.total))
        } else if last_progress.elapsed() >= limits.stall {
            Some(Failure::Stalled(limits.stall))
        } else {
            None
        };
        if let Some(failure) = failure {
            // SAFETY: kill(2) on the process group we created.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.wait();
            return Err(failure);
        }
        if let Some(label) = heartbeat {
            if elapsed >= next_heartbeat {
                eprintln!(
                    "  ... {label}: {} min elapsed (log: {})",
                    elapsed.as_secs() / 60,
                    log.display()
                );
                next_heartbeat += Duration::from_secs(60);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The last non-empty line of `text`.
pub fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_string()
}

/// If the go output in `log` shows the module proxy could not be reached (or refused a module),
/// the most telling line of it.
pub fn module_download_problem(log: &Path) -> Option<String> {
    const NETWORK: &[&str] = &[
        "dial tcp",
        "no such host",
        "connection refused",
        "connection reset by peer",
        "read tcp",
        "i/o timeout",
        "TLS handshake timeout",
        "proxyconnect",
        "server response",
        "403 Forbidden",
        "404 Not Found",
        "410 Gone",
        "network is unreachable",
        "verifying go.mod",
        "verifying module",
    ];
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .find(|line| NETWORK.iter().any(|p| line.contains(p)))?
        .trim();
    // `go mod download -json` reports it as a JSON field: show just the message.
    let message = line.strip_prefix("\"Error\":").map(|m| {
        m.trim()
            .trim_end_matches(',')
            .trim_matches('"')
            .replace("\\\"", "\"")
    });
    Some(message.unwrap_or_else(|| line.to_string()))
}
