//! The metadata image as everything else reads it: an immutable snapshot, swapped whole after
//! each applied batch (Kafka's `MetadataCache` over a `MetadataImage`).
//!
//! Request paths call [`MetadataCache::snapshot`] and get an `Arc` to an image nobody will
//! change: no lock is taken or held while they work with it, a reader never sees half of a
//! batch, and a slow reader never holds up the applier. The applier (one writer, the quorum's
//! apply path) copies the current image, applies a batch to the copy and publishes it. A copy
//! per batch is cheap next to the quorum write that carried the batch: images hold metadata
//! (topics, partitions, users, ACLs, quotas, committed offsets), not data.

use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::MetadataImage;

pub struct MetadataCache {
    current: ArcSwap<MetadataImage>,
    /// Serialises writers, so two updates never both start from the same image and one is
    /// lost. Readers never take it.
    writer: Mutex<()>,
    /// Ticks whenever an image is published, for tasks that act on image changes (instead of
    /// polling the snapshot).
    published: tokio::sync::watch::Sender<()>,
}

impl Default for MetadataCache {
    fn default() -> Self {
        MetadataCache::new(MetadataImage::default())
    }
}

impl MetadataCache {
    pub fn new(image: MetadataImage) -> MetadataCache {
        MetadataCache {
            current: ArcSwap::from_pointee(image),
            writer: Mutex::new(()),
            published: tokio::sync::watch::Sender::new(()),
        }
    }

    /// The current image; it never changes under the caller.
    pub fn snapshot(&self) -> Arc<MetadataImage> {
        self.current.load_full()
    }

    /// Wakes (`changed().await`) after every image published from now on.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.published.subscribe()
    }

    /// Applies `change` to a copy of the current image and publishes the copy, unless `change`
    /// returns `false` (then nothing is published: a batch is all or nothing).
    pub fn update(&self, change: impl FnOnce(&mut MetadataImage) -> bool) {
        let _writer = self.writer.lock();
        let mut next = MetadataImage::clone(&self.current.load());
        if change(&mut next) {
            self.current.store(Arc::new(next));
            self.published.send_replace(());
        }
    }

    /// Publishes `image` in place of the current one (a restored snapshot).
    pub fn replace(&self, image: MetadataImage) {
        let _writer = self.writer.lock();
        self.current.store(Arc::new(image));
        self.published.send_replace(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::MetadataRecord;

    #[test]
    fn a_snapshot_does_not_change_when_a_batch_is_applied() {
        let cache = MetadataCache::default();
        let before = cache.snapshot();
        cache.update(|image| {
            image.apply(&MetadataRecord::ProducerIdBlock { next: 5000 });
            true
        });
        assert_eq!(before.next_producer_id, 0);
        assert_eq!(cache.snapshot().next_producer_id, 5000);
        assert_eq!(cache.snapshot().offset, before.offset + 1);
    }

    #[test]
    fn subscribers_are_woken_by_a_published_image_only() {
        let cache = MetadataCache::default();
        let mut changes = cache.subscribe();
        assert!(!changes.has_changed().unwrap());
        cache.update(|_| false);
        assert!(
            !changes.has_changed().unwrap(),
            "a refused batch publishes nothing"
        );
        cache.update(|image| {
            image.apply(&MetadataRecord::ProducerIdBlock { next: 5000 });
            true
        });
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        cache.replace(MetadataImage::default());
        assert!(changes.has_changed().unwrap());
    }

    #[test]
    fn a_refused_batch_publishes_nothing() {
        let cache = MetadataCache::default();
        let before = cache.snapshot();
        cache.update(|image| {
            image.apply(&MetadataRecord::ProducerIdBlock { next: 7000 });
            false
        });
        assert!(Arc::ptr_eq(&before, &cache.snapshot()));
    }

    #[test]
    fn concurrent_updates_are_never_lost() {
        let cache = Arc::new(MetadataCache::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        cache.update(|image| {
                            image.offset += 1;
                            true
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(cache.snapshot().offset, 1000);
    }
}
