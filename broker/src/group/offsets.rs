//! Committed offsets: what one is, and the reader for the journal old nodes kept.
//!
//! Committed offsets live in the metadata image (`MetadataImage::group_offsets`), written
//! through the metadata quorum like every other piece of cluster state, so every node has them
//! after a restart or a leader change without a second store to keep in step. Nodes of the
//! old single-node mode kept them in an append-only journal, `__fjord_groups/offsets.log`
//! (one JSON object per line, `c: null` a deletion); [`read_legacy_journal`] reads it once,
//! for `cluster::migrate`'s import, and nothing writes it any more.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

/// One group's committed offsets by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    g: String,
    t: String,
    p: i32,
    /// None is a tombstone (offset deleted).
    c: Option<CommittedOffset>,
}

/// Where the old journal is in a data directory.
pub fn legacy_journal_path(data_dir: &Path) -> PathBuf {
    data_dir.join("__fjord_groups").join("offsets.log")
}

/// Every group's offsets as the old journal left them (empty when there is no journal). A
/// torn or unreadable line ends the replay: it can only be the last write before a crash.
pub fn read_legacy_journal(data_dir: &Path) -> io::Result<HashMap<String, GroupOffsets>> {
    let data = match std::fs::read(legacy_journal_path(data_dir)) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
    for line in data.split_inclusive(|b| *b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        let Ok(e) = serde_json::from_slice::<JournalEntry>(line) else {
            break;
        };
        let g = offsets.entry(e.g).or_default();
        match e.c {
            Some(c) => g.insert((e.t, e.p), c),
            None => g.remove(&(e.t, e.p)),
        };
    }
    offsets.retain(|_, g| !g.is_empty());
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_journal_replays_with_tombstones_and_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_legacy_journal(d.path()).unwrap().is_empty());
        let path = legacy_journal_path(d.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let c =
            |o: i64| format!(r#"{{"offset":{o},"leader_epoch":-1,"metadata":null,"commit_ms":0}}"#);
        let lines = [
            format!(r#"{{"g":"g","t":"t","p":0,"c":{}}}"#, c(5)),
            format!(r#"{{"g":"g","t":"t","p":1,"c":{}}}"#, c(7)),
            format!(r#"{{"g":"g","t":"t","p":0,"c":{}}}"#, c(9)),
            r#"{"g":"g","t":"t","p":1,"c":null}"#.to_string(),
            format!(r#"{{"g":"gone","t":"t","p":0,"c":{}}}"#, c(1)),
            r#"{"g":"gone","t":"t","p":0,"c":null}"#.to_string(),
        ];
        let mut text = lines.join("\n") + "\n";
        text.push_str(r#"{"g":"g","t":"t","p":0,"c":{"off"#);
        std::fs::write(&path, text).unwrap();
        let offsets = read_legacy_journal(d.path()).unwrap();
        assert_eq!(
            offsets.len(),
            1,
            "a group whose offsets were all deleted is gone"
        );
        assert_eq!(offsets["g"].len(), 1);
        assert_eq!(offsets["g"][&("t".to_string(), 0)].offset, 9);
    }
}
