//! `cargo xtask bench [--records N] ...`: fjord-broker vs Apache Kafka on this machine, same run,
//! same settings; writes docs/benchmarks.md. Arguments go to scripts/bench.py.
//! `cargo xtask bench --cluster`: the same for 3-broker clusters (RF 3, acks=all); rewrites only
//! the "3 brokers" section of docs/benchmarks.md.

use std::process::Command;

use crate::process::run;

pub fn run_bench(args: &[String]) -> anyhow::Result<()> {
    let env = crate::test::prepare_client_env()?;
    let mut bench = Command::new(env.python);
    bench
        .arg("scripts/bench.py")
        .args(args)
        .env("FJORD_BROKER_BIN", env.broker);
    run("benchmark", &mut bench)
}
