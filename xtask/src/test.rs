//! `cargo xtask test`: the whole suite, installing what it needs on the way.
//!
//! Stages: Debian packages, rustfmt check, clippy (-D warnings), the Kubernetes and node tools,
//! Debian's Prometheus and promtool (for the alert rules' tests), Apache Kafka's distribution (its
//! CLI tools drive many tests), our OCI images, every test
//! compiled, then the local cluster with a real node (started once for the whole run in its own
//! directory; each scenario gets its own namespace) while `cargo test --workspace` runs (unit,
//! broker integration with librdkafka and hostile input, chaos, control plane, operator, alert
//! rules, end to end on the node, host footprint), the cluster stopped again, and finally the
//! real-client compatibility suite (confluent-kafka, kafka-python, Apache Kafka's CLI tools and
//! Java client) against a release build of the broker.

use std::path::PathBuf;
use std::process::Command;

use crate::process::{cache_dir, cargo, repo_root, run};

pub fn run_all(args: &[String]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    report_free_disk("start");
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
    crate::tools::run(&[])?;
    let prometheus = prometheus_bin()?;
    // Broker, operator and e2e tests drive Apache Kafka's CLI tools; installed here, once, so a
    // cold cache costs one stage of its own rather than minutes inside some test's timeout.
    kafka_distribution()?;
    let images: Vec<PathBuf> = crate::image::build_images(true, true)?
        .into_iter()
        .map(|(archive, _)| archive)
        .collect();
    // Its own cluster directory: a cluster from `cargo xtask up` (with a cluster-wide operator
    // that would reconcile the scenarios' resources too) is never reused by the suite.
    let dir = crate::up::target_dir().join("fjord-cluster-e2e");
    // Compile every test first: the cluster then runs only while tests run, and the volume
    // provisioner it needs is built with the same features as everything else.
    run(
        "build every test (cargo test --workspace --no-run)",
        cargo().args(["test", "--workspace", "--no-run"]),
    )?;
    report_free_disk("every test built");
    let already_running = fjord_e2e::cluster::Cluster::find_running(&dir).is_some();
    crate::cluster::up_with_node(&dir, &images)?;
    let tests = run(
        "cargo test --workspace (unit, broker integration and chaos, control plane, operator, end to end on the node)",
        cargo()
            .args(["test", "--workspace"])
            .env("FJORD_CLUSTER_DIR", &dir)
            .env("FJORD_PROMETHEUS_BIN", &prometheus),
    );
    if !already_running {
        let stopped = fjord_e2e::cluster::Cluster::down(&dir);
        eprintln!(
            "==> local cluster stopped ({} processes)",
            stopped.map(|s| s.len()).unwrap_or(0)
        );
    }
    tests?;
    let env = prepare_client_env()?;
    let mut pytest = Command::new(env.python);
    pytest
        // -rs: every skipped test is listed with its reason in the summary.
        .args(["-m", "pytest", "tests/compat", "-q", "-rs"])
        .args(args)
        // The broker this command just built, never one a shell variable points elsewhere.
        .env("FJORD_TEST_TARGET", "fjord")
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
    crate::image::release_build()?;
    run(
        "Python test environment",
        Command::new("bash").arg("scripts/python-env.sh"),
    )?;
    kafka_distribution()?;
    Ok(ClientEnv {
        python: cache_dir().join("venv").join("bin").join("python"),
        broker: crate::up::target_dir().join("release").join("fjord-broker"),
    })
}

/// Apache Kafka's broker, CLI tools and Java client (`scripts/kafka-dist.sh`, cached).
fn kafka_distribution() -> anyhow::Result<()> {
    run(
        "Apache Kafka distribution",
        Command::new("bash").arg("scripts/kafka-dist.sh"),
    )
}

/// Debian's Prometheus and promtool (`scripts/prometheus-dist.sh`, cached): the alert rules'
/// tests run them. Returns their bin dir (the script's last line).
fn prometheus_bin() -> anyhow::Result<PathBuf> {
    let out = Command::new("bash")
        .arg("scripts/prometheus-dist.sh")
        .current_dir(repo_root())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "scripts/prometheus-dist.sh failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    anyhow::ensure!(
        !dir.is_empty(),
        "scripts/prometheus-dist.sh printed no bin dir"
    );
    eprintln!("==> Prometheus and promtool in {dir}");
    Ok(PathBuf::from(dir))
}

/// Prints the free space where the build writes: a CI machine once ran out while linking tests,
/// and the log should say how close a run came.
fn report_free_disk(stage: &str) {
    let target = crate::up::target_dir();
    let _ = std::fs::create_dir_all(&target);
    let free = Command::new("df")
        .args(["-h", "--output=avail"])
        .arg(&target)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.lines().nth(1).map(|l| l.trim().to_string()));
    eprintln!(
        "==> free disk at {stage}: {} ({})",
        free.as_deref().unwrap_or("unknown"),
        target.display()
    );
}
