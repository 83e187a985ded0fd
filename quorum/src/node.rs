//! One quorum member: opens its log and state machine, serves RPCs, bootstraps the voter set on
//! first start, and accepts writes (forwarding them to the leader when it is not the leader).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, RaftMetrics, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::formation;
use crate::log_store::LogStore;
use crate::rpc::{self, MessageHandler, Network, PeerClient, QuorumTls};
use crate::state_machine::StateMachine;
use crate::{Applier, Command, Raft};

/// How long a write waits for a leader to be elected before giving up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// A quorum member's view of the quorum (`QuorumNode::position`). Roles use Kafka's names
/// (`leader`, `candidate`, `follower`, `observer` for a learner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumPosition {
    pub leader: Option<u64>,
    pub term: u64,
    pub role: &'static str,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
}

/// How a node is set up.
pub struct QuorumConfig {
    pub node_id: u64,
    /// Where the log, vote and snapshot live.
    pub dir: PathBuf,
    /// The voters (`controller.quorum.voters`): id -> `host:port` of their quorum listener.
    pub voters: BTreeMap<u64, String>,
    /// Take a snapshot (and drop older log entries) every this many applied entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so a briefly-absent follower catches up from the log
    /// instead of needing the whole snapshot.
    pub keep_after_snapshot: u64,
    /// A non-voter's own quorum address: it asks the leader to add it as a learner (it
    /// receives the log and never votes). `None` for voters.
    pub learner_addr: Option<String>,
    /// Mutual TLS on the quorum listener and to the peers; `None` is plain TCP.
    pub tls: Option<QuorumTls>,
}

