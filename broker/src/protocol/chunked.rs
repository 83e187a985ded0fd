//! A response buffer that references record payloads instead of copying them.
//!
//! A Fetch response is mostly record batches stored in the log. Encoding it into one `BytesMut`
//! copies every fetched byte once more before the socket copies it again; profiles showed that
//! copy as a large share of the consume path's CPU. [`ChunkedBuf`] is a [`ByteBufMut`] the
//! generated encoders write into as usual, except that a slice lying inside one of the
//! [`Payload`]s it was given (the records of the response) becomes a chunk of its own: shared
//! memory for a payload in memory, a file region for a placeholder standing in for stored
//! batches (see `file_region`). The connection writes memory chunks with vectored writes and
//! file chunks with `sendfile`.
//!
//! Message encoders only append (gaps with `seek`/`range` are used by the record-batch
//! encoder, which never writes into this buffer); a seek backwards into an already frozen
//! chunk is therefore a bug, reported instead of silently corrupting the frame.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

use crate::file_region::FileRegion;

/// A record payload of a response: `bytes` is what the response message holds, and, when it
/// is a placeholder, `file` is where its real content lies.
#[derive(Debug, Clone)]
pub struct Payload {
    pub bytes: Bytes,
    pub file: Option<FileRegion>,
}

impl Payload {
    pub fn memory(bytes: Bytes) -> Payload {
        Payload { bytes, file: None }
    }
}

/// A handler's response with the payloads its encoding references (see [`Payload`]).
#[derive(Debug)]
pub struct WithPayloads<R> {
    pub response: R,
    pub payloads: Vec<Payload>,
}

impl<R> WithPayloads<R> {
    /// A response that references no payloads (errors, throttled answers).
    pub fn plain(response: R) -> WithPayloads<R> {
        WithPayloads {
            response,
            payloads: Vec::new(),
        }
    }
}

/// One piece of an encoded response.
#[derive(Debug, Clone)]
pub enum Chunk {
    Memory(Bytes),
    File(FileRegion),
}

