//! Producer ids for idempotent producers, as Kafka's `ProducerIdManager` hands them out: from a
//! block this broker reserved through the metadata quorum. The `AllocateProducerIds` record is
//! applied in log order on every node, so two brokers reserving at once get disjoint blocks,
//! and a restarted broker reserves a fresh block instead of reusing ids.

use std::future::Future;
use std::io;

use super::Cluster;
use crate::metadata::{MetadataCache, MetadataRecord};

/// Ids reserved per quorum write.
pub const BLOCK_SIZE: i64 = 1000;

/// See the module documentation.
pub struct ProducerIdManager {
    node_id: i32,
    /// The current block: the next id and the end (exclusive). An async lock: reserving a new
    /// block is a quorum write, awaited while it is held.
    block: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    /// A manager with no block yet: the first id reserves one.
    pub fn new(node_id: i32) -> ProducerIdManager {
        ProducerIdManager {
            node_id,
            block: tokio::sync::Mutex::new((0, 0)),
        }
    }

    /// The next producer id, reserving a block through the quorum when the current one is used up.
    pub async fn next(&self, cluster: &Cluster, image: &MetadataCache) -> io::Result<i64> {
        let node = self.node_id;
        self.next_with(|| async move {
            cluster
                .write(&[MetadataRecord::AllocateProducerIds {
                    node,
                    size: BLOCK_SIZE,
                }])
                .await?;
            image
                .snapshot()
                .producer_id_blocks
                .get(&node)
                .copied()
                .ok_or_else(|| io::Error::other("the producer id block was not applied"))
        })
        .await
    }

    /// [`ProducerIdManager::next`] with the reservation given: `reserve` returns the new block
    /// as `(first, end)`.
    async fn next_with<F, Fut>(&self, reserve: F) -> io::Result<i64>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<(i64, i64)>>,
    {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let (first, end) = reserve().await?;
            if first >= end {
                return Err(io::Error::other(format!(
                    "an empty producer id block was reserved: [{first}, {end})"
                )));
            }
            *block = (first, end);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_come_from_reserved_blocks_in_order() {
        let ids = ProducerIdManager::new(1);
        let reserve = |first: i64| move || async move { Ok((first, first + 2)) };
        assert_eq!(ids.next_with(reserve(100)).await.unwrap(), 100);
        // The block is not used up: no reservation (a failing one would show).
        let unused = || async { Err::<(i64, i64), _>(io::Error::other("not expected")) };
        assert_eq!(ids.next_with(unused).await.unwrap(), 101);
        assert_eq!(ids.next_with(reserve(500)).await.unwrap(), 500);
    }

    #[tokio::test]
    async fn a_failed_reservation_is_an_error_and_the_next_call_tries_again() {
        let ids = ProducerIdManager::new(1);
        let failing = || async { Err::<(i64, i64), _>(io::Error::other("no quorum")) };
        assert!(ids.next_with(failing).await.is_err());
        let empty = || async { Ok((7, 7)) };
        assert!(ids.next_with(empty).await.is_err());
        let ok = || async { Ok((7, 9)) };
        assert_eq!(ids.next_with(ok).await.unwrap(), 7);
    }
}
