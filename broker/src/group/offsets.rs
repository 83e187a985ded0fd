//! Committed offsets, kept in memory and persisted as an append-only journal
//! (`__fjord_groups/offsets.log`, one JSON object per line). The journal is compacted on open
//! when it holds mostly superseded entries. A torn last line from a crash is ignored.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    g: String,
    t: String,
    p: i32,
    /// None is a tombstone (offset deleted).
    c: Option<CommittedOffset>,
}

pub type GroupOffsets = BTreeMap<(String, i32), CommittedOffset>;

pub struct OffsetStore {
    path: PathBuf,
    file: File,
    pub offsets: HashMap<String, GroupOffsets>,
    entries_written: usize,
}

impl OffsetStore {
    pub fn open(data_dir: &Path) -> io::Result<OffsetStore> {
        let dir = data_dir.join("__fjord_groups");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("offsets.log");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut offsets: HashMap<String, GroupOffsets> = HashMap::new();
        let mut lines = 0usize;
        let mut valid_len = 0usize;
        for line in data.split_inclusive(|b| *b == b'\n') {
            if !line.ends_with(b"\n") {
                break;
            }
            let Ok(e) = serde_json::from_slice::<JournalEntry>(line) else {
                break;
            };
            lines += 1;
            valid_len += line.len();
            let g = offsets.entry(e.g).or_default();
            match e.c {
                Some(c) => {
                    g.insert((e.t, e.p), c);
                }
                None => {
                    g.remove(&(e.t, e.p));
                }
            }
        }
        offsets.retain(|_, g| !g.is_empty());
        let live: usize = offsets.values().map(|g| g.len()).sum();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if valid_len < data.len() {
            file.set_len(valid_len as u64)?;
        }
        let mut store = OffsetStore {
            file,
            path,
            offsets,
            entries_written: lines,
        };
        if lines > 1000 && lines > live * 2 {
            store.compact()?;
        }
        Ok(store)
    }

    /// Appends one journal line per entry to `buf`.
    fn encode_entries<'a>(
        buf: &mut Vec<u8>,
        group: &str,
        entries: impl Iterator<Item = (&'a String, i32, Option<&'a CommittedOffset>)>,
    ) -> io::Result<()> {
        for (t, p, c) in entries {
            let e = JournalEntry {
                g: group.to_string(),
                t: t.clone(),
                p,
                c: c.cloned(),
            };
            serde_json::to_writer(&mut *buf, &e).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        Ok(())
    }

    /// Rewrites the journal with only live entries.
    pub fn compact(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        for (g, offs) in &self.offsets {
            Self::encode_entries(&mut buf, g, offs.iter().map(|((t, p), c)| (t, *p, Some(c))))?;
        }
        crate::log::segment::write_atomically(&self.path, &buf)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.entries_written = self.offsets.values().map(|g| g.len()).sum();
        Ok(())
    }

    pub fn commit(
        &mut self,
        group: &str,
        items: Vec<(String, i32, CommittedOffset)>,
    ) -> io::Result<()> {
        let mut buf = Vec::new();
        Self::encode_entries(
            &mut buf,
            group,
            items.iter().map(|(t, p, c)| (t, *p, Some(c))),
        )?;
        self.file.write_all(&buf)?;
        self.entries_written += items.len();
        let g = self.offsets.entry(group.to_string()).or_default();
        for (t, p, c) in items {
            g.insert((t, p), c);
        }
        self.maybe_compact()
    }

    pub fn delete(&mut self, group: &str, keys: Vec<(String, i32)>) -> io::Result<()> {
        let mut buf = Vec::new();
        Self::encode_entries(&mut buf, group, keys.iter().map(|(t, p)| (t, *p, None)))?;
        self.file.write_all(&buf)?;
        self.entries_written += keys.len();
        if let Some(g) = self.offsets.get_mut(group) {
            for k in keys {
                g.remove(&k);
            }
            if g.is_empty() {
                self.offsets.remove(group);
            }
        }
        Ok(())
    }

    fn maybe_compact(&mut self) -> io::Result<()> {
        let live: usize = self.offsets.values().map(|g| g.len()).sum();
        if self.entries_written > 100_000 && self.entries_written > live * 4 {
            self.compact()?;
        }
        Ok(())
    }

    pub fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(o: i64) -> CommittedOffset {
        CommittedOffset {
            offset: o,
            leader_epoch: -1,
            metadata: None,
            commit_ms: 0,
        }
    }

    #[test]
    fn survives_reopen_with_tombstones_and_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = OffsetStore::open(d.path()).unwrap();
            s.commit("g", vec![("t".into(), 0, c(5)), ("t".into(), 1, c(7))])
                .unwrap();
            s.commit("g", vec![("t".into(), 0, c(9))]).unwrap();
            s.delete("g", vec![("t".into(), 1)]).unwrap();
        }
        let path = d.path().join("__fjord_groups/offsets.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"g\":\"g\",\"t\":\"t\",\"p\":0,\"c\":{\"off")
            .unwrap();
        let mut s = OffsetStore::open(d.path()).unwrap();
        assert_eq!(s.offsets["g"][&("t".to_string(), 0)].offset, 9);
        assert!(!s.offsets["g"].contains_key(&("t".to_string(), 1)));
        s.compact().unwrap();
        let s = OffsetStore::open(d.path()).unwrap();
        assert_eq!(s.offsets["g"].len(), 1);
    }
}
