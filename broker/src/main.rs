//! `fjord-broker [server.properties] [--override key=value]...`
//!
//! Like `kafka-server-start.sh`: an optional properties file, then overrides. Without a file the
//! embedded defaults apply (a single broker on 127.0.0.1:9092 with data under ./data).
//!
//! Logs go to stdout: `FJORD_LOG` is the tracing filter, `FJORD_LOG_FORMAT=json` switches to
//! JSON lines carrying the current span and its parents. Text logs have ANSI colours only when
//! stdout is a terminal.

use std::io::IsTerminal;
use std::process::ExitCode;

use fjord_broker::Config;

#[global_allocator]
static ALLOCATOR: fjord_broker::alloc_guard::GuardedAlloc = fjord_broker::alloc_guard::GuardedAlloc;

fn usage() -> &'static str {
    "usage: fjord-broker [server.properties] [--override key=value]...\n\
     With no file, the embedded defaults are used (listeners=PLAINTEXT://127.0.0.1:9092, log.dirs=./data).\n\
     Environment:\n  \
       FJORD_LOG          log filter (default: info,openraft=warn; e.g. debug shows per-request spans)\n  \
       FJORD_LOG_FORMAT   json for JSON lines with span fields (default: text, coloured only on a terminal)"
}

/// The command line: an optional properties file and `--override` pairs in order.
type Args = (Option<String>, Vec<(String, String)>);

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut file = None;
    let mut overrides = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--override" {
            let kv = args.get(i + 1).ok_or("--override needs key=value")?;
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--override '{kv}' is not key=value"))?;
            overrides.push((k.trim().to_string(), v.trim().to_string()));
            i += 2;
        } else if let Some(kv) = a.strip_prefix("--override=") {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--override '{kv}' is not key=value"))?;
            overrides.push((k.trim().to_string(), v.trim().to_string()));
            i += 1;
        } else if a == "-h" || a == "--help" {
            return Err(String::new());
        } else if a.starts_with('-') {
            return Err(format!("unknown option '{a}'"));
        } else if file.is_none() {
            file = Some(a.clone());
            i += 1;
        } else {
            return Err(format!("unexpected argument '{a}'"));
        }
    }
    Ok((file, overrides))
}

/// Keeps large buffers (fetch reads, big produce frames) in the malloc heap instead of giving
/// each one its own mmap: fresh mappings cost a page fault and a kernel page clear per 4 KiB,
/// which dominated the fetch path's CPU in profiles.
fn tune_malloc() {
    // SAFETY: mallopt only adjusts glibc allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

fn main() -> ExitCode {
    tune_malloc();
    let json = std::env::var("FJORD_LOG_FORMAT").is_ok_and(|v| v == "json");
    let filter = tracing_subscriber::EnvFilter::try_from_env("FJORD_LOG")
        .unwrap_or_else(|_| "info,openraft=warn".into());
    if json {
        // Each line names the innermost span and lists all entered ones with their fields, so a
        // handler's event carries its request's api, client id, principal, ...
        tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter)
            .init();
    } else {
        // Escape codes only help a terminal; in files and log collectors they are noise.
        tracing_subscriber::fmt()
            .with_ansi(std::io::stdout().is_terminal())
            .with_env_filter(filter)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (file, overrides) = match parse_args(&args) {
        Ok(x) => x,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{}", usage());
            return ExitCode::from(2);
        }
    };
    let text = match &file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: cannot read {path}: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let config = match Config::load(text.as_deref(), &overrides) {
        Ok((c, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            c
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // The handlers exist before start-up: in a container the broker is PID 1, and PID 1
        // ignores a SIGTERM it has no handler for, so a pod deleted while the broker recovers its
        // logs or waits for its quorum would hang until the grace period's SIGKILL.
        let mut stop = match StopSignals::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let started = tokio::select! {
            started = fjord_broker::start(config) => started,
            () = stop.recv() => {
                // Nothing was acknowledged yet; logs are crash-safe, so stopping here is safe.
                tracing::info!("stop signal during start-up: exiting");
                return ExitCode::SUCCESS;
            }
        };
        let running = match started {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!(
            cluster_id = %running.broker.cluster_id,
            node_id = running.broker.config.node_id,
            kafka = ?running.kafka_addrs,
            admin = %running.admin_addr,
            "fjord-broker ready"
        );
        stop.recv().await;
        tracing::info!("shutting down");
        fjord_broker::cluster::controller::controlled_shutdown(&running.broker.control()).await;
        let started = std::time::Instant::now();
        let abandoned = running.broker.shutdown().await;
        tracing::info!(elapsed = ?started.elapsed(), abandoned_tasks = abandoned, "stopped");
        ExitCode::SUCCESS
    })
}

/// SIGTERM and SIGINT, installed once and awaited as often as needed.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
