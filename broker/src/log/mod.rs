//! The storage engine: per-partition segmented logs of record batches kept exactly as produced.

pub mod batch;
pub mod cleaner;
pub mod dir_health;
pub mod epoch_cache;
pub mod io_throttle;
pub mod partition_log;
pub mod producer_state;
pub mod segment;
pub mod txn_marker;
pub mod txn_state;

pub use partition_log::{
    AppendError, AppendOutcome, PartitionLog, ReadResult, ReplicaAppend, RollObserver,
};
pub use txn_marker::MarkerType;
pub use txn_state::AbortedTxn;
