//! Transactions (KIP-98): the coordinator's state machine ([`state`]), the coordinator that
//! answers the transactional APIs ([`coordinator`]) and the marker writer every broker runs
//! for the partitions it leads ([`markers`]). The partition side (open transactions, the
//! last stable offset, the aborted-transaction index) lives with the log, in `crate::log`.
//!
//! The transaction state is replicated through the metadata quorum rather than an internal
//! `__transaction_state` topic: the quorum already orders, persists, snapshots and replays
//! the cluster's state (committed group offsets live there too), so a coordinator failover is
//! a hash change, not a topic partition's leader election and log reload.

pub mod coordinator;
pub mod markers;
pub mod state;

pub use coordinator::TransactionCoordinator;
