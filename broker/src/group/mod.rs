//! Consumer group coordinator (classic protocol): membership, rebalances and committed offsets.

pub mod coordinator;
pub mod group;
pub mod offsets;

pub use coordinator::GroupCoordinator;
pub use group::{GroupState, JoinRequest, JoinResult, MemberSnapshot, SyncResult};
