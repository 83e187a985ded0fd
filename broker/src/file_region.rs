//! A stretch of a log file that a Fetch response sends without copying it through user space.
//!
//! Fetch answers are mostly stored record batches, and copying them out of the page cache into
//! a buffer (then into the socket) was the largest per-byte cost of consuming. The log hands the
//! Fetch handler a [`FileRegion`] instead of bytes; the connection writes it with `sendfile(2)`
//! on plain TCP, or reads it just before writing when TLS has to encrypt it.
//!
//! The generated response encoders only know `Bytes`, so a region travels through them as a
//! [`Placeholders`] slice: a distinct range of one static zero-filled area (untouched `.bss`, no
//! memory is used), whose address the response buffer (`protocol::chunked`) maps back to the
//! region. Placeholders are never read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

/// `len` bytes of `file` from `position`: whole record batches, found by the log.
#[derive(Debug, Clone)]
pub struct FileRegion {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

impl FileRegion {
    /// The part `offset..offset + len` of this region.
    pub fn slice(&self, offset: usize, len: usize) -> FileRegion {
        debug_assert!(offset + len <= self.len);
        FileRegion {
            file: self.file.clone(),
            position: self.position + offset as u64,
            len,
        }
    }

    /// Reads the region into memory (TLS connections, tests, and responses too large for
    /// placeholders). A file cut shorter since the region was found is an `UnexpectedEof`.
    pub fn read(&self) -> io::Result<Bytes> {
        let mut buf = vec![0u8; self.len];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(Bytes::from(buf))
    }
}

/// The address space placeholders are carved from; bounds the bytes one response can send
/// from files (the rest is read into memory).
const PLACEHOLDER_SPACE: usize = 64 << 20;

/// All zeros, so it lives in `.bss` and costs no memory while nothing reads it.
static PLACEHOLDER_AREA: [u8; PLACEHOLDER_SPACE] = [0; PLACEHOLDER_SPACE];

/// Hands out non-overlapping placeholder slices for the regions of one response.
#[derive(Debug, Default)]
pub struct Placeholders {
    used: usize,
}

impl Placeholders {
    /// A placeholder for `region`, or `None` when this response has used up the space.
    pub fn stand_in(&mut self, region: &FileRegion) -> Option<Bytes> {
        let end = self.used.checked_add(region.len)?;
        if end > PLACEHOLDER_SPACE {
            return None;
        }
        let slice = &PLACEHOLDER_AREA[self.used..end];
        self.used = end;
        Some(Bytes::from_static(slice))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn region(content: &[u8]) -> FileRegion {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(content).unwrap();
        FileRegion {
            file: Arc::new(file),
            position: 2,
            len: content.len() - 2,
        }
    }

    #[test]
    fn reads_and_slices_the_region() {
        let r = region(b"..hello world");
        assert_eq!(&r.read().unwrap()[..], b"hello world");
        assert_eq!(&r.slice(6, 5).read().unwrap()[..], b"world");
    }

    #[test]
    fn a_region_past_the_end_of_its_file_is_an_eof_error() {
        let mut r = region(b"..abc");
        r.len += 10;
        let e = r.read().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn placeholders_do_not_overlap_and_run_out() {
        let mut places = Placeholders::default();
        let small = FileRegion {
            len: 1000,
            ..region(b"..x")
        };
        let a = places.stand_in(&small).unwrap();
        let b = places.stand_in(&small).unwrap();
        assert_eq!(a.len(), 1000);
        assert!(b.as_ptr() as usize >= a.as_ptr() as usize + a.len());
        let huge = FileRegion {
            len: PLACEHOLDER_SPACE,
            ..small
        };
        assert!(places.stand_in(&huge).is_none());
    }
}
