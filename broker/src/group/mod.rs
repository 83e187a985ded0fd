//! Consumer group coordinator (classic protocol): membership, rebalances and committed offsets.

pub mod coordinator;
pub mod membership;
pub mod offsets;

pub use coordinator::GroupCoordinator;
pub use membership::{GroupState, JoinRequest, JoinResult, MemberSnapshot, SyncResult};
