//! One log segment: a `.log` file of batches plus sparse offset and time indexes.
//!
//! The indexes live in memory while the segment is active and are written to `.index` /
//! `.timeindex` when it is sealed (rolled), so a restart loads sealed segments without scanning
//! them. The active segment is always rescanned on open, which is also where a torn tail is cut.
//!
//! Appends are positional writes at `size` (the file is not opened `O_APPEND`): when a write
//! fails part-way (a full disk, EIO) the partial tail is cut off again, and even if that cut
//! fails the next append overwrites it, so acknowledged data never has a half batch inside it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{self, BatchHeader, HEADER_LEN};
use super::txn_marker::{self, MarkerType};

/// Sparse index entry: first offset of a batch and its byte position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: i64,
    pub position: u32,
}

/// Sparse time index entry: the max timestamp seen up to and including the batch at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub offset: i64,
    pub position: u32,
}

pub struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes of whole batches; reads never go past it and the next append writes here.
    pub size: u64,
    /// One past the last offset stored in this segment.
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub created_ms: i64,
    index: Vec<IndexEntry>,
    time_index: Vec<TimeEntry>,
    bytes_since_index: u64,
    index_interval: u64,
    /// A failed append left bytes past `size` that could not be cut off yet.
    tail_dirty: bool,
}

pub fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

/// A batch header with the marker a control batch holds: what producer and transaction state
/// is rebuilt from.
pub type StateBatch = (BatchHeader, Option<MarkerType>);

/// What an open scan found: how much of the file is valid and whether a tail was cut.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub truncated_bytes: u64,
    pub batches: Vec<StateBatch>,
}

