//! One-time import of a data directory written by the old single-node mode, which kept its
//! metadata in a local file (`__fjord_metadata/metadata.log`, JSON-lines [`MetadataRecord`]s)
//! instead of the metadata quorum every broker runs now. Without it such a node would start
//! with an empty image and `hosted::remove_strays`/`hosted::sync` would never open (or would
//! wipe) its partition logs.
//!
//! On start, while `metadata.log` is still there: its records are replayed into an image, and
//! that image (topics with their ids, configs, SCRAM credentials, ACLs, quotas, the producer-id
//! high-water mark) plus the group offsets the old coordinator kept in
//! `__fjord_groups/offsets.log` are committed to the quorum as one command. Each partition
//! directory gets its `partition.metadata` marker first, so the hosted-log reconciliation keeps
//! it. Then the file is renamed to `metadata.log.migrated` (kept, never deleted), which is what
//! makes the import happen once. `offsets.log` is only read: committed offsets live in the
//! metadata image now, and nothing writes the journal any more.
//!
//! A crash between the commit and the rename repeats the import on the next start; topics the
//! quorum already has under the same id are then left out (re-creating them would reset their
//! partition state), and the other records are idempotent.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::metadata::snapshot::image_to_records;
use crate::metadata::{MetadataImage, MetadataRecord, ReplicatedOffset};
use crate::state::Broker;

/// The old single-node metadata file under a data directory.
pub fn legacy_store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("__fjord_metadata").join("metadata.log")
}

/// Replays the old store's records (as the old store did on open: a torn or unreadable tail
/// ends the replay).
pub fn read_legacy_store(path: &Path) -> io::Result<MetadataImage> {
    let text = std::fs::read(path)?;
    let mut image = MetadataImage::default();
    for line in text.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        match serde_json::from_slice::<MetadataRecord>(line) {
            Ok(r) => image.apply(&r),
            Err(e) => {
                tracing::warn!(error = %e, "stopping the old metadata replay at an unreadable record");
                break;
            }
        }
    }
    Ok(image)
}

/// Imports the old single-node metadata file (and the group offsets) into the quorum once; a
/// no-op when there is none. Runs at start-up, before clients are served. The file work runs
/// on a blocking thread; the quorum write is awaited.
pub async fn import_single_node_store(broker: &Arc<Broker>) -> anyhow::Result<()> {
    let b = broker.clone();
    let Some(import) = tokio::task::spawn_blocking(move || prepare_import(&b)).await?? else {
        return Ok(());
    };
    // A leading `CreateTopic` of a taken name would make the applier drop the whole command;
    // names were checked, so order does not matter beyond that.
    if !import.records.is_empty() {
        broker.cluster.write(&import.records).await?;
    }
    let done = import.path.with_extension("log.migrated");
    tokio::fs::rename(&import.path, &done).await?;
    tracing::info!(
        topics = import.topics,
        groups = import.groups,
        records = import.records.len(),
        renamed_to = %done.display(),
        "imported the single-node metadata store into the metadata quorum"
    );
    Ok(())
}

/// What to commit for the import, read from the old files.
struct Import {
    path: PathBuf,
    records: Vec<MetadataRecord>,
    topics: usize,
    groups: usize,
}

/// Reads the old store, checks it against the quorum's image, writes the partition markers and
/// builds the records to commit; `None` when there is nothing to import. Blocking file I/O.
fn prepare_import(broker: &Broker) -> anyhow::Result<Option<Import>> {
    let path = legacy_store_path(broker.config.data_dir());
    if !path.exists() {
        return Ok(None);
    }
    let legacy = read_legacy_store(&path)?;
    let me = broker.config.node_id;
    if let Some(t) = legacy
        .topics
        .values()
        .find(|t| t.partitions.iter().any(|p| p.replicas != [me]))
    {
        anyhow::bail!(
            "{} holds topic '{}' with replicas other than node.id {me}: the data directory was written by another node id; start it with the node.id it had",
            path.display(),
            t.name
        );
    }
    let current = broker.metadata.snapshot().topics.clone();
    let mut records = Vec::new();
    for r in image_to_records(&legacy) {
        let known = |name: &str| {
            current
                .get(name)
                .is_some_and(|t| legacy.topics.get(name).is_some_and(|l| l.id == t.id))
        };
        match &r {
            MetadataRecord::CreateTopic { name, .. }
            | MetadataRecord::PartitionChange { topic: name, .. }
                if known(name) =>
            {
                continue
            }
            MetadataRecord::CreateTopic { name, .. } if current.contains_key(name) => {
                anyhow::bail!(
                    "cannot import {}: topic '{name}' already exists in the metadata quorum with another id",
                    path.display()
                );
            }
            _ => records.push(r),
        }
    }
    for t in legacy
        .topics
        .values()
        .filter(|t| !current.contains_key(&t.name))
    {
        for i in 0..t.partitions.len() as i32 {
            let dir = broker.replicas.partition_dir(&t.name, i);
            if dir.is_dir() {
                super::hosted::write_marker(&dir, t.id)?;
            }
        }
    }
    let mut groups = 0;
    for (group, offsets) in crate::group::offsets::read_legacy_journal(broker.config.data_dir())? {
        if offsets.is_empty() {
            continue;
        }
        groups += 1;
        records.push(MetadataRecord::GroupOffsets {
            group,
            offsets: offsets
                .into_iter()
                .map(|((topic, partition), c)| ReplicatedOffset {
                    topic,
                    partition,
                    committed: Some(c),
                })
                .collect(),
        });
    }
    Ok(Some(Import {
        path,
        records,
        topics: legacy.topics.len(),
        groups,
    }))
}
