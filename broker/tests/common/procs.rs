//! A cluster of real `fjord-broker` processes (combined broker+controller nodes) on 127.0.0.x
//! addresses, for tests that kill brokers: SIGKILL, SIGTERM, restart, wipe.
//! Include with `#[path = "common/procs.rs"] mod procs;`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CLUSTER_ID: &str = "UmVwbGljYXRpb25UZXN0MQ";

pub struct ProcNode {
    pub id: i32,
    pub host: String,
    pub kafka_port: u16,
    pub controller_port: u16,
    pub admin_port: u16,
    pub dir: PathBuf,
    pub child: Option<Child>,
    log: PathBuf,
}

pub struct ProcCluster {
    pub nodes: Vec<ProcNode>,
    voters: String,
    /// Nodes with an index >= this are broker-only (Raft learners).
    voter_count: usize,
    /// Name of the client (and inter-broker) listener.
    pub listener: String,
    extra: Vec<(String, String)>,
}

/// A free port below the kernel's ephemeral range (32768 and up here). A port the kernel picks
/// for `bind(0)` comes from that range, and once released it can become the source port of any
/// outgoing connection before the broker binds it (seen in CI: "Address already in use" on a
/// controller listener while other tests and a local Kubernetes node were busy).
fn unused_port(host: &str) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (start.wrapping_add(n.wrapping_mul(97)) % 12_000) as u16;
        if std::net::TcpListener::bind((host, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {host} between 20000 and 31999");
}

pub fn free_port(host: &str) -> u16 {
    unused_port(host)
}

impl ProcCluster {
    /// Starts `n` nodes (ids 0..n, node i on 127.0.0.(i+1)) with `extra` overrides for all.
    pub fn start(root: &Path, n: usize, extra: &[(&str, &str)]) -> ProcCluster {
        Self::start_mixed(root, n, 0, extra)
    }

    /// `voters` combined broker+controller nodes, then `brokers_only` broker-only nodes.
    pub fn start_mixed(
        root: &Path,
        voters: usize,
        brokers_only: usize,
        extra: &[(&str, &str)],
    ) -> ProcCluster {
        let n = voters + brokers_only;
        let mut nodes = Vec::new();
        for id in 0..n as i32 {
            let host = format!("127.0.0.{}", id + 1);
            nodes.push(ProcNode {
                id,
                kafka_port: free_port(&host),
                controller_port: free_port(&host),
                admin_port: free_port(&host),
                dir: root.join(format!("node-{id}")),
                log: root.join(format!("node-{id}.log")),
                host,
                child: None,
            });
        }
        let voter_count = voters;
        let voters = nodes
            .iter()
            .take(voter_count)
            .map(|n| format!("{}@{}:{}", n.id, n.host, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = ProcCluster {
            nodes,
            voters,
            voter_count,
            listener: extra
                .iter()
                .find(|(k, _)| *k == "fjord.test.listener")
                .map_or("PLAINTEXT".to_string(), |(_, v)| v.to_string()),
            extra: extra
                .iter()
                .filter(|(k, _)| *k != "fjord.test.listener")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_ready_all();
        cluster
    }

    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}:{}", n.host, n.kafka_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `i`'s process (again).
    pub fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut args: Vec<(String, String)> = vec![
            ("node.id".into(), node.id.to_string()),
            (
                "process.roles".into(),
                if i < self.voter_count {
                    "broker,controller"
                } else {
                    "broker"
                }
                .into(),
            ),
            ("controller.quorum.voters".into(), self.voters.clone()),
            ("controller.listener.names".into(), "CONTROLLER".into()),
            (
                "listeners".into(),
                format!(
                    "{l}://{h}:{k},CONTROLLER://{h}:{c}",
                    l = self.listener,
                    h = node.host,
                    k = node.kafka_port,
                    c = node.controller_port
                ),
            ),
            (
                "listener.security.protocol.map".into(),
                format!("{}:PLAINTEXT,CONTROLLER:PLAINTEXT", self.listener),
            ),
            (
                "admin.listener".into(),
                format!("{}:{}", node.host, node.admin_port),
            ),
            ("log.dirs".into(), node.dir.display().to_string()),
            ("cluster.id".into(), CLUSTER_ID.into()),
            ("group.initial.rebalance.delay.ms".into(), "100".into()),
            ("broker.session.timeout.ms".into(), "3000".into()),
            ("broker.heartbeat.interval.ms".into(), "300".into()),
            ("replica.lag.time.max.ms".into(), "5000".into()),
            ("fjord.test.fault.hooks".into(), "true".into()),
        ];
        for (k, v) in &self.extra {
            args.retain(|(ak, _)| ak != k);
            args.push((k.clone(), v.clone()));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fjord-broker"));
        for (k, v) in args {
            cmd.arg("--override").arg(format!("{k}={v}"));
        }
        let child = cmd
            .env("FJORD_LOG", "info,openraft=warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("fjord-broker starts");
        self.nodes[i].child = Some(child);
    }

    /// SIGKILL: no flush, no controlled shutdown.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the process to exit (controlled shutdown).
    pub fn terminate(&mut self, i: usize) -> Duration {
        self.terminate_with_status(i).0
    }

    /// [`ProcCluster::terminate`], also returning how the process exited (`None` if it was
    /// not running).
    pub fn terminate_with_status(
        &mut self,
        i: usize,
    ) -> (Duration, Option<std::process::ExitStatus>) {
        let started = Instant::now();
        let mut status = None;
        if let Some(mut c) = self.nodes[i].child.take() {
            // SAFETY: kill only sends a signal to our own child process; no memory is involved.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(s) = c.try_wait().unwrap() {
                    status = Some(s);
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("node {i} did not exit within 60 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (started.elapsed(), status)
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// The value of the unlabelled metric `name` on node `i` (from its `/metrics`).
    pub fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let (_, body) = self.admin_get(i, "/metrics")?;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// Every series of family `name` on node `i`'s `/metrics`: (labels, value). Empty when
    /// the node does not answer.
    pub fn series(&self, i: usize, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let Some((_, body)) = self.admin_get(i, "/metrics") else {
            return Vec::new();
        };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (family, labels) = match series.split_once('{') {
                    Some((f, rest)) => (f, rest.strip_suffix('}')?),
                    None => (series, ""),
                };
                if family != name {
                    return None;
                }
                let labels = labels
                    .split(',')
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_string(), v.trim_matches('"').to_string()))
                    })
                    .collect();
                Some((labels, value.parse().ok()?))
            })
            .collect()
    }

    /// GET on node `i`'s admin endpoint: (status code, body).
    pub fn admin_get(&self, i: usize, path: &str) -> Option<(u16, String)> {
        use std::io::Write;
        let n = &self.nodes[i];
        let mut s = std::net::TcpStream::connect((n.host.as_str(), n.admin_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let status = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    }

    pub fn wait_ready(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.admin_get(i, "/v1/ready").map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "node {i} not ready in 60 s; log:\n{}",
                self.log_tail(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_ready_all(&self) {
        for i in 0..self.nodes.len() {
            if self.is_running(i) {
                self.wait_ready(i);
            }
        }
    }

    /// Turns a test fault hook on node `i` on or off (`pause-fetchers`, `isolate`).
    pub fn fault(&self, i: usize, name: &str, on: bool) {
        let path = format!("/v1/test/fault?{name}={}", u8::from(on));
        let answer = self.admin_get(i, &path);
        assert!(
            answer.as_ref().is_some_and(|(s, _)| *s == 200),
            "fault hook {path} on node {i}: {answer:?}"
        );
    }

    /// Node `i`'s Kafka address.
    pub fn addr(&self, i: usize) -> String {
        format!("{}:{}", self.nodes[i].host, self.nodes[i].kafka_port)
    }

    /// The last lines of node `i`'s log (for failure messages).
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Counts lines in node `i`'s log containing `needle`.
    pub fn log_count(&self, i: usize, needle: &str) -> usize {
        std::fs::read_to_string(&self.nodes[i].log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A scratch directory for a cluster; kept (and printed) when `FJORD_KEEP_TEST_DIRS` is set,
/// so broker logs can be read after a failure.
pub fn test_dir() -> TestDir {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("FJORD_KEEP_TEST_DIRS").is_some() {
        let path = dir.keep();
        println!("test directory kept: {}", path.display());
        return TestDir { path, _guard: None };
    }
    TestDir {
        path: dir.path().to_path_buf(),
        _guard: Some(dir),
    }
}

pub struct TestDir {
    path: PathBuf,
    _guard: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A partition as a client's metadata describes it: (leader, replicas in assignment order,
/// sorted ISR).
pub type Described = (i32, Vec<i32>, Vec<i32>);

/// `topic`'s partitions as librdkafka's metadata from `bootstrap` describes them (empty when
/// no metadata came back in 5 s).
pub fn describe_topic(bootstrap: &str, topic: &str) -> BTreeMap<i32, Described> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("a librdkafka consumer");
    let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    md.topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
        .map(|p| {
            let mut isr = p.isr().to_vec();
            isr.sort_unstable();
            (p.id(), (p.leader(), p.replicas().to_vec(), isr))
        })
        .collect()
}

/// Creates `topic` as the replication tests want it: `partitions` partitions, replication
/// factor 3, `min.insync.replicas=2`, through librdkafka's admin client (`client` may add
/// security settings). Panics if the broker refuses.
pub fn create_replicated_topic(
    rt: &tokio::runtime::Runtime,
    client: rdkafka::ClientConfig,
    topic: &str,
    partitions: i32,
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = client.create().expect("an admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2");
    let created = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("CreateTopics answered");
    assert!(created[0].is_ok(), "{created:?}");
}

/// Polls `check` every 100 ms until it holds, for up to `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
