//! Cluster metadata: records, the in-memory image they build, and the store that persists them.
//!
//! Today the store is a local append-only file (single node). The cluster issue replaces the store
//! with a Raft log; records and image stay the same, which is why every change goes through a
//! record instead of mutating the image directly.

pub mod image;
pub mod leadership;
pub mod placement;
pub mod quorum_applier;
pub mod quota;
pub mod reassignment;
pub mod record;
pub mod snapshot;
pub mod store;

pub use image::{MetadataImage, PartitionMeta, RegisteredBroker, TopicMeta};
pub use record::{BrokerEndpoint, MetadataRecord, ReplicatedOffset};
pub use store::MetadataStore;
