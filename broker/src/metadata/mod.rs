//! Cluster metadata: records and the in-memory image they build. Records are persisted and
//! ordered by the metadata quorum's Raft log (`crate::cluster`, also on a single node, as a
//! one-voter quorum) and applied to the image by [`quorum_applier`], which publishes each new image whole through
//! [`cache`] (readers take immutable snapshots, no lock); every change goes through
//! a record instead of mutating the image directly. (The old single-node file store is only
//! read once, to import it: `crate::cluster::migrate`.)

pub mod cache;
pub mod image;
pub mod leadership;
pub mod placement;
pub mod quorum_applier;
pub mod quota;
pub mod reassignment;
pub mod record;
pub mod snapshot;

pub use cache::MetadataCache;
pub use image::{MetadataImage, PartitionMeta, RegisteredBroker, TopicMeta};
pub use record::{BrokerEndpoint, MetadataRecord, ReplicatedOffset};
