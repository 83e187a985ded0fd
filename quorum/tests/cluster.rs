//! Three quorum nodes on 127.0.0.1 in one process, talking over real TCP: a leader is elected,
//! writes through any node are applied everywhere in the same order, the leader can be stopped
//! and a new one takes over, and a restarted node catches up (from a snapshot when the log it
//! missed was compacted away). A stopped node closes the peer connections it was serving.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_quorum::{Applier, QuorumConfig, QuorumNode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The application state: every command in apply order.
#[derive(Default)]
struct Recorder(Mutex<Vec<Value>>);

impl Applier for Recorder {
    fn apply(&self, command: &Value) {
        self.0.lock().unwrap().push(command.clone());
    }
    fn snapshot(&self) -> Value {
        Value::Array(self.0.lock().unwrap().clone())
    }
    fn restore(&self, state: Value) -> Result<(), fjord_quorum::RestoreError> {
        let list = state.as_array().ok_or("snapshot is not a list")?.clone();
        *self.0.lock().unwrap() = list;
        Ok(())
    }
}

impl Recorder {
    fn values(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }
}

async fn start(
    id: u64,
    dir: &Path,
    voters: &BTreeMap<u64, String>,
    listener: TcpListener,
) -> (QuorumNode, Arc<Recorder>) {
    start_keeping(id, dir, voters, listener, 0).await
}

/// [`start`] keeping `keep` entries in the log after each snapshot (the broker keeps 500).
async fn start_keeping(
    id: u64,
    dir: &Path,
    voters: &BTreeMap<u64, String>,
    listener: TcpListener,
    keep: u64,
) -> (QuorumNode, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let config = QuorumConfig {
        node_id: id,
        dir: dir.join(id.to_string()),
        voters: voters.clone(),
        snapshot_every: 20,
        keep_after_snapshot: keep,
        learner_addr: None,
        tls: None,
    };
    let node = QuorumNode::start(config, listener, recorder.clone())
        .await
        .expect("node starts");
    (node, recorder)
}

type Nodes = BTreeMap<u64, (QuorumNode, Arc<Recorder>)>;

/// Three voters on loopback ports, each keeping `keep` entries after a snapshot.
async fn three_voters(dir: &Path, keep: u64) -> (BTreeMap<u64, String>, Nodes) {
    let mut listeners = BTreeMap::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        voters.insert(id, l.local_addr().unwrap().to_string());
        listeners.insert(id, l);
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        nodes.insert(id, start_keeping(id, dir, &voters, l, keep).await);
    }
    (voters, nodes)
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn elects_replicates_fails_over_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let (voters, mut nodes) = three_voters(dir.path(), 0).await;

    let leader = nodes[&1].0.wait_for_leader(Duration::from_secs(10)).await;
    let leader = leader.expect("a leader within 10 s");
    let follower = *voters.keys().find(|id| **id != leader).unwrap();

    // Writes through the leader and through a follower (forwarded) are applied everywhere.
    for i in 0..30 {
        let via = if i % 2 == 0 { leader } else { follower };
        nodes[&via]
            .0
            .write(json!({ "n": i }))
            .await
            .expect("write commits");
    }
    let expected: Vec<Value> = (0..30).map(|i| json!({ "n": i })).collect();
    for (id, (_, recorder)) in &nodes {
        wait_until(&format!("node {id} applied 30 writes"), || {
            recorder.values() == expected
        })
        .await;
    }

    // Stop the leader: the other two elect a new one and keep accepting writes.
    let (old_leader, _) = nodes.remove(&leader).unwrap();
    old_leader.shutdown().await;
    let survivor = *nodes.keys().next().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match nodes[&survivor].0.leader().await {
            Some(l) if l != leader => break,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader after failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 30..60 {
        nodes[&survivor]
            .0
            .write(json!({ "n": i }))
            .await
            .expect("write after failover");
    }

    // Snapshots are built in the background: wait until the survivor compacted past what the
    // stopped node has.
    let metrics = nodes[&survivor].0.metrics();
    wait_until(
        "the survivor compacted what the stopped node missed",
        || metrics.borrow().purged.is_some_and(|p| p.index > 31),
    )
    .await;

    // The old leader restarts from its directory (its own snapshot plus log) and catches up
    // through an installed snapshot, since the entries it missed were compacted away.
    let listener = TcpListener::bind(&voters[&leader]).await.unwrap();
    let (restarted, recorder) = start(leader, dir.path(), &voters, listener).await;
    let expected: Vec<Value> = (0..60).map(|i| json!({ "n": i })).collect();
    wait_until("the restarted node caught up", || {
        recorder.values() == expected
    })
    .await;
    assert!(restarted.last_applied_index().unwrap() >= 60);
    restarted.shutdown().await;
    for (_, (node, _)) in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_quorum_port_is_refused_and_the_node_keeps_working() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let voters = BTreeMap::from([(1u64, addr.clone())]);
    let (node, recorder) = start(1, dir.path(), &voters, listener).await;

    let hostile: [&[u8]; 3] = [
        &[0xff, 0xff, 0xff, 0xff],
        b"\x00\x00\x00\x05{{{{{",
        b"\x00\x00\x00\x10{\"Vote\":{\"x\":1}}",
    ];
    for bytes in hostile {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the node closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0, "no answer to garbage");
    }
    node.write(json!("still-works"))
        .await
        .expect("write after garbage");
    wait_until("applied", || {
        recorder.values() == vec![json!("still-works")]
    })
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_connections_it_was_serving() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let voters = BTreeMap::from([(1u64, addr.clone())]);
    let (node, _recorder) = start(1, dir.path(), &voters, listener).await;
    // A peer connection that sent nothing yet: its task waits for a request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.shutdown().await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the stopped node closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "closed, not answered");
}

