//! `cargo xtask up`: the whole product on one machine, and `cargo xtask down` to remove it.
//!
//! `up` provisions the tools, starts the local cluster (control plane + a real node), builds and
//! imports our images, installs the operator with Helm, applies a three-broker `Kafka` with a
//! nodeport listener, waits for it to be Ready, creates a `KafkaTopic`, produces and consumes a
//! few records from the host with Apache Kafka's own console clients, and ends with the line
//! `bootstrap.servers=HOST:PORT`. With `--kube-context NAME` it uses an existing cluster instead
//! of starting one (our images must already be available to that cluster's nodes).
//!
//! `up --broker` is the quick path: one broker process on 127.0.0.1:9092 with embedded defaults.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fjord_e2e::control_plane;
use fjord_e2e::tools::Tools;

use crate::process::repo_root;
use crate::progress::Progress;

const USAGE: &str = "usage: cargo xtask up [--kube-context NAME]   the whole product: cluster, images, operator, a 3-broker Kafka
       cargo xtask up --broker [-- BROKER ARGS]   one broker process on 127.0.0.1:9092
       cargo xtask down [--kube-context NAME]";

/// Where `up` puts the demo cluster and the operator.
const KAFKA_NAMESPACE: &str = "kafka";
const OPERATOR_NAMESPACE: &str = "fjord-system";
const RELEASE: &str = "fjord";
const KAFKA_NAME: &str = "my-cluster";
const TOPIC: &str = "hello-fjord";

