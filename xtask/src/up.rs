//! `cargo xtask up`: build the broker and run it in the foreground with the embedded defaults
//! (127.0.0.1:9092, admin on 127.0.0.1:9644, data in ./data under the current folder).
//! Extra arguments are passed to `fjord-broker` (e.g. `--override num.partitions=3`).

use std::os::unix::process::CommandExt;

use crate::process::{cargo, repo_root, run};

pub fn run_broker(args: &[String]) -> anyhow::Result<()> {
    run(
        "build fjord-broker (release)",
        cargo().args(["build", "--release", "-p", "fjord-broker"]),
    )?;
    let bin = target_dir().join("release").join("fjord-broker");
    eprintln!("==> {} {}", bin.display(), args.join(" "));
    eprintln!("    Kafka: 127.0.0.1:9092   metrics: http://127.0.0.1:9644/metrics   data: ./data   (Ctrl-C stops)");
    let err = std::process::Command::new(&bin).args(args).exec();
    Err(anyhow::anyhow!("could not start {}: {err}", bin.display()))
}

pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}