/// Three voters keeping 10 entries after a snapshot; a follower is stopped after 30 writes and
/// 70 more commit without it. Returns the voters, the running nodes, the leader and the stopped
/// follower.
async fn a_follower_stopped_while_100_writes_commit(
    dir: &Path,
) -> (BTreeMap<u64, String>, Nodes, u64, u64) {
    let (voters, mut nodes) = three_voters(dir, 10).await;
    let leader = nodes[&1]
        .0
        .wait_for_leader(Duration::from_secs(10))
        .await
        .expect("a leader within 10 s");
    let lost = *voters.keys().find(|id| **id != leader).unwrap();
    for i in 0..30 {
        nodes[&leader].0.write(json!({ "n": i })).await.unwrap();
    }
    let (stopped, _) = nodes.remove(&lost).unwrap();
    stopped.shutdown().await;
    for i in 30..100 {
        nodes[&leader].0.write(json!({ "n": i })).await.unwrap();
    }
    (voters, nodes, leader, lost)
}

/// A voter that lost its disk (ephemeral storage, a replaced volume) restarts with an empty log
/// while the others run on and the leader compacted what it missed: it catches up from the
/// leader's snapshot and log and keeps working. (The next test covers a leader that cannot reach
/// it at first.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_that_lost_its_disk_rejoins_from_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (voters, nodes, leader, lost) =
        a_follower_stopped_while_100_writes_commit(dir.path()).await;
    let metrics = nodes[&leader].0.metrics();
    wait_until("the leader compacted its log", || {
        metrics.borrow().purged.is_some_and(|p| p.index > 60)
    })
    .await;

    std::fs::remove_dir_all(dir.path().join(lost.to_string())).unwrap();
    let listener = TcpListener::bind(&voters[&lost]).await.unwrap();
    let (rejoined, recorder) = start_keeping(lost, dir.path(), &voters, listener, 10).await;
    let expected: Vec<Value> = (0..100).map(|i| json!({ "n": i })).collect();
    wait_until("the node that lost its disk caught up", || {
        recorder.values() == expected
    })
    .await;
    // Its Raft core still runs: a write through it is forwarded, committed and applied.
    rejoined
        .write(json!({ "n": 100 }))
        .await
        .expect("write via the rejoined node");
    wait_until("the rejoined node applied its own write", || {
        recorder.values().len() == 101
    })
    .await;
    rejoined.shutdown().await;
    for (_, (node, _)) in nodes {
        node.shutdown().await;
    }
}

/// Forwards every connection accepted on `listener` to `target` (a stand-in for a DNS name
/// that starts resolving late).
async fn forward(listener: TcpListener, target: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// A voter that lost its disk and that the leader cannot reach at first (on Kubernetes: a
/// recreated pod whose new address the leader learns only after DNS and its reconnect backoff
/// catch up) while writes go on. It must not propose a configuration of its own: it once did
/// after waiting 3 s, its elections bumped the running quorum's term, and in the roll test its
/// Raft core then stopped on a log it could not apply. It asks the other voters instead, waits
/// for the leader, and catches up without any election.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_that_lost_its_disk_and_is_unreachable_at_first_waits_for_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (voters, nodes, leader, lost) =
        a_follower_stopped_while_100_writes_commit(dir.path()).await;
    let term_before = nodes[&leader].0.position().term;
    std::fs::remove_dir_all(dir.path().join(lost.to_string())).unwrap();

    // The node listens on a port of its own; its voter address forwards there only after 5 s.
    let private = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let private_addr = private.local_addr().unwrap().to_string();
    let public = voters[&lost].clone();
    let proxy = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let listener = TcpListener::bind(&public).await.unwrap();
        forward(listener, private_addr).await;
    });
    let writer = &nodes[&leader].0;
    let writes = async {
        for i in 100..400 {
            writer
                .write(json!({ "n": i }))
                .await
                .expect("write commits");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((rejoined, recorder), ()) = tokio::join!(
        start_keeping(lost, dir.path(), &voters, private, 10),
        writes
    );
    let expected: Vec<Value> = (0..400).map(|i| json!({ "n": i })).collect();
    wait_until("the node that lost its disk caught up", || {
        recorder.values() == expected
    })
    .await;
    rejoined
        .write(json!({ "n": 400 }))
        .await
        .expect("write via the rejoined node");
    let position = nodes[&leader].0.position();
    assert_eq!(
        (position.leader, position.term),
        (Some(leader), term_before),
        "the rejoining voter caused an election"
    );
    proxy.abort();
    rejoined.shutdown().await;
    for (_, (node, _)) in nodes {
        node.shutdown().await;
    }
}