/// Asks the voters, one after the other, to admit this node as a learner until it is in the
/// membership (the leader admits it; others refuse), then stops.
async fn join_as_learner(
    raft: Raft,
    node_id: u64,
    addr: String,
    voters: BTreeMap<u64, String>,
    tls: Option<QuorumTls>,
) {
    let message = serde_json::json!({"join": {"node_id": node_id, "addr": addr}});
    let mut attempts = 0u32;
    loop {
        let member = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&node_id)
            .is_some_and(|n| n.addr == addr);
        if member {
            tracing::info!(node_id, "joined the metadata quorum as a learner");
            return;
        }
        for (id, voter) in &voters {
            let answer = PeerClient::new(*id, voter.clone(), tls.clone())
                .send_message(message.clone())
                .await;
            if answer.is_ok() {
                break;
            }
        }
        attempts += 1;
        if attempts.is_multiple_of(30) {
            tracing::warn!(
                node_id,
                "still waiting to join the metadata quorum as a learner"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no quorum leader is known yet")]
    NoLeader,
    #[error("the write could not be committed: {0}")]
    Failed(String),
}

pub struct QuorumNode {
    pub node_id: u64,
    raft: Raft,
    state_machine: StateMachine,
    voters: BTreeMap<u64, String>,
    server: JoinHandle<()>,
    /// Getting this node into the quorum: an empty voter deciding between forming a new one
    /// and being filled by the running one ([`crate::formation`]), or a non-voter asking the
    /// leader to add it as a learner. (A node is one or the other, never both.)
    joining: Option<JoinHandle<()>>,
    handler: MessageHandler,
    tls: Option<QuorumTls>,
    /// A kept-open connection to the leader for messages: (leader id, client).
    leader_client: tokio::sync::Mutex<Option<(u64, PeerClient)>>,
}

impl QuorumNode {
    /// Starts the node serving RPCs on `listener` (already bound, so tests can use port 0).
    pub async fn start(
        config: QuorumConfig,
        listener: TcpListener,
        applier: Arc<dyn Applier>,
    ) -> anyhow::Result<QuorumNode> {
        let raft_config = Config {
            cluster_name: "fjord-metadata".into(),
            heartbeat_interval: 150,
            election_timeout_min: 600,
            election_timeout_max: 1200,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            purge_batch_size: 1,
            ..Config::default()
        }
        .validate()?;
        if config.learner_addr.is_some() && config.voters.contains_key(&config.node_id) {
            anyhow::bail!(
                "node {} is a voter; only non-voters join as learners",
                config.node_id
            );
        }
        let state_machine = StateMachine::open(&config.dir, applier)?;
        let log_store = LogStore::open(&config.dir, state_machine.durable_snapshot())?;
        let pristine = log_store.is_pristine();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network {
                tls: config.tls.clone(),
            },
            log_store,
            state_machine.clone(),
        )
        .await?;
        let handler = MessageHandler::default();
        let server = tokio::spawn(rpc::serve(
            raft.clone(),
            listener,
            handler.clone(),
            config.tls.clone(),
        ));
        let mut joining = None;
        if pristine && config.voters.contains_key(&config.node_id) {
            if config.voters.len() == 1 {
                formation::propose_initial_configuration(&raft, &config.voters).await;
            } else {
                joining = Some(tokio::spawn(formation::form_or_join(
                    raft.clone(),
                    config.node_id,
                    config.voters.clone(),
                    config.tls.clone(),
                )));
            }
        }
        if let Some(addr) = config.learner_addr.clone() {
            joining = Some(tokio::spawn(join_as_learner(
                raft.clone(),
                config.node_id,
                addr,
                config.voters.clone(),
                config.tls.clone(),
            )));
        }
        Ok(QuorumNode {
            node_id: config.node_id,
            raft,
            state_machine,
            voters: config.voters,
            server,
            joining,
            handler,
            tls: config.tls,
            leader_client: tokio::sync::Mutex::new(None),
        })
    }

    /// The current leader, if one is known.
    pub async fn leader(&self) -> Option<u64> {
        self.raft.current_leader().await
    }

    /// Raft's metrics (term, leader, last applied, ...), updated as they change.
    pub fn metrics(&self) -> tokio::sync::watch::Receiver<RaftMetrics<u64, BasicNode>> {
        self.raft.metrics()
    }

    /// Where this member stands, for metrics.
    pub fn position(&self) -> QuorumPosition {
        let m = self.raft.metrics();
        let m = m.borrow();
        QuorumPosition {
            leader: m.current_leader,
            term: m.current_term,
            role: match m.state {
                openraft::ServerState::Leader => "leader",
                openraft::ServerState::Candidate => "candidate",
                openraft::ServerState::Follower => "follower",
                openraft::ServerState::Learner => "observer",
                openraft::ServerState::Shutdown => "shutdown",
            },
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
        }
    }

    /// Index of the last entry applied to the application state.
    pub fn last_applied_index(&self) -> Option<u64> {
        self.state_machine.last_applied().map(|l| l.index)
    }

    /// Waits until a leader is known, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some(l) = self.leader().await {
                return Some(l);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Appends `command` to the log and waits until it is committed (applied on the leader).
    /// Works on any voter: a follower forwards the write to the leader. While no leader is
    /// known (an election is running) it retries for up to [`WRITE_TIMEOUT`].
    pub async fn write(&self, command: serde_json::Value) -> Result<u64, WriteError> {
        let command = Command(command);
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        loop {
            match self.write_once(command.clone()).await {
                Err(WriteError::NoLeader) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// Appends `command` only if this node is the leader now; never forwarded. For decisions
    /// that are only valid from the leader that made them (a deposed leader's pending writes
    /// must not be replayed through the next leader).
    pub async fn write_as_leader(&self, command: serde_json::Value) -> Result<u64, WriteError> {
        match self.raft.client_write(Command(command)).await {
            Ok(r) => Ok(r.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(
                WriteError::Failed("this node is no longer the leader".into()),
            ),
            Err(e) => Err(WriteError::Failed(e.to_string())),
        }
    }

    async fn write_once(&self, command: Command) -> Result<u64, WriteError> {
        match self.raft.client_write(command.clone()).await {
            Ok(r) => Ok(r.log_id.index),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_id.ok_or(WriteError::NoLeader)?;
                if leader == self.node_id {
                    return Err(WriteError::NoLeader);
                }
                let address = f
                    .leader_node
                    .map(|n| n.addr)
                    .or_else(|| self.voters.get(&leader).cloned())
                    .ok_or(WriteError::NoLeader)?;
                PeerClient::new(leader, address, self.tls.clone())
                    .forward_write(command)
                    .await
                    .map_err(|e| {
                        if e == rpc::NOT_LEADER {
                            WriteError::NoLeader
                        } else {
                            WriteError::Failed(e)
                        }
                    })
            }
            Err(e) => Err(WriteError::Failed(e.to_string())),
        }
    }

    /// Sets what answers application messages on this node (once; later calls are ignored).
    pub fn set_message_handler(
        &self,
        handler: Box<dyn Fn(serde_json::Value) -> serde_json::Value + Send + Sync>,
    ) {
        let _ = self.handler.set(handler);
    }

    /// Sends an application message to the current leader (handled locally when this node
    /// leads) and returns its answer.
    pub async fn send_to_leader(
        &self,
        message: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let leader = self.leader().await.ok_or("no quorum leader is known")?;
        if leader == self.node_id {
            return match self.handler.get() {
                Some(h) => Ok(h(message)),
                None => Err("no message handler is set".into()),
            };
        }
        let mut slot = self.leader_client.lock().await;
        if slot.as_ref().is_none_or(|(id, _)| *id != leader) {
            let address = self
                .voters
                .get(&leader)
                .cloned()
                .ok_or_else(|| format!("leader {leader} is not a known voter"))?;
            *slot = Some((leader, PeerClient::new(leader, address, self.tls.clone())));
        }
        let (_, client) = slot.as_mut().expect("set above");
        client.send_message(message).await
    }

    /// Stops Raft and the RPC server.
    pub async fn shutdown(&self) {
        self.server.abort();
        if let Some(joining) = &self.joining {
            joining.abort();
        }
        let _ = self.raft.shutdown().await;
    }
}
