//! A response buffer that references record payloads instead of copying them.
//!
//! A Fetch response is mostly record batches read from the log. Encoding it into one `BytesMut`
//! copies every fetched byte once more before the socket copies it again; profiles showed that
//! copy as a large share of the consume path's CPU. [`ChunkedBuf`] is a [`ByteBufMut`] the
//! generated encoders write into as usual, except that a slice lying inside one of the
//! payloads it was given (the records `Bytes` of the response) becomes a chunk sharing that
//! payload's memory. The result is a list of chunks written with one vectored write.
//!
//! Message encoders only append (gaps with `seek`/`range` are used by the record-batch
//! encoder, which never writes into this buffer); a seek backwards into an already frozen
//! chunk is therefore a bug, reported instead of silently corrupting the frame.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a separate chunk costs more than copying a few bytes.
const MIN_SHARED: usize = 256;

/// See the module documentation.
pub struct ChunkedBuf<'a> {
    payloads: &'a [Bytes],
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    frozen_len: usize,
    tail: BytesMut,
    /// An encoder tried to move into frozen chunks (never expected; see the module doc).
    misused: bool,
}

impl<'a> ChunkedBuf<'a> {
    /// A buffer sharing slices of `payloads`; `capacity` sizes the copied parts.
    pub fn new(payloads: &'a [Bytes], capacity: usize) -> ChunkedBuf<'a> {
        ChunkedBuf {
            payloads,
            chunks: Vec::with_capacity(2 * payloads.len() + 2),
            frozen_len: 0,
            tail: BytesMut::with_capacity(capacity),
            misused: false,
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
    pub fn finish(mut self) -> Option<Vec<Bytes>> {
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
            self.chunks.push(part);
        }
    }

    /// The payload `src` lies inside, if any.
    fn owner_of(&self, src: &[u8]) -> Option<&'a Bytes> {
        let start = src.as_ptr() as usize;
        let end = start + src.len();
        self.payloads.iter().find(|p| {
            let p_start = p.as_ptr() as usize;
            start >= p_start && end <= p_start + p.len()
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
        if src.len() >= MIN_SHARED {
            if let Some(owner) = self.owner_of(src) {
                self.freeze_tail();
                let shared = owner.slice_ref(src);
                self.frozen_len += shared.len();
                self.chunks.push(shared);
                return;
            }
        }
        self.tail.extend_from_slice(src);
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

    fn response(payloads: &[Bytes]) -> FetchResponse {
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_partitions(
                payloads
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        PartitionData::default()
                            .with_partition_index(i as i32)
                            .with_high_watermark(42)
                            .with_records(Some(p.clone()))
                    })
                    .collect(),
            )])
    }

    #[test]
    fn encodes_the_same_bytes_as_one_buffer_and_shares_the_payloads() {
        let payloads = vec![
            Bytes::from(vec![7u8; 4096]),
            Bytes::from(vec![1u8; 10]),
            Bytes::from(vec![9u8; 1000]),
        ];
        let resp = response(&payloads);
        for version in [4, 11, 12, 16, 17] {
            let mut flat = BytesMut::new();
            resp.encode(&mut flat, version).unwrap();
            let mut chunked = ChunkedBuf::new(&payloads, 64);
            resp.encode(&mut chunked, version).unwrap();
            assert_eq!(chunked.len(), flat.len());
            let chunks = chunked.finish().unwrap();
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            assert_eq!(joined, flat.to_vec(), "v{version}");
            let shares = |p: &Bytes| chunks.iter().any(|c| c.as_ptr() == p.as_ptr());
            assert!(
                shares(&payloads[0]) && shares(&payloads[2]),
                "large payloads shared"
            );
            assert!(!shares(&payloads[1]), "a tiny payload is copied");
        }
    }

    #[test]
    fn a_seek_into_frozen_chunks_is_reported_not_written() {
        let payloads = vec![Bytes::from(vec![3u8; 1024])];
        let mut buf = ChunkedBuf::new(&payloads, 16);
        buf.put_i32(1);
        buf.put_slice(&payloads[0]);
        buf.seek(2);
        assert!(buf.finish().is_none());
    }
}
