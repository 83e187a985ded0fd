//! Partition replication: what a leader knows about its followers (ISR, high watermark) and
//! what stopping a broker would do to the partitions it hosts. The pure decision logic lives
//! here; the fetchers (one per source broker, each with a fetch session: `session`) and the
//! controller calls are built on top of it.

pub mod faults;
pub mod fetcher;
pub mod follower_log;
pub mod isr;
pub mod safety;
pub mod session;
pub mod throttle;
pub mod view;
