//! Apache Kafka's own CLI tools (installed and cached by `scripts/kafka-dist.sh`), for tests
//! that check fjord with them. Include with `#[path = "common/kafka_cli.rs"] mod kafka_cli;`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Bin dir of the CLI tools (`KAFKA_BIN_DIR` overrides the cached install).
pub fn kafka_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("KAFKA_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-dist.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/kafka-dist.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().unwrap_or("").trim())
}

/// Runs one of the tools: (succeeded, stdout, stderr); the exchange goes to the test output.
pub fn run_cli(tool: &str, args: &[&str]) -> (bool, String, String) {
    let bin = kafka_bin_dir().join(tool);
    let out = Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!(
        "$ {tool} {}\n{stdout}{}",
        args.join(" "),
        if out.status.success() {
            String::new()
        } else {
            format!("[exit {:?}] {stderr}", out.status.code())
        }
    );
    (out.status.success(), stdout, stderr)
}

/// Runs a tool that must succeed; returns its stdout.
pub fn kafka_cli(tool: &str, args: &[&str]) -> String {
    let (ok, stdout, stderr) = run_cli(tool, args);
    assert!(ok, "{tool} {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}
