//! Apache Kafka's own CLI tools against the cluster, so a scenario checks what a user's
//! `kafka-topics --describe` shows rather than only what our own clients decode.
//! `scripts/kafka-dist.sh` installs the tools once (cached under ~/.cache/fjord).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

/// The directory of the Kafka CLI wrappers (`kafka-topics`, ...), installing them if needed.
pub fn kafka_bin_dir() -> Result<PathBuf> {
    let script = fjord_e2e::scenario::repo_root().join("scripts/kafka-dist.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .context("kafka-dist.sh printed nothing")?;
    Ok(PathBuf::from(dir.trim()))
}

/// Runs one Kafka CLI tool; its stdout, or an error with its stderr.
pub fn kafka_tool(tool: &str, args: &[&str]) -> Result<String> {
    let path = kafka_bin_dir()?.join(tool);
    let out = Command::new(&path)
        .args(args)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What `kafka-topics --describe` says of a topic: its replication factor and each
/// partition's replica list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedTopic {
    pub replication_factor: usize,
    pub replicas: BTreeMap<i32, Vec<i32>>,
}

pub fn describe_topic(bootstrap: &str, topic: &str) -> Result<DescribedTopic> {
    let text = kafka_tool(
        "kafka-topics",
        &[
            "--bootstrap-server",
            bootstrap,
            "--describe",
            "--topic",
            topic,
        ],
    )?;
    parse_describe(&text).with_context(|| format!("kafka-topics --describe said:\n{text}"))
}

/// Parses `kafka-topics --describe` output: a header line with `ReplicationFactor: N`, then a
/// line per partition with `Partition: P` and `Replicas: a,b,c` (tab separated).
fn parse_describe(text: &str) -> Result<DescribedTopic> {
    let field = |line: &str, name: &str| -> Option<String> {
        line.split('\t')
            .map(str::trim)
            .find_map(|f| f.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let mut replication_factor = None;
    let mut replicas = BTreeMap::new();
    for line in text.lines() {
        if let Some(rf) = field(line, "ReplicationFactor:") {
            replication_factor = Some(rf.parse()?);
        }
        if let (Some(p), Some(list)) = (field(line, "Partition:"), field(line, "Replicas:")) {
            let list = list
                .split(',')
                .filter(|b| !b.is_empty())
                .map(str::parse)
                .collect::<Result<Vec<i32>, _>>()?;
            replicas.insert(p.parse()?, list);
        }
    }
    Ok(DescribedTopic {
        replication_factor: replication_factor.context("no ReplicationFactor")?,
        replicas,
    })
}

#[test]
fn describe_output_is_parsed() {
    let text = "Topic: t\tTopicId: abc\tPartitionCount: 2\tReplicationFactor: 3\tConfigs: \n\
                \tTopic: t\tPartition: 0\tLeader: 1\tReplicas: 1,2,0\tIsr: 1,2,0\tElr: \tLastKnownElr: \n\
                \tTopic: t\tPartition: 1\tLeader: 2\tReplicas: 2,0,1\tIsr: 2,0\n";
    let d = parse_describe(text).unwrap();
    assert_eq!(d.replication_factor, 3);
    assert_eq!(d.replicas[&0], vec![1, 2, 0]);
    assert_eq!(d.replicas[&1], vec![2, 0, 1]);
    assert!(parse_describe("nothing").is_err());
}
