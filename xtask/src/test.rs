//! `cargo xtask test`: the whole suite, installing what it needs on the way.
//!
//! Stages: Debian packages, rustfmt check, clippy (-D warnings), Kubernetes tools for the
//! control-plane tests, `cargo test --workspace` (unit, broker integration with librdkafka,
//! operator/e2e integration against a real API server), then the real-client compatibility suite
//! (confluent-kafka, kafka-python, Apache Kafka's CLI tools and Java client) against a release
//! build of the broker.

use std::process::Command;

use crate::process::{cache_dir, cargo, repo_root, run};

pub fn run_all(args: &[String]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    crate::deps::ensure_system_packages()?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    run(
        "cargo clippy (-D warnings)",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    run(
        "Kubernetes tools (cached)",
        cargo().args(["xtask", "tools"]),
    )?;
    run(
        "cargo test --workspace",
        cargo().args(["test", "--workspace"]),
    )?;
    run(
        "build fjord-broker (release)",
        cargo().args(["build", "--release", "-p", "fjord-broker"]),
    )?;
    run(
        "Python test environment",
        Command::new("bash").arg("scripts/python-env.sh"),
    )?;
    run(
        "Apache Kafka distribution",
        Command::new("bash").arg("scripts/kafka-dist.sh"),
    )?;
    let python = cache_dir().join("venv").join("bin").join("python");
    let broker = crate::up::target_dir().join("release").join("fjord-broker");
    run(
        "real-client compatibility suite (pytest tests/compat)",
        Command::new(python)
            .args(["-m", "pytest", "tests/compat", "-q"])
            .args(args)
            .env("FJORD_BROKER_BIN", &broker)
            .current_dir(repo_root()),
    )?;
    eprintln!("==> all stages passed in {:.0?}", started.elapsed());
    Ok(())
}
