//! fjord-quorum: the Raft log behind Fjord's cluster metadata.
//!
//! Controllers (`process.roles` containing `controller`) run a [`QuorumNode`]: an `openraft` node
//! whose log is persisted in `<dir>/` ([`log_store`]), replicated to the other voters over TCP
//! ([`rpc`]), and applied in order to an application [`Applier`] ([`state_machine`]) — for the
//! broker, its metadata image. Snapshots of the applied state keep restarts from replaying
//! everything. Commands are JSON values so the crate knows nothing about Kafka.

pub mod formation;
pub mod log_store;
pub mod node;
pub mod rpc;
pub mod state_machine;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use node::{QuorumConfig, QuorumNode, QuorumPosition, WriteError};
pub use rpc::QuorumTls;

/// One command appended to the log: the application's own JSON encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command(pub serde_json::Value);

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

openraft::declare_raft_types!(
    /// Fjord's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;

/// Why an [`Applier`] cannot take a snapshot's state (any error type of the application).
pub type RestoreError = Box<dyn std::error::Error + Send + Sync>;

/// The application state the log is applied to.
pub trait Applier: Send + Sync + 'static {
    /// Applies one committed command; called in log order, exactly once per command per process
    /// lifetime (after a restart: from the last snapshot on).
    fn apply(&self, command: &serde_json::Value);
    /// The whole application state, for a snapshot.
    fn snapshot(&self) -> serde_json::Value;
    /// Replaces the application state with a snapshot's; the error says why it cannot.
    fn restore(&self, state: serde_json::Value) -> Result<(), RestoreError>;
}
