//! `cargo xtask test`: the whole suite, installing what it needs on the way.
//!
//! Stages: Debian packages, rustfmt check, clippy (-D warnings), Kubernetes tools for the
//! control-plane tests, `cargo test --workspace` (unit, broker integration with librdkafka,
//! control-plane integration against a real API server), then the real-client compatibility
//! suite (confluent-kafka, kafka-python, Apache Kafka's CLI tools and Java client) against a
//! release build of the broker.

use std::path::PathBuf;
use std::process::Command;

use crate::process::{cache_dir, cargo, repo_root, run};

pub fn run_all(args: &[String]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    crate::deps::ensure_system_packages()?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    let clippy = [
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ];
    run("cargo clippy (-D warnings)", cargo().args(clippy))?;
    run(
        "Kubernetes tools (cached)",
        cargo().args(["xtask", "tools"]),
    )?;
    run(
        "cargo test --workspace",
        cargo().args(["test", "--workspace"]),
    )?;
    let env = prepare_client_env()?;
    let mut pytest = Command::new(env.python);
    pytest
        .args(["-m", "pytest", "tests/compat", "-q"])
        .args(args)
        .env("FJORD_BROKER_BIN", &env.broker)
        .current_dir(repo_root());
    run(
        "real-client compatibility suite (pytest tests/compat)",
        &mut pytest,
    )?;
    eprintln!("==> all stages passed in {:.0?}", started.elapsed());
    Ok(())
}

/// What the real-client suite and the benchmark need: a release broker, the Python venv and the
/// Apache Kafka distribution.
pub struct ClientEnv {
    pub python: PathBuf,
    pub broker: PathBuf,
}

pub fn prepare_client_env() -> anyhow::Result<ClientEnv> {
    let build = ["build", "--release", "-p", "fjord-broker"];
    run("build fjord-broker (release)", cargo().args(build))?;
    run(
        "Python test environment",
        Command::new("bash").arg("scripts/python-env.sh"),
    )?;
    run(
        "Apache Kafka distribution",
        Command::new("bash").arg("scripts/kafka-dist.sh"),
    )?;
    Ok(ClientEnv {
        python: cache_dir().join("venv").join("bin").join("python"),
        broker: crate::up::target_dir().join("release").join("fjord-broker"),
    })
}
