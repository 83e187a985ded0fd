//! `cargo xtask bench [--records N] ...`: fjord-broker vs Apache Kafka on this machine, same run,
//! same settings; writes docs/benchmarks.md. Arguments go to scripts/bench.py.

use std::process::Command;

use crate::process::{cache_dir, cargo, run};

pub fn run_bench(args: &[String]) -> anyhow::Result<()> {
    run(
        "build fjord-broker (release)",
        cargo().args(["build", "--release", "-p", "fjord-broker"]),
    )?;
    run(
        "Python environment",
        Command::new("bash").arg("scripts/python-env.sh"),
    )?;
    run(
        "Apache Kafka distribution",
        Command::new("bash").arg("scripts/kafka-dist.sh"),
    )?;
    let python = cache_dir().join("venv").join("bin").join("python");
    let broker = crate::up::target_dir().join("release").join("fjord-broker");
    run(
        "benchmark",
        Command::new(python)
            .arg("scripts/bench.py")
            .args(args)
            .env("FJORD_BROKER_BIN", broker),
    )
}