pub fn run_up(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--broker") {
        let rest: Vec<String> = args[1..]
            .iter()
            .skip_while(|a| a.as_str() == "--")
            .cloned()
            .collect();
        return run_broker(&rest);
    }
    let context = parse_context(args)?;
    let mut progress = Progress::new(9);

    progress.step("system packages and tools (Kubernetes, containerd, runc, CNI, CoreDNS, helm)");
    crate::deps::ensure_system_packages()?;
    crate::tools::run(&[])?;

    progress.step("fjord-broker and fjord-operator images (release build, OCI archives)");
    let images: Vec<PathBuf> = crate::image::build_images(true, true)?
        .into_iter()
        .map(|(archive, _)| archive)
        .collect();

    let kube = match &context {
        None => {
            progress.step("local cluster (control plane + node) and image import");
            let dir = control_plane::default_dir();
            let cluster = crate::cluster::up_with_node(&dir, &images)?;
            Kube::Local {
                kubeconfig: cluster.control_plane.kubeconfig.clone(),
            }
        }
        Some(name) => {
            progress.step(&format!("existing cluster (kube context {name})"));
            eprintln!(
                "note: with --kube-context the images {} must be available to that cluster's nodes \
                 (there is no registry here); load them with your cluster's tooling, e.g. \
                 `ctr -n k8s.io images import <archive>` on each node",
                images
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Kube::Context(name.clone())
        }
    };

    progress.step("operator (helm upgrade --install charts/fjord-operator)");
    let chart = repo_root().join("charts").join("fjord-operator");
    kube.helm(&[
        "upgrade",
        "--install",
        RELEASE,
        &chart.display().to_string(),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "300s",
    ])?;

    progress.step("Kafka resource with 3 brokers and a nodeport listener (waiting for Ready)");
    kube.kubectl(&["create", "namespace", KAFKA_NAMESPACE]).ok();
    let example = repo_root().join("examples").join("kafka-nodeport.yaml");
    kube.kubectl(&[
        "-n",
        KAFKA_NAMESPACE,
        "apply",
        "-f",
        &example.display().to_string(),
    ])?;
    kube.wait_for(
        &format!("Kafka {KAFKA_NAME} Ready"),
        Duration::from_secs(600),
        &[
            "-n",
            KAFKA_NAMESPACE,
            "get",
            "kafka",
            KAFKA_NAME,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
    )?;

    progress.step(&format!("KafkaTopic {TOPIC}"));
    let topic = format!(
        "apiVersion: kafka.fjord.dev/v1\nkind: KafkaTopic\nmetadata:\n  name: {TOPIC}\n  labels:\n    kafka.fjord.dev/cluster: {KAFKA_NAME}\nspec:\n  partitions: 3\n  replicas: 3\n"
    );
    let topic_file = crate::up::target_dir().join("xtask-up-topic.yaml");
    std::fs::write(&topic_file, topic)?;
    kube.kubectl(&[
        "-n",
        KAFKA_NAMESPACE,
        "apply",
        "-f",
        &topic_file.display().to_string(),
    ])?;
    kube.wait_for(
        &format!("KafkaTopic {TOPIC} Ready"),
        Duration::from_secs(120),
        &[
            "-n",
            KAFKA_NAMESPACE,
            "get",
            "kafkatopic",
            TOPIC,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
    )?;

    let bootstrap = kube
        .kubectl(&[
            "-n",
            KAFKA_NAMESPACE,
            "get",
            "kafka",
            KAFKA_NAME,
            "-o",
            "jsonpath={.status.listeners[?(@.name==\"external\")].bootstrapServers}",
        ])?
        .trim()
        .to_string();
    if bootstrap.is_empty() {
        bail!("Kafka {KAFKA_NAME} is Ready but reports no bootstrap address for its external listener");
    }

    progress.step("produce and consume from the host (Apache Kafka's console clients)");
    let kafka_bin = kafka_cli_dir()?;
    smoke_test(&kafka_bin, &bootstrap)?;

    progress.step("summary");
    progress.finish();
    println!();
    match &kube {
        Kube::Local { kubeconfig } => {
            println!("export KUBECONFIG={}", kubeconfig.display());
            println!(
                "export PATH={}:{}:$PATH",
                Tools::location().bin_dir().display(),
                kafka_bin.display()
            );
        }
        Kube::Context(name) => println!("kubectl config use-context {name}"),
    }
    println!(
        "{}",
        kube.kubectl(&["-n", KAFKA_NAMESPACE, "get", "kafka"])?
            .trim_end()
    );
    println!(
        "try: kafka-console-producer --bootstrap-server {bootstrap} --topic {TOPIC}   (stop everything: cargo xtask down)"
    );
    println!("bootstrap.servers={bootstrap}");
    Ok(())
}

pub fn run_down(args: &[String]) -> Result<()> {
    match parse_context(args)? {
        None => {
            let dir = control_plane::default_dir();
            let stopped = fjord_e2e::cluster::Cluster::down(&dir)?;
            println!(
                "local cluster in {}: stopped {} processes; data removed, logs kept in {}",
                dir.display(),
                stopped.len(),
                dir.join("logs").display()
            );
        }
        Some(name) => {
            let kube = Kube::Context(name);
            kube.kubectl(&[
                "-n",
                KAFKA_NAMESPACE,
                "delete",
                "kafkatopic,kafka",
                "--all",
                "--wait=true",
            ])
            .ok();
            kube.helm(&["uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE])?;
            println!("removed the demo Kafka and the operator release {RELEASE}");
        }
    }
    Ok(())
}

fn parse_context(args: &[String]) -> Result<Option<String>> {
    match args {
        [] => Ok(None),
        [flag, name] if flag == "--kube-context" => Ok(Some(name.clone())),
        [flag] if flag.starts_with("--kube-context=") => {
            Ok(Some(flag["--kube-context=".len()..].to_string()))
        }
        _ => bail!("{USAGE}"),
    }
}

/// Where kubectl and helm point: the local cluster's kubeconfig or a named context.
enum Kube {
    Local { kubeconfig: PathBuf },
    Context(String),
}

impl Kube {
    fn env(&self, command: &mut Command) {
        match self {
            Kube::Local { kubeconfig } => {
                command.env("KUBECONFIG", kubeconfig);
            }
            Kube::Context(_) => {}
        }
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let tools = Tools::location();
        let mut command = Command::new(tools.kubectl());
        self.env(&mut command);
        if let Kube::Context(name) = self {
            command.args(["--context", name]);
        }
        command.args(args);
        output(&mut command, &format!("kubectl {}", args.join(" ")))
    }

    fn helm(&self, args: &[&str]) -> Result<String> {
        let tools = Tools::location();
        let mut command = Command::new(tools.binary("helm"));
        self.env(&mut command);
        if let Kube::Context(name) = self {
            command.args(["--kube-context", name]);
        }
        command.args(args);
        output(&mut command, &format!("helm {}", args.join(" ")))
    }

    /// Polls `kubectl args` until it prints `wanted`, failing after `timeout` with what it said.
    fn wait_for(&self, what: &str, timeout: Duration, args: &[&str], wanted: &str) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.kubectl(args);
            if matches!(&last, Ok(out) if out.trim() == wanted) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let detail = match last {
                    Ok(out) => format!("last answer {:?}", out.trim()),
                    Err(e) => format!("{e:#}"),
                };
                bail!("{what}: not reached within {timeout:?} ({detail}); look at `kubectl get pods -A` and `kubectl describe`");
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

fn output(command: &mut Command, what: &str) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Apache Kafka's CLI tools (from Maven Central, cached): their bin directory.
fn kafka_cli_dir() -> Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts").join("kafka-dist.sh"))
        .output()
        .context("running scripts/kafka-dist.sh")?;
    if !out.status.success() {
        bail!(
            "scripts/kafka-dist.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(dir))
}

/// Produces three records with `kafka-console-producer` and reads them back with
/// `kafka-console-consumer`, both from the host through the nodeport listener.
fn smoke_test(kafka_bin: &Path, bootstrap: &str) -> Result<()> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let records: Vec<String> = (1..=3)
        .map(|i| format!("hello from the host {stamp}-{i}"))
        .collect();
    let mut producer = Command::new(kafka_bin.join("kafka-console-producer"));
    producer
        .args(["--bootstrap-server", bootstrap, "--topic", TOPIC])
        .args(["--producer-property", "acks=all"])
        .stdin(std::process::Stdio::piped());
    let mut child = producer
        .spawn()
        .context("starting kafka-console-producer")?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("producer stdin")?;
        for record in &records {
            writeln!(stdin, "{record}")?;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("kafka-console-producer against {bootstrap} failed ({status})");
    }
    let out = Command::new(kafka_bin.join("kafka-console-consumer"))
        .args(["--bootstrap-server", bootstrap, "--topic", TOPIC])
        .args(["--from-beginning", "--timeout-ms", "30000"])
        .output()
        .context("running kafka-console-consumer")?;
    let consumed = String::from_utf8_lossy(&out.stdout);
    for record in &records {
        if !consumed.lines().any(|l| l == record) {
            bail!(
                "kafka-console-consumer against {bootstrap} did not return {record:?} (got {:?}; stderr {})",
                consumed.lines().collect::<Vec<_>>(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    println!(
        "    produced and consumed {} records from the host via {bootstrap}",
        records.len()
    );
    Ok(())
}

/// The quick path: build the broker and run it in the foreground with the embedded defaults
/// (127.0.0.1:9092, admin on 127.0.0.1:9644, data in ./data). Extra arguments are passed on.
pub fn run_broker(args: &[String]) -> Result<()> {
    crate::image::release_build()?;
    let bin = target_dir().join("release").join("fjord-broker");
    eprintln!("==> {} {}", bin.display(), args.join(" "));
    eprintln!("    Kafka: 127.0.0.1:9092   metrics: http://127.0.0.1:9644/metrics   data: ./data   (Ctrl-C stops)");
    let err = Command::new(&bin).args(args).exec();
    Err(anyhow::anyhow!("could not start {}: {err}", bin.display()))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}
