//! Starting, watching and stopping the control plane's child processes.
//!
//! Components run detached from the terminal (own process group, stdin closed, output to a log
//! file). How long they live is the caller's choice, see [`Lifetime`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long the started components live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lifetime {
    /// Until `cargo xtask cluster down`: started by hand, reused by later test runs.
    Detached,
    /// Until the process that started them exits (the kernel sends SIGKILL then), so a test run
    /// never leaves components behind. SIGKILL, not SIGTERM: etcd and the apiserver get the
    /// signal together, and an apiserver shutting down gracefully without its etcd waits forever.
    /// The data is thrown away anyway. The spawning *thread* must live as long as the process:
    /// Linux delivers the parent-death signal when the thread that forked exits.
    TiedToThisProcess,
}

/// Spawns `program args` with stdout and stderr appended to `log`.
pub fn spawn(program: &Path, args: &[String], log: &Path, lifetime: Lifetime) -> Result<Child> {
    let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Own process group: a Ctrl-C aimed at `cargo xtask` or `cargo test` does not hit the
        // components half-way; they are stopped deliberately instead.
        .process_group(0);
    if lifetime == Lifetime::TiedToThisProcess {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// True when `pid` is a live process whose command line mentions `marker` (the cluster directory),
/// so a recycled pid is never mistaken for one of ours.
pub fn is_ours_and_alive(pid: u32, marker: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    if is_zombie(pid) {
        return false;
    }
    let marker = marker.as_os_str().as_encoded_bytes();
    cmdline.windows(marker.len()).any(|w| w == marker)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Sends SIGTERM, waits up to `grace` for the process to go, then SIGKILLs it.
pub fn stop(pid: u32, marker: &Path, grace: Duration) {
    if !is_ours_and_alive(pid, marker) {
        return;
    }
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_ours_and_alive(pid, marker) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && is_ours_and_alive(pid, marker) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The last `lines` lines of a log file (reads at most the last 64 KiB).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_ok() {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The most telling line of a failed component's log: a known fatal pattern if there is one,
/// else the last non-empty line.
pub fn failure_summary(log: &Path) -> String {
    let tail = log_tail(log, 200);
    const FATAL: &[&str] = &[
        "address already in use",
        "permission denied",
        "no such file or directory",
        "error validating",
        "invalid argument",
        "failed to",
        "error:",
        "Error:",
    ];
    for pattern in FATAL {
        if let Some(line) = tail.lines().rev().find(|line| line.contains(pattern)) {
            return shorten(line);
        }
    }
    tail.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(shorten)
        .unwrap_or_default()
}

fn shorten(line: &str) -> String {
    let line = line.trim();
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

/// Runs a short command to completion, killing it if it takes longer than `timeout`.
/// Returns stdout on success, or a one-line reason on failure.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<String, String> {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
    let pid = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // wait_with_output drains both pipes, so a chatty command cannot block on a full pipe.
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    match done_rx.recv_timeout(timeout) {
        Ok(Ok(output)) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let stdout = String::from_utf8_lossy(&output.stdout);
            let reason = stderr
                .lines()
                .chain(stdout.lines())
                .rev()
                .find(|l| !l.trim().is_empty());
            Err(shorten(reason.unwrap_or("no output")) + &format!(" ({})", output.status))
        }
        Ok(Err(e)) => Err(format!("waiting for {:?}: {e}", command.get_program())),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            Err(format!(
                "{:?} gave no answer within {timeout:?}",
                command.get_program()
            ))
        }
    }
}
