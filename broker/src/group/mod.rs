//! Consumer group coordinator: classic groups (JoinGroup/SyncGroup, client-side assignment),
//! consumer-protocol groups (KIP-848, ConsumerGroupHeartbeat, server-side assignors), the live
//! migration of a group between the two, and the committed offsets both kinds share.

pub mod assignor;
pub mod consumer_coordinator;
pub mod consumer_group;
pub mod coordinator;
pub mod membership;
pub mod offsets;

pub use coordinator::GroupCoordinator;
pub use membership::{GroupState, JoinRequest, JoinResult, MemberSnapshot, SyncResult};
