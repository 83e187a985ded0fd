//! Local metadata store: JSON-lines records in `<log.dir>/__fjord_metadata/metadata.log`,
//! fsynced on every append (metadata changes are rare and must survive power loss).
//! A torn last line from a crash is dropped on load.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::image::MetadataImage;
use super::record::MetadataRecord;

pub struct MetadataStore {
    path: PathBuf,
    file: File,
}

impl MetadataStore {
    /// Opens the store and replays it into a fresh image.
    pub fn open(data_dir: &Path) -> io::Result<(MetadataStore, MetadataImage)> {
        let dir = data_dir.join("__fjord_metadata");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("metadata.log");
        let text = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut image = MetadataImage::default();
        let mut valid_len = 0usize;
        for line in text.split_inclusive(|b| *b == b'\n') {
            if !line.ends_with(b"\n") {
                break;
            }
            match serde_json::from_slice::<MetadataRecord>(line) {
                Ok(r) => image.apply(&r),
                Err(e) => {
                    tracing::warn!(error = %e, "stopping metadata replay at an unreadable record");
                    break;
                }
            }
            valid_len += line.len();
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if valid_len < text.len() {
            file.set_len(valid_len as u64)?;
        }
        Ok((MetadataStore { path, file }, image))
    }

    pub fn append(&mut self, record: &MetadataRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }

    /// Appends several records with one write and one fsync.
    pub fn append_all(&mut self, records: &[MetadataRecord]) -> io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