impl Chunk {
    pub fn len(&self) -> usize {
        match self {
            Chunk::Memory(b) => b.len(),
            Chunk::File(r) => r.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Slices shorter than this are copied: a separate chunk costs more than copying a few bytes.
const MIN_SHARED: usize = 256;

/// See the module documentation.
pub struct ChunkedBuf<'a> {
    payloads: &'a [Payload],
    chunks: Vec<Chunk>,
    /// Bytes in `chunks`.
    frozen_len: usize,
    tail: BytesMut,
    /// An encoder tried to move into frozen chunks (never expected; see the module doc).
    misused: bool,
    /// Some payload is a placeholder, which must become a file chunk however short.
    has_files: bool,
}

impl<'a> ChunkedBuf<'a> {
    /// A buffer sharing slices of `payloads`; `capacity` sizes the copied parts.
    pub fn new(payloads: &'a [Payload], capacity: usize) -> ChunkedBuf<'a> {
        ChunkedBuf {
            payloads,
            chunks: Vec::with_capacity(2 * payloads.len() + 2),
            frozen_len: 0,
            tail: BytesMut::with_capacity(capacity),
            misused: false,
            has_files: payloads.iter().any(|p| p.file.is_some()),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.frozen_len + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunks in order, or `None` if an encoder tried to rewrite frozen bytes.
    pub fn finish(mut self) -> Option<Vec<Chunk>> {
        if self.misused {
            return None;
        }
        self.freeze_tail();
        Some(self.chunks)
    }

    fn freeze_tail(&mut self) {
        if !self.tail.is_empty() {
            let part = self.tail.split().freeze();
            self.frozen_len += part.len();
            self.chunks.push(Chunk::Memory(part));
        }
    }

    /// The payload `src` lies inside, if any.
    fn owner_of(&self, src: &[u8]) -> Option<&'a Payload> {
        let start = src.as_ptr() as usize;
        let end = start + src.len();
        self.payloads.iter().find(|p| {
            let p_start = p.bytes.as_ptr() as usize;
            start >= p_start && end <= p_start + p.bytes.len()
        })
    }
}

// SAFETY: every method delegates to the tail `BytesMut`, which upholds `BufMut`'s contract
// (`chunk_mut` returns its spare capacity, `advance_mut` only marks bytes it handed out).
unsafe impl BufMut for ChunkedBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.tail.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of the slice `chunk_mut` returned, which
        // is the tail's spare capacity.
        unsafe { self.tail.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.tail.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        let owner = if src.len() >= MIN_SHARED || (self.has_files && !src.is_empty()) {
            self.owner_of(src)
        } else {
            None
        };
        let chunk = match owner {
            Some(Payload {
                bytes,
                file: Some(region),
            }) => {
                let offset = src.as_ptr() as usize - bytes.as_ptr() as usize;
                Chunk::File(region.slice(offset, src.len()))
            }
            Some(Payload { bytes, file: None }) if src.len() >= MIN_SHARED => {
                Chunk::Memory(bytes.slice_ref(src))
            }
            _ => {
                self.tail.extend_from_slice(src);
                return;
            }
        };
        self.freeze_tail();
        self.frozen_len += src.len();
        self.chunks.push(chunk);
    }
}

impl ByteBufMut for ChunkedBuf<'_> {
    fn offset(&self) -> usize {
        self.len()
    }

    fn seek(&mut self, offset: usize) {
        match offset.checked_sub(self.frozen_len) {
            Some(in_tail) => self.tail.resize(in_tail, 0),
            None => self.misused = true,
        }
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        let base = self.frozen_len;
        if r.start < base || r.end - base > self.tail.len() {
            self.misused = true;
            return &mut [];
        }
        &mut self.tail[r.start - base..r.end - base]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Encodable;

    fn response(payloads: &[Payload]) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_partitions(
                payloads
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        PartitionData::default()
                            .with_partition_index(i as i32)
                            .with_high_watermark(42)
                            .with_records(Some(p.bytes.clone()))
                    })
                    .collect(),
            )])
    }

    #[test]
    fn encodes_the_same_bytes_as_one_buffer_and_shares_the_payloads() {
        let payloads: Vec<Payload> = [
            Bytes::from(vec![7u8; 4096]),
            Bytes::from(vec![1u8; 10]),
            Bytes::from(vec![9u8; 1000]),
        ]
        .into_iter()
        .map(Payload::memory)
        .collect();
        let resp = response(&payloads);
        for version in [4, 11, 12, 16, 17] {
            let mut flat = BytesMut::new();
            resp.encode(&mut flat, version).unwrap();
            let mut chunked = ChunkedBuf::new(&payloads, 64);
            resp.encode(&mut chunked, version).unwrap();
            assert_eq!(chunked.len(), flat.len());
            let chunks = chunked.finish().unwrap();
            assert_eq!(joined(&chunks), flat.to_vec(), "v{version}");
            let shares = |p: &Payload| {
                chunks
                    .iter()
                    .any(|c| matches!(c, Chunk::Memory(m) if m.as_ptr() == p.bytes.as_ptr()))
            };
            assert!(
                shares(&payloads[0]) && shares(&payloads[2]),
                "large payloads shared"
            );
            assert!(!shares(&payloads[1]), "a tiny payload is copied");
        }
    }

    fn joined(chunks: &[Chunk]) -> Vec<u8> {
        chunks
            .iter()
            .flat_map(|c| match c {
                Chunk::Memory(m) => m.to_vec(),
                Chunk::File(r) => r.read().unwrap().to_vec(),
            })
            .collect()
    }

    #[test]
    fn placeholders_become_file_chunks_with_the_files_content_whatever_their_size() {
        use crate::file_region::{FileRegion, Placeholders};
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        let stored: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&stored).unwrap();
        let file = std::sync::Arc::new(file);
        let mut places = Placeholders::default();
        let regions = [(100, 4000), (4100, 7)];
        let payloads: Vec<Payload> = regions
            .iter()
            .map(|&(position, len)| {
                let region = FileRegion {
                    file: file.clone(),
                    position,
                    len,
                };
                Payload {
                    bytes: places.stand_in(&region).unwrap(),
                    file: Some(region),
                }
            })
            .collect();
        let resp = response(&payloads);
        let real: Vec<Payload> = regions
            .iter()
            .map(|&(position, len)| {
                let p = position as usize;
                Payload::memory(Bytes::copy_from_slice(&stored[p..p + len]))
            })
            .collect();
        for version in [4, 12, 17] {
            let mut expected = BytesMut::new();
            response(&real).encode(&mut expected, version).unwrap();
            let mut chunked = ChunkedBuf::new(&payloads, 64);
            resp.encode(&mut chunked, version).unwrap();
            let chunks = chunked.finish().unwrap();
            let files = chunks
                .iter()
                .filter(|c| matches!(c, Chunk::File(_)))
                .count();
            assert_eq!(
                files, 2,
                "both placeholders, even the 7-byte one, are file chunks"
            );
            assert_eq!(joined(&chunks), expected.to_vec(), "v{version}");
        }
    }

    #[test]
    fn a_seek_into_frozen_chunks_is_reported_not_written() {
        let payloads = vec![Payload::memory(Bytes::from(vec![3u8; 1024]))];
        let mut buf = ChunkedBuf::new(&payloads, 16);
        buf.put_i32(1);
        buf.put_slice(&payloads[0].bytes);
        buf.seek(2);
        assert!(buf.finish().is_none());
    }
}
