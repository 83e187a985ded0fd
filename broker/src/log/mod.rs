//! The storage engine: per-partition segmented logs of record batches kept exactly as produced.

pub mod batch;
pub mod cleaner;
pub mod dir_health;
pub mod epoch_cache;
pub mod partition_log;
pub mod producer_state;
pub mod segment;

pub use partition_log::{
    AppendError, AppendOutcome, PartitionLog, ReadResult, ReplicaAppend, RollObserver,
};
