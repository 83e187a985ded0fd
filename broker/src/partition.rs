//! A partition hosted by this broker: its log, its leader epoch, and a notifier that wakes
//! long-polling fetches when data arrives.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::Notify;

use crate::log::PartitionLog;

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub log: RwLock<PartitionLog>,
    pub leader_epoch: i32,
    /// Offsets below this are visible to consumers. Single node: equals the log end offset.
    high_watermark: AtomicI64,
    pub data_arrived: Notify,
}

impl Partition {
    pub fn new(topic: Arc<str>, index: i32, log: PartitionLog, leader_epoch: i32) -> Partition {
        let hw = log.log_end_offset();
        Partition {
            topic,
            index,
            log: RwLock::new(log),
            leader_epoch,
            high_watermark: AtomicI64::new(hw),
            data_arrived: Notify::new(),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Publishes new data to readers.
    pub fn advance_high_watermark(&self, hw: i64) {
        self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        self.data_arrived.notify_waiters();
    }
}