impl Segment {
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_interval: u64,
        now_ms: i64,
    ) -> io::Result<Segment> {
        let path = dir.join(file_name(base_offset, "log"));
        // A new segment starts empty: a file left under its name (a roll that failed after
        // creating it) holds nothing the log tracks.
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        Ok(Segment::empty(
            path,
            file,
            base_offset,
            index_interval,
            now_ms,
        ))
    }

    /// A segment with no batches tracked yet (sizes and indexes are filled by scanning/appending).
    fn empty(
        path: PathBuf,
        file: File,
        base_offset: i64,
        index_interval: u64,
        now_ms: i64,
    ) -> Segment {
        Segment {
            base_offset,
            path,
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms: now_ms,
            index: Vec::new(),
            time_index: Vec::new(),
            bytes_since_index: 0,
            index_interval,
            tail_dirty: false,
        }
    }

    /// Opens an existing segment. With `verify`, every batch is CRC-checked and the file is cut at
    /// the first invalid one; the scanned headers are returned so callers can rebuild state.
    pub fn open(
        path: &Path,
        base_offset: i64,
        index_interval: u64,
        verify: bool,
        now_ms: i64,
    ) -> io::Result<(Segment, ScanReport)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let mut seg = Segment::empty(
            path.to_path_buf(),
            file,
            base_offset,
            index_interval,
            now_ms,
        );
        if !verify && seg.load_sealed_indexes(len)? {
            return Ok((seg, ScanReport::default()));
        }
        let mut report = ScanReport::default();
        let mut pos: u64 = 0;
        let mut head = [0u8; HEADER_LEN];
        let mut body = Vec::new();
        while pos < len {
            if len - pos < HEADER_LEN as u64 || seg.file.read_exact_at(&mut head, pos).is_err() {
                break;
            }
            let Ok(h) = BatchHeader::parse(&head) else {
                break;
            };
            if pos + h.total_len as u64 > len || h.base_offset < seg.next_offset {
                break;
            }
            // A control batch is read whole (it is tiny) for its marker type.
            if verify || h.is_control() {
                body.resize(h.total_len, 0);
                seg.file.read_exact_at(&mut body, pos)?;
                if verify && batch::validate(&body).is_err() {
                    break;
                }
            }
            let marker = if h.is_control() {
                txn_marker::marker_type(&body)
            } else {
                None
            };
            seg.track_append(&h, pos as u32);
            pos += h.total_len as u64;
            report.batches.push((h, marker));
        }
        if pos < len {
            report.truncated_bytes = len - pos;
            seg.file.set_len(pos)?;
        }
        seg.size = pos;
        Ok((seg, report))
    }

    /// Loads `.index`/`.timeindex` written when this segment was sealed. Returns false when they
    /// are missing or inconsistent with the log file (then the caller rescans).
    fn load_sealed_indexes(&mut self, log_len: u64) -> io::Result<bool> {
        let Ok(idx) = std::fs::read(self.path.with_extension("index")) else {
            return Ok(false);
        };
        let Ok(tidx) = std::fs::read(self.path.with_extension("timeindex")) else {
            return Ok(false);
        };
        // Trailer of the .index file: next_offset (8) + size (8) + max_timestamp (8).
        if idx.len() < 24 || (idx.len() - 24) % 12 != 0 || tidx.len() % 16 != 0 {
            return Ok(false);
        }
        let body = &idx[..idx.len() - 24];
        let trailer = &idx[idx.len() - 24..];
        let next_offset = i64::from_be_bytes(trailer[0..8].try_into().expect("8"));
        let size = u64::from_be_bytes(trailer[8..16].try_into().expect("8"));
        let max_ts = i64::from_be_bytes(trailer[16..24].try_into().expect("8"));
        if size != log_len || next_offset < self.base_offset {
            return Ok(false);
        }
        let mut index = Vec::new();
        for c in body.chunks_exact(12) {
            let offset = i64::from_be_bytes(c[0..8].try_into().expect("8"));
            let position = u32::from_be_bytes(c[8..12].try_into().expect("4"));
            if position as u64 >= size
                || index
                    .last()
                    .is_some_and(|l: &IndexEntry| l.offset >= offset)
            {
                return Ok(false);
            }
            index.push(IndexEntry { offset, position });
        }
        let mut time_index = Vec::new();
        for c in tidx.chunks_exact(16) {
            let timestamp = i64::from_be_bytes(c[0..8].try_into().expect("8"));
            let offset = i64::from_be_bytes(c[8..16].try_into().expect("8"));
            let position = index
                .iter()
                .rev()
                .find(|e| e.offset <= offset)
                .map(|e| e.position)
                .unwrap_or(0);
            time_index.push(TimeEntry {
                timestamp,
                offset,
                position,
            });
        }
        self.index = index;
        self.time_index = time_index;
        self.size = size;
        self.next_offset = next_offset;
        self.max_timestamp = max_ts;
        Ok(true)
    }

    /// Writes the indexes next to the log file; called when the segment stops being active.
    pub fn seal(&self) -> io::Result<()> {
        let mut idx = Vec::with_capacity(self.index.len() * 12 + 24);
        for e in &self.index {
            idx.extend_from_slice(&e.offset.to_be_bytes());
            idx.extend_from_slice(&e.position.to_be_bytes());
        }
        idx.extend_from_slice(&self.next_offset.to_be_bytes());
        idx.extend_from_slice(&self.size.to_be_bytes());
        idx.extend_from_slice(&self.max_timestamp.to_be_bytes());
        let mut tidx = Vec::with_capacity(self.time_index.len() * 16);
        for e in &self.time_index {
            tidx.extend_from_slice(&e.timestamp.to_be_bytes());
            tidx.extend_from_slice(&e.offset.to_be_bytes());
        }
        write_atomically(&self.path.with_extension("timeindex"), &tidx)?;
        write_atomically(&self.path.with_extension("index"), &idx)?;
        Ok(())
    }

    /// Appends one already-validated batch (its base offset set) and updates the indexes.
    pub fn append(&mut self, batch_bytes: &[u8], header: &BatchHeader) -> io::Result<()> {
        self.append_many(batch_bytes, &[(0, *header)])
    }

    /// Appends several batches in one write; `batches` holds each batch's position in `bytes`.
    /// On error nothing is tracked: `size`, `next_offset` and the indexes stay where they were.
    pub fn append_many(
        &mut self,
        bytes: &[u8],
        batches: &[(usize, BatchHeader)],
    ) -> io::Result<()> {
        let start = self.size;
        self.write_at_end(bytes)?;
        for (pos, h) in batches {
            self.track_append(h, (start + *pos as u64) as u32);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Writes `bytes` at `size`. A failed write may have stored a prefix of them; it is cut off
    /// so the file ends at the last whole batch (a later scan would cut it too, but the space it
    /// holds is what a full disk needs back). A cut that fails is retried before the next write.
    fn write_at_end(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.tail_dirty {
            self.file.set_len(self.size)?;
            self.tail_dirty = false;
        }
        let Err(e) = self.file.write_all_at(bytes, self.size) else {
            return Ok(());
        };
        if let Err(cut) = self.file.set_len(self.size) {
            tracing::warn!(
                segment = %self.path.display(),
                size = self.size,
                error = %cut,
                "could not cut a failed append off the segment; retried before the next one"
            );
            self.tail_dirty = true;
        }
        Err(e)
    }

    fn track_append(&mut self, h: &BatchHeader, pos: u32) {
        let first = self.index.is_empty();
        if first || self.bytes_since_index >= self.index_interval {
            self.index.push(IndexEntry {
                offset: h.base_offset,
                position: pos,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_len as u64;
        if h.max_timestamp > self.max_timestamp {
            self.max_timestamp = h.max_timestamp;
            if self.time_index.last().is_none_or(|t| t.position != pos) {
                self.time_index.push(TimeEntry {
                    timestamp: h.max_timestamp,
                    offset: h.base_offset,
                    position: pos,
                });
            }
        }
        self.next_offset = h.last_offset() + 1;
    }

    /// Byte position of the batch that contains `offset`, scanning forward from the index entry.
    /// Returns None when the offset is beyond this segment.
    pub fn position_of(&self, offset: i64) -> io::Result<Option<u64>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let start = match self.index.partition_point(|e| e.offset <= offset) {
            0 => 0,
            i => self.index[i - 1].position as u64,
        };
        Ok(self
            .scan_from(start, |h| h.last_offset() >= offset)?
            .map(|(pos, _)| pos))
    }

    /// First batch position whose max timestamp is >= `ts` (time index narrows the scan).
    pub fn position_for_timestamp(&self, ts: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        if self.max_timestamp < ts {
            return Ok(None);
        }
        let start = match self.time_index.partition_point(|e| e.timestamp < ts) {
            0 => 0,
            i => self.time_index[i - 1].position as u64,
        };
        self.scan_from(start, |h| h.max_timestamp >= ts)
    }

    /// Where a read of whole batches starting at batch position `start` ends: below
    /// `start + max_bytes`, before the first batch at or past `max_offset`, and (with `min_one`)
    /// past at least the first batch whatever its size. Only headers are read: the sparse index
    /// jumps close to the end and a few header reads find the exact batch boundary.
    ///
    /// Also returns the offset the read stops at: the base offset of the first batch left out,
    /// or this segment's next offset (the bound of a `read_committed` fetch's aborted list, as
    /// Kafka's `fetchUpperBoundOffset`).
    pub fn read_end(
        &self,
        start: u64,
        max_bytes: usize,
        max_offset: i64,
        min_one: bool,
    ) -> io::Result<(u64, i64)> {
        let byte_cap = start.saturating_add(max_bytes as u64).min(self.size);
        // Every batch before an index entry at or below the cap, whose offset is below
        // max_offset, is inside the read.
        let below_cap = self
            .index
            .partition_point(|e| u64::from(e.position) <= byte_cap);
        let below_offset = self.index.partition_point(|e| e.offset < max_offset);
        let mut pos = match below_cap.min(below_offset) {
            0 => start,
            i => u64::from(self.index[i - 1].position).max(start),
        };
        let mut head = [0u8; HEADER_LEN];
        while pos + HEADER_LEN as u64 <= self.size {
            self.file.read_exact_at(&mut head, pos)?;
            let h = BatchHeader::parse(&head)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let end = pos + h.total_len as u64;
            if h.base_offset >= max_offset || end > self.size {
                return Ok((pos, h.base_offset));
            }
            if end > byte_cap {
                if pos == start && min_one {
                    return Ok((end, h.last_offset() + 1));
                }
                return Ok((pos, h.base_offset));
            }
            pos = end;
        }
        Ok((pos, self.next_offset))
    }

    /// Walks batch headers from byte `start` to the first batch for which `found` holds.
    fn scan_from(
        &self,
        start: u64,
        mut found: impl FnMut(&BatchHeader) -> bool,
    ) -> io::Result<Option<(u64, BatchHeader)>> {
        let mut pos = start;
        let mut head = [0u8; HEADER_LEN];
        while pos < self.size {
            self.file.read_exact_at(&mut head, pos)?;
            let h = BatchHeader::parse(&head)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if found(&h) {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len as u64;
        }
        Ok(None)
    }

    /// Every batch in the segment, in order, with its marker when it is a control batch (for
    /// rebuilding state after truncation). Only headers and control batches are read.
    pub fn state_batches(&self) -> io::Result<Vec<StateBatch>> {
        let mut out = Vec::new();
        let mut pos = 0u64;
        let mut head = [0u8; HEADER_LEN];
        let mut body = Vec::new();
        while pos + HEADER_LEN as u64 <= self.size {
            self.file.read_exact_at(&mut head, pos)?;
            let h = BatchHeader::parse(&head)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let marker = if h.is_control() {
                body.resize(h.total_len, 0);
                self.file.read_exact_at(&mut body, pos)?;
                txn_marker::marker_type(&body)
            } else {
                None
            };
            out.push((h, marker));
            pos += h.total_len as u64;
        }
        Ok(out)
    }

    /// Deletes the segment's files.
    pub fn delete_files(&self) -> io::Result<()> {
        for ext in ["log", "index", "timeindex"] {
            match std::fs::remove_file(self.path.with_extension(ext)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Writes a small file via a temporary name and rename, so a crash never leaves half of it.
pub fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_data()
    });
    let result = written.and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        // A half-written temporary file holds space a full disk needs back.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
