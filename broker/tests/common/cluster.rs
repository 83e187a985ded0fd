//! A cluster of brokers in one process (combined broker+controller nodes sharing metadata through
//! the fjord-quorum Raft log), each node on its own tokio runtime so it can be stopped alone.
//! Include with `#[path = "common/cluster.rs"] mod cluster;` (kept out of `common/mod.rs` so
//! tests that do not start a cluster carry none of it).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CLUSTER_ID: &str = "MkU3OEVBNTcwNTJENDM2Qk";

pub struct Node {
    pub id: i32,
    pub rt: tokio::runtime::Runtime,
    pub broker: Arc<fjord_broker::Broker>,
    /// The PLAINTEXT (Kafka) listener.
    pub addr: SocketAddr,
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

/// Free ports for `n` controller (quorum) listeners, and the matching
/// `controller.quorum.voters` value (`0@127.0.0.1:p0,1@...`).
pub fn voters(n: usize) -> (Vec<u16>, String) {
    let ports: Vec<u16> = (0..n).map(|_| unused_port("127.0.0.1")).collect();
    let voters = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{i}@127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    (ports, voters)
}

pub fn overrides(id: i32, dir: &Path, voters: &str, controller_port: u16) -> Vec<(String, String)> {
    [
        ("node.id", id.to_string()),
        ("process.roles", "broker,controller".into()),
        ("controller.quorum.voters", voters.into()),
        ("controller.listener.names", "CONTROLLER".into()),
        (
            "listeners",
            format!("PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{controller_port}"),
        ),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
        ),
        ("admin.listener", "127.0.0.1:0".into()),
        ("log.dirs", dir.join(id.to_string()).display().to_string()),
        ("cluster.id", CLUSTER_ID.into()),
        ("group.initial.rebalance.delay.ms", "100".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Starts node `id` (data under `dir/<id>`), retrying while its controller port is still held.
pub fn start(id: i32, dir: &Path, voters: &str, controller_port: u16) -> Node {
    let (config, _) =
        fjord_broker::Config::load(None, &overrides(id, dir, voters, controller_port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        match rt.block_on(fjord_broker::start(config.clone())) {
            Ok(running) => {
                return Node {
                    id,
                    rt,
                    broker: running.broker,
                    addr: running.kafka_addrs[0],
                }
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "node {id} did not start: {e:#}");
                rt.shutdown_timeout(Duration::from_secs(1));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Starts `n` nodes with ids `0..n` and waits until every node knows the quorum leader and
/// every broker's registration.
pub fn start_cluster(dir: &Path, n: usize) -> Vec<Node> {
    let (ports, voters) = voters(n);
    let nodes: Vec<Node> = (0..n)
        .map(|i| start(i as i32, dir, &voters, ports[i]))
        .collect();
    for node in &nodes {
        wait_until("every node knows the quorum leader", || {
            node.broker.cluster.leader().is_some()
        });
        wait_until("every broker registered on every node", || {
            node.broker.metadata.snapshot().brokers.len() == n
        });
    }
    nodes
}

pub fn stop(node: Node) {
    let Node { rt, broker, .. } = node;
    drop(broker);
    rt.shutdown_timeout(Duration::from_secs(5));
}

pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `host:port,...` of the nodes' Kafka listeners.
pub fn bootstrap(nodes: &[&Node]) -> String {
    nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
